"""The verifier: SSA, types and attributes of a graph; each error names the offending node."""
from ..errors import AttrError, ShapeError, UnknownOpError, VerifyError
from .graph import Graph
from .printer import format_node, value_names
from .registry import get_op


def _fail(message, node=None):
    err = VerifyError(message)
    err.node = node
    return err


def verify(graph):
    """Raise VerifyError on the first broken invariant; return the graph otherwise."""
    names = value_names(graph)
    defined = set()
    for i, v in enumerate(graph.inputs):
        if v.node is not None:
            raise _fail(f"input {i} (%{names[v]}) is the result of a node")
        if v in defined:
            raise _fail(f"input {i} (%{names[v]}) is listed twice")
        defined.add(v)
    for index, node in enumerate(graph.nodes):
        where = f"node {index} `{format_node(node, names)}`"
        for j, v in enumerate(node.operands):
            if v not in defined:
                raise _fail(f"{where}: operand {j} is used before it is defined", node)
        if node.result in defined or node.result.node is not node:
            raise _fail(f"{where}: its result is defined more than once", node)
        try:
            opdef = get_op(node.op)
            if opdef.check_attrs(node.attrs) != node.attrs:
                raise AttrError("attributes are not in normal form")
            inferred = opdef.infer_type([v.type for v in node.operands], node.attrs)
        except (UnknownOpError, AttrError, ShapeError) as e:
            raise _fail(f"{where}: {e}", node) from None
        if inferred != node.result.type:
            raise _fail(f"{where}: result type {node.result.type} but the op's rule gives {inferred}", node)
        _check_regions(node, where)
        defined.add(node.result)
    for i, v in enumerate(graph.outputs):
        if v not in defined:
            raise _fail(f"output {i} is not defined in the graph")
    for state, new in graph.updates.items():
        if state.kind != "state" or state not in defined:
            raise _fail(f"update of %{names.get(state, '?')}, which is not a state input")
        if new not in defined:
            raise _fail(f"the new value of %{names[state]} is not defined in the graph")
        if new.type != state.type:
            raise _fail(f"the new value of %{names[state]} has type {new.type}, the state {state.type}")
    for v in graph.constants:
        if v.kind != "const" or v not in defined:
            raise _fail("constant data is held for a value that is not a const input")
    return graph


def _check_regions(node, where):
    """Verify each region (graph attribute) of `node` as a graph of its own."""
    for name, value in node.attrs.items():
        if isinstance(value, Graph):
            try:
                verify(value)
            except VerifyError as e:
                raise _fail(f"{where}: its {name} region: {e}", node) from None
