"""simplify: constant folding, algebraic identities, common-subexpression elimination and
dead-code elimination.

One forward sweep rebuilds the graph; each node is first folded (all operands splat constants
-> one `full`), then matched against the identities its OpDef declares (`identity`, `involution`,
`compose`, and layout/reduction nodes that provably move no element), then looked up in the CSE
table. Nothing here lists ops: every rule reads the registry.
"""
import numpy as np

from ..ir.graph import Builder, Graph
from ..ir.interpreter import evaluate_node
from ..ir.registry import get_op
from ..ir.checks import maybe_verify

FOLD_LIMIT = 1 << 20  # elements; larger constants are not evaluated at compile time


def simplify(graph: Graph) -> Graph:
    out = Graph(graph.name, graph.inputs, constants=graph.constants)
    builder = Builder(out)
    new = {v: v for v in graph.inputs}
    table = {}
    for node in graph.nodes:
        builder.loc, builder.why = node.loc, node.why
        new[node.result] = _rewrite(builder, table, node, [new[v] for v in node.operands])
    out.outputs = [new[v] for v in graph.outputs]
    out.updates = {state: new[v] for state, v in graph.updates.items()}
    return maybe_verify(dce(out), "simplify")


def dce(graph: Graph) -> Graph:
    """Drop nodes that no output or state update depends on."""
    live = set(graph.outputs) | set(graph.updates.values())
    kept = []
    for node in reversed(graph.nodes):
        if node.result in live:
            kept.append(node)
            live.update(node.operands)
    result = graph.copy()
    result.nodes = kept[::-1]
    return result


def splat_value(value):
    """The fill value if `value` is a `full` constant, else None."""
    node = value.node
    return node.attrs["value"] if node is not None and node.op == "full" else None


def _rewrite(b, table, node, operands):
    op, attrs, rewritten = node.op, dict(node.attrs), False
    opdef = get_op(op)
    folded = _fold(node, operands)
    if folded is not None:
        op, attrs, operands, rewritten = "full", folded, [], True
    else:
        same = _identity(opdef, node, operands)
        if same is not None:
            return same
        inner = operands[0].node if operands else None
        if opdef.involution and inner is not None and inner.op == op and inner.attrs == attrs:
            return inner.operands[0]
        if opdef.compose and inner is not None and inner.op == op:
            attrs, operands, rewritten = opdef.compose(inner.attrs, attrs), list(inner.operands), True
        if _moves_nothing(opdef, node, operands, attrs):
            return operands[0]
    ids = [id(v) for v in operands]
    key = (op, tuple(sorted(ids) if opdef.commutative else ids), repr(sorted(attrs.items())))
    if key not in table:
        if not rewritten and _same_values(operands, node.operands):
            b.on_node(node)  # unchanged: kept as it is (passes make new graphs, never change a node)
            table[key] = node.result
        else:
            table[key] = b.emit(op, *operands, **attrs)
    return table[key]


def _same_values(values, others) -> bool:
    """Whether two sequences hold the same Values, in order."""
    return len(values) == len(others) and all(a is b for a, b in zip(values, others))


def _fold(node, operands):
    """Attributes of the `full` equal to `node` when all its operands are splats, else None."""
    values = [splat_value(v) for v in operands]
    if not operands or None in values or node.result.type.size > FOLD_LIMIT:
        return None
    arrays = [np.full(v.shape, x, v.type.np_dtype) for v, x in zip(operands, values)]
    result = evaluate_node(node, arrays)
    first = result.flat[0] if result.size else 0
    if result.size and not np.array_equal(result, np.full_like(result, first), equal_nan=result.dtype.kind == "f"):
        return None
    return {"shape": node.result.shape, "value": float(first), "dtype": node.result.dtype}


def _identity(opdef, node, operands):
    """The operand that `node` returns unchanged because of its op's identity element."""
    if opdef.identity is None:
        return None
    if "scalar" in node.attrs:
        return operands[0] if node.attrs["scalar"] == opdef.identity else None
    candidates = [(0, 1), (1, 0)] if opdef.commutative else [(0, 1)]
    for keep, drop in candidates:
        if splat_value(operands[drop]) == opdef.identity and operands[keep].type == node.result.type:
            return operands[keep]
    return None


def _moves_nothing(opdef, node, operands, attrs):
    """A one-operand layout/reduction node with an unchanged type that maps 1..n onto itself."""
    if opdef.kind not in ("layout", "reduction") or len(operands) != 1:
        return False
    source = operands[0].type
    if source != node.result.type or source.size > FOLD_LIMIT:
        return False
    iota = np.arange(1, source.size + 1, dtype=np.float64).reshape(source.shape)
    with np.errstate(all="ignore"):
        moved = np.asarray(opdef.reference(iota, **attrs))
    return moved.shape == iota.shape and np.array_equal(moved, iota)
