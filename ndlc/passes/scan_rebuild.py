"""The scan that passes/scan_hoist.py rewrote, put back together: its body (what the loop still
computes), operands and packed result, and the values that stand for the old scan's parts."""
from ..ir.graph import Graph
from ..ir.ops.scan import layout
from ..ir.registry import get_op


def rebuild(loop):
    """(the new scan's packed value, a function from an old part's offset to its value now),
    the parts made as they are asked for; xs and consts the body no longer reads dropped, and
    the scan itself where everything it computed is computed after it (then None)."""
    old, out = loop.node, loop.hoister.outer
    kept_ys = [(k, y) for k, y in enumerate(loop.ys) if y is not None]
    outputs = [c.out for c in loop.carries] + [y for _, y in kept_ys]
    nodes = loop.live_nodes(outputs)
    read = {v for n in nodes for v in n.operands} | set(outputs)
    xs = [(o, i) for o, i in loop.xs if i in read]
    consts = [(o, i) for o, i in loop.consts if i in read]
    body = Graph("body", [c.inner for c in loop.carries] + [i for _, i in xs + consts], nodes, outputs)
    operands = [c.init for c in loop.carries] + [o for o, _ in xs + consts]
    attrs = dict(old.attrs, body=body, carries=len(loop.carries), xs=len(xs))
    packed = out("scan", operands, attrs, old.loc) if outputs else None
    places = layout(body, len(loop.carries), loop.T) if outputs else []
    place = {("carry", c.index): places[j] for j, c in enumerate(loop.carries)}
    place.update((("y", k), places[len(loop.carries) + j]) for j, (k, _) in enumerate(kept_ys))

    def part(key):
        offset, type_ = place[key]
        return out("part", (packed,), {"offset": offset, "shape": type_.shape}, old.loc)

    def stacked(source):
        where, what = source
        return what if where == "xs" else part(("y", what))
    nc = old.attrs["carries"]
    keys = [("carry", i) for i in range(nc)] + [("y", k) for k in range(len(old.attrs["body"].outputs) - nc)]
    by_offset = {offset: key for (offset, _), key in zip(get_op("scan").parts(old), keys)}

    def value(offset):
        key = by_offset[offset]
        return loop.after[key](stacked) if key in loop.after else part(key)
    return packed, value
