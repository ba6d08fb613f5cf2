"""decompose: rewrites composite ops (logsumexp, logsoftmax, stack) with the simpler ops their
OpDef.decompose builds, recursively, so backends lower only scalar, view and loop-nest ops."""
from ..errors import NdlcError
from ..ir.graph import Builder, Graph, Node
from ..ir.registry import get_op
from ..ir.checks import maybe_verify


class _Decomposing(Builder):
    """A Builder that emits a composite op as its decomposition instead."""

    def emit(self, op, *operands, **attrs):
        opdef = get_op(op)
        if opdef.decompose is None:
            return super().emit(op, *operands, **attrs)
        attrs = opdef.check_attrs(attrs, where=self.loc)
        result_type = opdef.infer_type([v.type for v in operands], attrs, loc=self.loc)
        outer = self.why  # a decomposition may set why for the nodes it emits (conv: its lowering rule)
        result = opdef.decompose(self, Node(op, operands, attrs, result_type, loc=self.loc, why=self.why))
        if result is None:  # the op keeps itself in this case
            result = super().emit(op, *operands, **attrs)
        self.why = outer
        if result.type != result_type:
            raise NdlcError(f"internal error: {op}'s decomposition gives {result.type}, not {result_type}")
        return result


def decompose(graph: Graph) -> Graph:
    out = Graph(graph.name, graph.inputs, constants=graph.constants)
    builder = _Decomposing(out)
    new = {v: v for v in graph.inputs}
    for node in graph.nodes:
        operands = [new[v] for v in node.operands]
        if get_op(node.op).decompose is None and all(a is b for a, b in zip(operands, node.operands)):
            out.nodes.append(node)  # unchanged: kept as it is (passes make new graphs, never change a node)
            new[node.result] = node.result
            continue
        builder.loc, builder.why = node.loc, node.why
        new[node.result] = builder.emit(node.op, *operands, **node.attrs)
    out.outputs = [new[v] for v in graph.outputs]
    out.updates = {state: new[v] for state, v in graph.updates.items()}
    return maybe_verify(out, "decompose")
