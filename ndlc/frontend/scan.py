"""`ndl.scan`: a loop over the leading axis of sequences (JAX's `lax.scan`), traced once.

Eagerly it is the Python loop. While tracing (ndl.compile, ndl.trace) the step function runs once
on symbolic stand-ins and its graph becomes the body of one `scan` node (ir/ops/scan.py), so the
time to trace and differentiate a recurrence does not grow with the sequence.
"""
from ..errors import TraceError
from ..ir.graph import Graph, Value
from ..ir.ops.scan import layout
from ..ir.types import TensorType
from .context import active_context
from .tensor import Tensor, apply, data_of, symbolic, tensor_of, user_location


def scan(fn, init, xs, consts=(), unroll=False):
    """`carry, y = fn(carry, x, *consts)` for each step's x = (x_0[t], x_1[t], ...); returns the
    final carry and the ys stacked along a new axis 0.

    init: a Tensor or a tuple of Tensors (the carry keeps that structure); xs: a Tensor or a
    tuple of Tensors, each (length, ...); consts: Tensors `fn` reads at every step (tensors it
    closes over are found too); y: a Tensor, a tuple of Tensors or None (then ys is None).
    While tracing, the carries and ys must share one dtype (the scan node packs them);
    `unroll=True` traces the Python loop instead, one copy of `fn`'s graph per step.
    """
    carries, carry_tuple = _flat(init, "init")
    seqs, x_tuple = _flat(xs, "xs")
    consts = [_tensor(c, "consts") for c in consts]
    if not seqs:
        raise ValueError("scan: xs must hold at least one sequence (its first axis is the length)")
    length = seqs[0].shape[0] if seqs[0].ndim else 0
    for x in seqs:
        if x.ndim == 0 or x.shape[0] != length or length == 0:
            raise ValueError(f"scan: every x must have the same non-empty first axis (the steps), got "
                             f"shapes {[s.shape for s in seqs]} (at {user_location()})")
    if unroll or active_context() is None:
        return _loop(fn, carries, carry_tuple, seqs, x_tuple, consts, length)
    return _traced(fn, carries, carry_tuple, seqs, x_tuple, consts, length)


def _flat(value, what):
    """(list of Tensors, whether it was a tuple)."""
    if isinstance(value, (tuple, list)):
        return [_tensor(v, what) for v in value], True
    return [_tensor(value, what)], False


def _tensor(value, what):
    if not isinstance(value, Tensor):
        raise TypeError(f"scan: {what} must hold Tensors, not {type(value).__name__}")
    return value


def _rebuild(tensors, as_tuple):
    return tuple(tensors) if as_tuple else tensors[0]


def _step(fn, carry, x, consts, carry_tuple, x_tuple):
    """One call of fn: (new carries, ys (list, or None))."""
    result = fn(_rebuild(carry, carry_tuple), _rebuild(x, x_tuple), *consts)
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(f"scan: fn must return (carry, y), not {type(result).__name__}")
    new, y = result
    new, _ = _flat(new, "the carry fn returns")
    if len(new) != len(carry) or any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(new, carry)):
        raise TypeError("scan: fn must return a carry of its input's structure, shapes and dtypes: got "
                        f"{[(t.shape, t.dtype) for t in new]} for {[(t.shape, t.dtype) for t in carry]}")
    return new, None if y is None else _flat(y, "the y fn returns")


def _loop(fn, carries, carry_tuple, seqs, x_tuple, consts, length):
    """The Python loop (eager execution, or unroll=True)."""
    pieces = [[apply("split", x, axis=0, index=t) for t in range(length)] for x in seqs]
    ys = []
    for t in range(length):
        carries, y = _step(fn, carries, [p[t] for p in pieces], consts, carry_tuple, x_tuple)
        ys.append(y)
    stacked = None if ys[0] is None else [apply("stack", *parts, axis=0) for parts in zip(*(y[0] for y in ys))]
    return _rebuild(carries, carry_tuple), None if stacked is None else _rebuild(stacked, ys[0][1])


def _traced(fn, carries, carry_tuple, seqs, x_tuple, consts, length):
    """fn traced once on stand-ins into a scan node; its parts as the results."""
    context = active_context()
    streams, exchanges = context.streams, len(context.exchanges)
    carry_in = [symbolic(c._value.type, name=f"carry{i}", requires_grad=True) for i, c in enumerate(carries)]
    x_in = [symbolic(TensorType(x.shape[1:], x._value.dtype), name=f"x{i}", requires_grad=True)
            for i, x in enumerate(seqs)]
    const_in = [symbolic(c._value.type, name=f"const{i}", requires_grad=True) for i, c in enumerate(consts)]
    new, y = _step(fn, carry_in, x_in, const_in, carry_tuple, x_tuple)
    if context.streams != streams or len(context.exchanges) != exchanges:
        raise TraceError(f"scan: fn draws random numbers or exchanges values (at {user_location()}); "
                         "each step of a scan node would repeat them: pass unroll=True")
    ys, y_tuple = y if y is not None else ([], False)
    inputs = [t._value for t in carry_in + x_in + const_in]
    body, captured = _body(inputs, [t._value for t in new + ys])
    dtypes = sorted({v.dtype for v in body.outputs})
    if len(dtypes) > 1:
        raise TraceError(f"scan: the carries and ys have dtypes {', '.join(dtypes)} (at {user_location()}); "
                         "a traced scan needs one (cast them), or pass unroll=True")
    operands = carries + seqs + consts + [tensor_of(v) for v in captured]
    packed = apply("scan", *operands, carries=len(carries), xs=len(seqs), length=length, body=body)
    parts = [apply("part", packed, offset=offset, shape=type_.shape)
             for offset, type_ in layout(body, len(carries), length)]
    final, stacked = parts[:len(carries)], parts[len(carries):]
    return _rebuild(final, carry_tuple), None if y is None else _rebuild(stacked, y_tuple)


def _body(inputs, outputs):
    """The body graph of `outputs` over `inputs`: the nodes that depend on an input, copied, and
    each other value they read (a tensor fn closed over) made an input too; returns (graph,
    those captured outer values)."""
    depends = dict.fromkeys(inputs, True)
    nodes, stack = [], [(v, False) for v in reversed(outputs)]
    while stack:
        value, expanded = stack.pop()
        if value in depends:
            continue
        node = value.node
        if node is None or data_of(value) is not None:
            depends[value] = False
        elif not expanded:
            stack.append((value, True))
            stack.extend((v, False) for v in reversed(node.operands) if v not in depends)
        else:
            depends[value] = any(depends[v] for v in node.operands)
            if depends[value]:
                nodes.append(node)
    reads = [v for node in nodes for v in node.operands] + list(outputs)
    captured = list(dict.fromkeys(v for v in reads if not depends[v]))
    mapped = dict(zip(inputs, inputs))
    mapped.update((v, Value(v.type, name=v.name)) for v in captured)
    copies = []
    for node in nodes:
        copy = node.remade([mapped[v] for v in node.operands])
        mapped[node.result] = copy.result
        copies.append(copy)
    body = Graph("body", inputs + [mapped[v] for v in captured], copies, [mapped[v] for v in outputs])
    return body, captured
