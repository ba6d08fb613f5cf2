"""The tests' reference for compiled loops: each scan replaced by its body's nodes, once per step,
and its parts by the values they stand for, the graph an unrolled Python loop would have traced
(the pipeline compiles a scan's body once instead: passes/steps.py); and the pipeline without
passes/scan_hoist.py, whose products over the steps sum in another order than the loop.

Step t reads piece t of each stacked x (`split` along axis 0; the operand itself where the x is a
`stack` this pass made, as a forward scan's saved values are); the ys are `stack`ed. A body node
whose operands are the same values in two scans (a gradient's second forward scan, which saves
more ys of the same body) is emitted once: the copies share the forward's nodes.
"""
from ndlc.ir.checks import maybe_verify
from ndlc.ir.graph import Builder, Graph, Node
from ndlc.ir.registry import get_op
from ndlc.jit import pipeline

def unroll_scans(graph):
    """`graph` with every scan (nested ones too) unrolled; the graph itself if it has none."""
    if not any(n.op == "scan" for n in graph.nodes):
        return graph
    unroller = _Unroller()
    values = {v: v for v in graph.inputs}
    unroller.emit(graph.nodes, values)
    outputs = [unroller.read(values[v]) for v in graph.outputs]
    updates = {s: unroller.read(values[v]) for s, v in graph.updates.items()}
    # in the order a trace of the unrolled loop cuts its graph (jit/capture.py): fusion then meets
    # the nodes as it meets a Python loop's
    result = Graph.from_outputs(outputs + list(updates.values()), graph.inputs, graph.name, graph.constants)
    result.outputs, result.updates = outputs, updates
    return maybe_verify(result, "unroll")


class _Unroller:
    """Emits nodes into `nodes`, each (op, operands, attributes) once: `made` maps a node of the
    source and its new operands to the value it became."""

    def __init__(self):
        self.nodes, self.made, self.stacked = [], {}, {}
        self.packed = {}  # a scan's result -> {offset: the value of that part}

    def emit(self, nodes, values):
        """Emit `nodes` with their operands read through `values` (old value -> new), which
        gains their results."""
        for node in nodes:
            if node.op == "scan":
                self.packed[node.result] = self._scan(node, tuple(self.read(values[v]) for v in node.operands))
                values[node.result] = node.result
            elif node.op == "part" and node.operands[0] in self.packed:
                values[node.result] = self.packed[node.operands[0]][node.attrs["offset"]]
            else:
                values[node.result] = self._node(node, tuple(self.read(values[v]) for v in node.operands))

    def read(self, value):
        """`value`, or where it is a scan's packed results, the packed vector of its parts' values
        (for a node that reads the vector itself): each part flattened, padded into place, summed."""
        parts = self.packed.get(value)
        if parts is None:
            return value
        total, size = None, value.type.size
        for offset, part in parts.items():
            flat = self._made("reshape", (part,), value.node.loc, shape=(part.type.size,))
            flat = self._made("pad", (flat,), value.node.loc, widths=((offset, size - offset - part.type.size),))
            total = flat if total is None else self._made("add", (total, flat), value.node.loc)
        return total

    def _node(self, node, operands):
        key = (node, operands)
        if key not in self.made:
            if operands == node.operands and node.op != "scan":
                made = node
            else:
                made = Node(node.op, operands, node.attrs, node.result.type, node.loc)
            self.nodes.append(made)
            self.made[key] = made.result
        return self.made[key]

    def _made(self, op, operands, loc, **attrs):
        """A new node op(operands, attrs), or the one already made with them."""
        key = (op, operands, tuple(attrs.items()))
        if key not in self.made:
            self.made[key] = Builder(on_node=self.nodes.append, loc=loc).emit(op, *operands, **attrs)
        return self.made[key]

    def _scan(self, node, operands):
        """Unroll one scan: {offset of each part: its value}."""
        body, nc, nx, length = (node.attrs[k] for k in ("body", "carries", "xs", "length"))
        steps = range(length - 1, -1, -1) if node.attrs["reverse"] else range(length)
        pieces = [self._pieces(x, length, node.loc) for x in operands[nc:nc + nx]]
        carry, consts = list(operands[:nc]), list(operands[nc + nx:])
        ys = [None] * length
        for t in steps:
            values = dict(zip(body.inputs, carry + [p[t] for p in pieces] + consts))
            self.emit(body.nodes, values)
            outs = [values[v] for v in body.outputs]
            carry, ys[t] = outs[:nc], outs[nc:]
        results = carry + [self._stack([y[k] for y in ys], node.loc) for k in range(len(body.outputs) - nc)]
        return {offset: v for (offset, _), v in zip(get_op("scan").parts(node), results)}

    def _pieces(self, x, length, loc):
        """The step slices of a stacked x: the stacked values themselves when this pass stacked it."""
        if x in self.stacked:
            return self.stacked[x]
        return [self._made("split", (x,), loc, axis=0, index=t) for t in range(length)]

    def _stack(self, values, loc):
        stacked = self._made("stack", tuple(values), loc, axis=0)
        self.stacked[stacked] = list(values)
        return stacked


def without_hoisting(monkeypatch):
    """Compile scans as they are traced, so the loops' sums keep the unrolled loop's order."""
    monkeypatch.setattr(pipeline, "hoist_scans", lambda graph, notes: graph)
    monkeypatch.setenv("NDLC_PROGRAM_CACHE", "0")  # its key does not know the pass is off
