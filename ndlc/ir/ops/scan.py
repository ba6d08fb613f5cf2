"""scan: a loop whose body is a region (a graph), and part, which reads one of its results.

`scan(carries..., xs..., consts..., body=@g, carries=c, xs=x, length=T, reverse=false)` runs the
body T times (T-1 down to 0 when `reverse`): its inputs are the carries (the loop state), step t's
slice of each stacked x (axis 0) and the loop-invariant consts; its outputs the new carries, then
the step's ys. A node has one result, so the scan's is its final carries then its ys stacked
(T, ...), flattened and packed into one 1-D vector of their (single) dtype, and `part` nodes take
them apart (other nodes may read the vector too); fusion runs the body's kernels once per step
(passes/steps.py), and the tests' reference (tests/unrolled.py) replaces both by the body's
nodes, step by step.
"""
import numpy as np

from ..graph import Builder, Graph, Node, Value, check
from ..registry import Attr, OpDef, register
from ..types import TensorType, is_float


def layout(body, carries, length):
    """(offset, type) of each result packed into a scan's flat result: final carries, then ys."""
    parts, offset = [], 0
    for k, out in enumerate(body.outputs):
        type_ = out.type if k < carries else TensorType((length,) + out.shape, out.dtype)
        parts.append((offset, type_))
        offset += type_.size
    return parts


def _parts(node):
    return layout(node.attrs["body"], node.attrs["carries"], node.attrs["length"])


def shifted_carry(part):
    """(i, (offset, type) of a y) where `part` reads, of a forward scan, the stacked values of
    carry i before each step (a body output that is the carry's input) and the scan also returns
    the carry's new value as that y: the part is then the initial value, followed by the y's
    first length-1 steps. None otherwise."""
    scan = part.operands[0].node
    if scan is None or scan.op != "scan" or scan.attrs["reverse"]:
        return None
    body, nc, places = scan.attrs["body"], scan.attrs["carries"], _parts(scan)
    index = next((j for j, (offset, _) in enumerate(places) if offset == part.attrs["offset"]), nc)
    if index < nc or body.outputs[index] not in body.inputs[:nc]:
        return None
    carry = body.inputs.index(body.outputs[index])
    y = next((j for j in range(nc, len(body.outputs)) if body.outputs[j] is body.outputs[carry]), None)
    return None if y is None else (carry, places[y])


def _infer(types, carries, xs, length, reverse, body):
    inputs, outputs = body.inputs, body.outputs
    check(length >= 1, f"length {length} must be at least 1")
    check(0 <= carries and 0 <= xs and carries + xs <= len(inputs),
          f"{carries} carries and {xs} xs do not fit the body's {len(inputs)} inputs")
    check(len(types) == len(inputs), f"the body takes {len(inputs)} inputs, the scan has {len(types)} operands")
    check(len(outputs) >= carries and outputs, f"the body returns {len(outputs)} values, fewer than its "
          f"{carries} carries or none at all")
    check(not body.updates and all(v.kind == "input" for v in inputs),
          "a body has plain inputs only (no state, no constants): the scan's operands feed them")
    for i, (t, v) in enumerate(zip(types, inputs)):
        stacked = carries <= i < carries + xs
        want = TensorType((length,) + v.shape, v.dtype) if stacked else v.type
        check(t == want, f"operand {i} is {t}, the body's input {i} is {v.type}"
              + (f", so the operand must be {want} (stacked over the {length} steps)" if stacked else ""))
    for i in range(carries):
        check(outputs[i].type == inputs[i].type,
              f"the body returns carry {i} as {outputs[i].type}, it takes it as {inputs[i].type}")
    dtypes = sorted({v.dtype for v in outputs})
    check(len(dtypes) == 1, f"a scan's carries and ys must have one dtype (its result packs them), "
          f"got {', '.join(dtypes)}")
    total = sum(t.size for _, t in layout(body, carries, length))
    return TensorType((total,), dtypes[0])


def _reference(*arrays, carries, xs, length, reverse, body):
    from ..interpreter import interpret  # the interpreter evaluates nodes through this registry
    carry, seqs, consts = list(arrays[:carries]), arrays[carries:carries + xs], arrays[carries + xs:]
    ys = [None] * length
    for t in range(length - 1, -1, -1) if reverse else range(length):
        outs = interpret(body, *carry, *(s[t] for s in seqs), *consts)
        carry, ys[t] = outs[:carries], outs[carries:]
    stacked = [np.stack([y[k] for y in ys]) for k in range(len(body.outputs) - carries)]
    return np.concatenate([np.ravel(a) for a in carry + stacked])


def _grad(b, node, adjoints, vjp):
    """The adjoints of the operands: a reverse scan over the body's vector-Jacobian product.

    The reverse body's carries are the carries' adjoints and, for each float const, its gradient
    summed over the steps so far; its xs are the ys' adjoints, the xs the gradient rules read and
    the forward values they read, which a second forward scan (the same body, more ys) saves at
    each step. Seeds are ordered as the unrolled loop's adjoints: the stacked ys' first, then the
    next step's, then the step's own, so that unrolled, both sum in the same order. Gradients of
    another dtype than the scan's are carried and returned cast to it (exactly), then cast back."""
    body, nc, nx, length = node.attrs["body"], node.attrs["carries"], node.attrs["xs"], node.attrs["length"]
    if not is_float(node.result.dtype):
        return [None] * len(node.operands)
    inputs, outputs, parts = body.inputs, body.outputs, _parts(node)
    wanted = list(range(nc)) + [i for i in range(nc, len(inputs)) if is_float(inputs[i].dtype)]
    consts = [i for i in wanted if i >= nc + nx]
    seeds = {}
    dys = [(k, Value(outputs[k].type, name=f"dy{k - nc}")) for k in range(nc, len(outputs))
           if parts[k][0] in adjoints]
    for k, dy in dys:
        seeds.setdefault(outputs[k], []).append(dy)
    dcarries = [Value(inputs[i].type, name=f"dcarry{i}") for i in range(nc)]
    for i, dc in enumerate(dcarries):
        seeds.setdefault(outputs[i], []).append(dc)
    dtype = node.result.dtype
    sums, carried, casts = [], [], []  # a const's gradient of another dtype is summed in its own,
    for i in consts:  # carried in the scan's (a scan packs one dtype; exact both ways)
        carried.append(Value(TensorType(inputs[i].shape, dtype), name=f"dconst{i - nc - nx}"))
        if inputs[i].dtype != dtype:
            casts.append(Node("cast", [carried[-1]], {"dtype": inputs[i].dtype}, inputs[i].type))
        sums.append(casts[-1].result if inputs[i].dtype != dtype else carried[-1])
    for i, total in zip(consts, sums):
        seeds.setdefault(inputs[i], []).append(total)
    joint = body.copy()
    grads = vjp(joint, seeds, inputs)
    region = _Region(body, nc, joint.nodes[len(body.nodes):], [v for vs in seeds.values() for v in vs])
    region.nodes[:0] = casts
    order = list(range(nc)) + consts + [i for i in wanted if nc <= i < nc + nx]
    outs = region.outputs([grads[i] for i in order], [inputs[i].type for i in order])
    in_region = Builder(on_node=region.nodes.append)
    outs = [out if out.dtype == dtype else in_region.cast(out, dtype=dtype) for out in outs]
    operand = dict(zip(inputs, node.operands))
    saved = region.saved()
    stored = []
    if saved:
        forward = Graph("body", inputs, body.nodes, outputs + saved)
        scan = b.emit("scan", *node.operands, body=forward, **_loop(node))
        stored = [b.part(scan, offset=o, shape=t.shape) for o, t in layout(forward, nc, length)[len(outputs):]]
    read_xs = [v for v in region.read if v in inputs[nc:nc + nx]]
    read_consts = [v for v in region.read if v in inputs[nc + nx:]]
    reverse_body = Graph("body", dcarries + carried + [dy for _, dy in dys]
                         + [region.mapped[v] for v in read_xs + saved + read_consts], region.nodes, outs)
    init = [adjoints[parts[i][0]] if parts[i][0] in adjoints else b.constant_like(node.operands[i], 0.0)
            for i in range(nc)]
    init += [b.full(shape=node.operands[i].shape, value=0.0, dtype=dtype) for i in consts]
    scan = b.emit("scan", *init, *(adjoints[parts[k][0]] for k, _ in dys), *(operand[v] for v in read_xs),
                  *stored, *(operand[v] for v in read_consts), body=reverse_body, carries=nc + len(consts),
                  xs=len(dys) + len(read_xs) + len(saved), length=length, reverse=not node.attrs["reverse"])
    result = [None] * len(inputs)
    for i, (offset, type_) in zip(order, layout(reverse_body, nc + len(consts), length)):
        result[i] = b.part(scan, offset=offset, shape=type_.shape)
        result[i] = result[i] if inputs[i].dtype == dtype else b.cast(result[i], dtype=inputs[i].dtype)
    return result


def _loop(node):
    return {k: node.attrs[k] for k in ("carries", "xs", "length", "reverse")}


class _Region:
    """The gradient nodes of a body made a region of their own: each forward value they read
    becomes an input (`mapped`, `read`); one of another dtype than the body's results is
    recomputed in the region from the values its node reads instead (a scan packs one dtype)."""

    def __init__(self, body, carries, nodes, seeds):
        self.computed = {n.result for n in body.nodes}
        self.carries = set(body.inputs[:carries])
        self.dtype = body.outputs[0].dtype
        self.mapped = {v: v for v in seeds}
        self.read = []
        self.nodes = []
        for n in nodes:
            self._clone(n)

    def value(self, v):
        if v not in self.mapped:
            if v in self.computed and v.dtype != self.dtype:
                self._clone(v.node)
            else:
                self.read.append(v)
                self.mapped[v] = Value(v.type, name=v.name)
        return self.mapped[v]

    def _clone(self, n):
        copy = n.remade([self.value(v) for v in n.operands])
        self.nodes.append(copy)
        self.mapped[n.result] = copy.result

    def outputs(self, grads, types):
        """The region's value of each gradient, zeros of its type where there is none."""
        b = Builder(on_node=self.nodes.append)
        return [self.value(g) if g is not None else b.emit("full", shape=t.shape, value=0.0, dtype=t.dtype)
                for g, t in zip(grads, types)]

    def saved(self):
        """The values read that the forward scan saves at each step: the body's and its carries."""
        return [v for v in self.read if v in self.computed or v in self.carries]


register(OpDef("scan", None, _infer, _reference, _grad, kind="control", parts=_parts,
               attrs={"carries": Attr("int"), "xs": Attr("int"), "length": Attr("int"),
                      "reverse": Attr("bool", False), "body": Attr("graph")},
               doc="a loop over a body region: carries, per-step slices of xs, consts -> packed results"))


def _part_infer(types, offset, shape):
    (t,) = types
    size = TensorType(shape, t.dtype).size
    check(t.ndim == 1, f"part reads a packed 1-D result, not {t}")
    check(0 <= offset and offset + size <= t.shape[0],
          f"elements [{offset}, {offset + size}) lie outside the {t.shape[0]} packed ones")
    return TensorType(shape, t.dtype)


def _part_grad(b, node, g):
    """The adjoint in its place in the packed vector (autodiff hands a scan's parts to its rule)."""
    (x,), offset = node.operands, node.attrs["offset"]
    flat = b.reshape(g, shape=(g.type.size,))
    return [b.pad(flat, widths=((offset, x.shape[0] - offset - g.type.size),))]


def _part_decompose(b, node):
    (x,), offset, shape = node.operands, node.attrs["offset"], node.attrs["shape"]
    size = node.result.type.size
    return b.reshape(b.slice(x, start=(offset,), stop=(offset + size,)), shape=shape)


register(OpDef("part", 1, _part_infer,
               lambda x, offset, shape: x[offset:offset + int(np.prod(shape, dtype=np.int64))].reshape(shape),
               _part_grad, kind="layout", attrs={"offset": Attr("int"), "shape": Attr("ints")},
               doc="one result of a node with several (scan): `shape` elements from `offset`",
               decompose=_part_decompose))
