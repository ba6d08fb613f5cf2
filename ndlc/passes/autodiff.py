"""Reverse-mode autodiff: extends a graph with adjoint nodes.

Nodes are visited in reverse topological order from the output; each node's adjoint is the sum
of the partial adjoints its users sent it (v̄_i = Σ_j v̄_{i→j}), and the op's gradient rule
appends the partial adjoints of its operands. Rules emit ordinary IR, so the result can be
differentiated again.
"""
import time

from ..errors import NdlcError
from ..ir.graph import Builder
from ..ir.registry import get_op
from ..ir.types import is_float
from ..ir.checks import maybe_verify

_seconds = 0.0  # time spent in append_gradients by this process (the compile log's autodiff stage)


def seconds_spent() -> float:
    """How long append_gradients has run in this process, in seconds (capture reports the
    difference over a trace as its autodiff time)."""
    return _seconds


def _relevant_nodes(graph, outputs, wrt):
    """Nodes on some path from a `wrt` value to one of `outputs`, in topological order."""
    depends = set(wrt)
    for node in graph.nodes:
        if any(v in depends for v in node.operands):
            depends.add(node.result)
    needed, relevant = set(outputs), []
    for node in reversed(graph.nodes):
        if node.result in needed and node.result in depends:
            relevant.append(node)
            needed.update(node.operands)
    return relevant[::-1]


def append_gradients(graph, output, wrt, out_grad=None):
    """Append to `graph` the nodes computing d(output)/d(w) for each w in `wrt`.

    `out_grad` is the adjoint of `output` (ones when None). Returns one Value per `wrt` entry,
    or None for one that `output` does not depend on.
    """
    global _seconds
    start = time.perf_counter()
    try:
        return _append_gradients(graph, output, wrt, out_grad)
    finally:
        _seconds += time.perf_counter() - start


def _append_gradients(graph, output, wrt, out_grad):
    if not is_float(output.dtype):
        raise NdlcError(f"cannot differentiate a {output.dtype} output; only float outputs have gradients")
    if out_grad is None:
        out_grad = Builder(graph).constant_like(output, 1.0)
    elif out_grad.type != output.type:
        raise NdlcError(f"out_grad has type {out_grad.type}, the output {output.type}")
    return vjp(graph, {output: [out_grad]}, wrt)


def vjp(graph, seeds, wrt):
    """Append to `graph` the adjoints of the `wrt` values given `seeds`, {value: [adjoints]}
    (summed in that order, before the partials of the value's users). A node with several
    results (`OpDef.parts`: scan) gets the adjoints its `part` nodes collected, by offset."""
    b = Builder(graph)
    partials = {v: list(adjoints) for v, adjoints in seeds.items()}
    packed, adjoints = {}, {}  # packed: a multi-result node's value -> {offset: [adjoints]}
    for node in reversed(_relevant_nodes(graph, list(seeds), wrt)):
        b.loc, b.why = node.loc, None  # a gradient rule may say why it lowered as it did (conv)
        opdef = get_op(node.op)
        rule, parts_of = opdef.grad, opdef.parts
        if parts_of is not None:
            parts = packed.pop(node.result, {})
            whole = partials.pop(node.result, None)  # from nodes reading the packed vector itself
            if whole is not None:
                _unpack(b, _sum(b, whole), parts_of(node), parts)
            if not parts:
                continue
            parts = {offset: _sum(b, ps) for offset, ps in parts.items()}
            partial_list = rule(b, node, parts, vjp)
        else:
            parts = partials.pop(node.result, None)
            if parts is None:
                continue
            adjoint = adjoints[node.result] = _sum(b, parts)
            if node.op == "part" and _packs(node.operands[0]):
                packed.setdefault(node.operands[0], {}).setdefault(node.attrs["offset"], []).append(adjoint)
                continue
            if rule is None:
                continue
            partial_list = rule(b, node, adjoint)
        for operand, partial in zip(node.operands, partial_list):
            if partial is not None and is_float(operand.dtype):
                partials.setdefault(operand, []).append(partial)
    b.loc = b.why = None
    for w in wrt:
        if w not in adjoints and w in partials:
            adjoints[w] = _sum(b, partials.pop(w))
    return [adjoints.get(w) for w in wrt]


def _packs(value):
    """Whether `value` is the packed results of a node with several (scan)."""
    return value.node is not None and get_op(value.node.op).parts is not None


def _unpack(b, adjoint, layout, parts):
    """Add the pieces of a packed vector's `adjoint` to each part's adjoints ({offset: [...]})."""
    for offset, type_ in layout:
        piece = b.slice(adjoint, start=(offset,), stop=(offset + type_.size,))
        parts.setdefault(offset, []).append(b.reshape(piece, shape=type_.shape))


def _sum(b, parts):
    total = parts[0]
    for p in parts[1:]:
        total = b.add(total, p)
    return total


def autodiff(graph, wrt=None, output_index=0):
    """The graph with d(outputs[output_index])/d(w) appended to its outputs for each w in `wrt`
    (default: every float input). A w the output does not depend on gets zeros."""
    wrt = [v for v in graph.inputs if is_float(v.dtype)] if wrt is None else list(wrt)
    result = graph.copy()
    grads = append_gradients(result, graph.outputs[output_index], wrt)
    b = Builder(result)
    result.outputs += [g if g is not None else b.constant_like(w, 0.0) for w, g in zip(wrt, grads)]
    return maybe_verify(result, "autodiff")
