"""Layout ops: they move or repeat elements without arithmetic. The layout pass turns most of
them into index maps on their consumers' loads instead of copies."""
import math

import numpy as np

from ..graph import check
from ..registry import ROW_MAJOR, Attr, AxisIndex, OpDef, register
from ..types import TensorType


def layout(name, arity, infer, reference, grad, attrs, doc="", **extra):
    return register(OpDef(name, arity, infer, reference, grad, None, "layout", attrs, doc, **extra))


def read(axis, coef=1, offset=0, **kw):
    """An index map entry reading loop axis `axis` (times coef, plus offset)."""
    return AxisIndex(((axis, coef),), offset, **kw)


def _axes_ok(axes, ndim, what="axes"):
    check(all(0 <= a < ndim for a in axes), f"{what} {axes} out of range for rank {ndim}")
    check(len(set(axes)) == len(axes), f"{what} {axes} repeat an axis")


# ---- reshape / broadcast ----------------------------------------------------------------
def _reshape_infer(types, shape):
    (t,) = types
    check(all(d >= 0 for d in shape), f"target shape {shape} has a negative dimension")
    check(math.prod(shape) == t.size, f"cannot reshape {t.size} elements into shape {shape}")
    return TensorType(shape, t.dtype)


layout("reshape", 1, _reshape_infer, lambda x, shape: np.reshape(x, shape),
       lambda b, n, g: [b.reshape(g, shape=n.operands[0].shape)], {"shape": Attr("ints")},
       compose=lambda inner, outer: outer, index_map=lambda types, result, shape: ROW_MAJOR)


def broadcast_axes(source, target):
    """Axes of `target` that a numpy broadcast of shape `source` to `target` expands."""
    lead = len(target) - len(source)
    return tuple(i for i, d in enumerate(target)
                 if i < lead or (source[i - lead] == 1 and d != 1))


def sum_to_shape(b, g, shape):
    """Reduce the adjoint `g` of a broadcast back to `shape` (IR building; used by gradients)."""
    axes = broadcast_axes(shape, g.shape)
    if axes:
        g = b.summation(g, axes=axes)
    return b.reshape(g, shape=shape) if g.shape != tuple(shape) else g


def _broadcast_infer(types, shape):
    (t,) = types
    ok = len(shape) >= t.ndim and all(
        s in (1, d) for s, d in zip(t.shape[::-1], shape[::-1]))
    check(ok, f"cannot broadcast shape {t.shape} to {shape}")
    return TensorType(shape, t.dtype)


def _broadcast_map(types, result, shape):
    lead = len(shape) - types[0].ndim
    return tuple(AxisIndex() if d == 1 else read(i + lead) for i, d in enumerate(types[0].shape))


layout("broadcast_to", 1, _broadcast_infer, lambda x, shape: np.broadcast_to(x, shape),
       lambda b, n, g: [sum_to_shape(b, g, n.operands[0].shape)], {"shape": Attr("ints")},
       "numpy broadcasting: leading axes added, size-1 axes repeated",
       compose=lambda inner, outer: outer, index_map=_broadcast_map)


# ---- axis permutations ------------------------------------------------------------------
def _transpose_infer(types, axes):
    (t,) = types
    check(len(axes) == 2, f"transpose swaps two axes, got {axes}")
    _axes_ok(axes, t.ndim)
    shape = list(t.shape)
    shape[axes[0]], shape[axes[1]] = shape[axes[1]], shape[axes[0]]
    return TensorType(shape, t.dtype)


def _transpose_map(types, result, axes):
    swap = {axes[0]: axes[1], axes[1]: axes[0]}
    return tuple(read(swap.get(i, i)) for i in range(types[0].ndim))


layout("transpose", 1, _transpose_infer, lambda x, axes: np.swapaxes(x, *axes),
       lambda b, n, g: [b.transpose(g, axes=n.attrs["axes"])], {"axes": Attr("ints")},
       "needle's transpose: swap two axes", involution=True, index_map=_transpose_map)


def _permute_infer(types, axes):
    (t,) = types
    check(len(axes) == t.ndim, f"permutation {axes} must name each of the {t.ndim} axes once")
    _axes_ok(axes, t.ndim)
    return TensorType([t.shape[a] for a in axes], t.dtype)


layout("permute", 1, _permute_infer, lambda x, axes: np.transpose(x, axes),
       lambda b, n, g: [b.permute(g, axes=tuple(int(i) for i in np.argsort(n.attrs["axes"])))],
       {"axes": Attr("ints")}, "general axis permutation (numpy's transpose)",
       compose=lambda inner, outer: {"axes": tuple(inner["axes"][a] for a in outer["axes"])},
       index_map=lambda types, result, axes: tuple(read(axes.index(i)) for i in range(types[0].ndim)))


def _flip_infer(types, axes):
    _axes_ok(axes, types[0].ndim)
    return types[0]


layout("flip", 1, _flip_infer, lambda x, axes: np.flip(x, axes),
       lambda b, n, g: [b.flip(g, axes=n.attrs["axes"])], {"axes": Attr("ints")}, involution=True,
       index_map=lambda types, result, axes: tuple(
           read(i, -1, d - 1) if i in axes else read(i) for i, d in enumerate(types[0].shape)))


# ---- pad / slice ------------------------------------------------------------------------
def _pad_infer(types, widths):
    (t,) = types
    check(len(widths) == t.ndim, f"pad needs one (low, high) pair per axis ({t.ndim}), got {widths}")
    check(all(lo >= 0 and hi >= 0 for lo, hi in widths), f"pad widths {widths} must be >= 0")
    return TensorType([d + lo + hi for d, (lo, hi) in zip(t.shape, widths)], t.dtype)


layout("pad", 1, _pad_infer, lambda x, widths: np.pad(x, widths),
       lambda b, n, g: [b.slice(g, start=tuple(lo for lo, _ in n.attrs["widths"]),
                                stop=tuple(lo + d for (lo, _), d in zip(n.attrs["widths"], n.operands[0].shape)))],
       {"widths": Attr("int_pairs")}, "zero padding, (low, high) per axis",
       index_map=lambda types, result, widths: tuple(
           read(i, 1, -lo, guarded=bool(lo or hi)) for i, (lo, hi) in enumerate(widths)))


def _slice_infer(types, start, stop):
    (t,) = types
    check(len(start) == len(stop) == t.ndim, f"slice needs start and stop for each of {t.ndim} axes")
    check(all(0 <= a <= z <= d for a, z, d in zip(start, stop, t.shape)),
          f"slice [{start}:{stop}] out of bounds for shape {t.shape}")
    return TensorType([z - a for a, z in zip(start, stop)], t.dtype)


layout("slice", 1, _slice_infer, lambda x, start, stop: x[tuple(map(slice, start, stop))],
       lambda b, n, g: [b.pad(g, widths=tuple(
           (a, d - z) for a, z, d in zip(n.attrs["start"], n.attrs["stop"], n.operands[0].shape)))],
       {"start": Attr("ints"), "stop": Attr("ints")}, "the box [start, stop) of each axis",
       index_map=lambda types, result, start, stop: tuple(read(i, 1, a) for i, a in enumerate(start)))


# ---- stack / split ----------------------------------------------------------------------
def _stack_infer(types, axis):
    check(len(types) >= 1, "stack needs at least one operand")
    first = types[0]
    check(all(t == first for t in types), "stacked operands must have one type")
    check(0 <= axis <= first.ndim, f"axis {axis} out of range for stacking rank {first.ndim}")
    shape = list(first.shape)
    shape.insert(axis, len(types))
    return TensorType(shape, first.dtype)


def _stack_decompose(b, n):
    """Each operand zero-padded into its slot along the new axis, then summed."""
    count, where = len(n.operands), n.attrs["axis"]
    total = None
    for k, x in enumerate(n.operands):
        slot = b.reshape(x, shape=x.shape[:where] + (1,) + x.shape[where:])
        widths = tuple((k, count - 1 - k) if i == where else (0, 0) for i in range(slot.ndim))
        slot = b.pad(slot, widths=widths) if count > 1 else slot
        total = slot if total is None else b.add(total, slot)
    return total


register(OpDef("stack", None, _stack_infer, lambda *xs, axis: np.stack(xs, axis),
               lambda b, n, g: [b.split(g, axis=n.attrs["axis"], index=i) for i in range(len(n.operands))],
               kind="layout", attrs={"axis": Attr("int")}, doc="join along a new axis",
               decompose=_stack_decompose))


def _split_infer(types, axis, index):
    (t,) = types
    _axes_ok((axis,), t.ndim, "axis")
    check(0 <= index < t.shape[axis], f"index {index} out of range for axis of size {t.shape[axis]}")
    return TensorType(t.shape[:axis] + t.shape[axis + 1:], t.dtype)


def _split_grad(b, n, g):
    axis, index, x = n.attrs["axis"], n.attrs["index"], n.operands[0]
    g = b.reshape(g, shape=x.shape[:axis] + (1,) + x.shape[axis + 1:])
    widths = tuple((index, x.shape[axis] - 1 - index) if i == axis else (0, 0) for i in range(x.ndim))
    return [b.pad(g, widths=widths)]


def _split_map(types, result, axis, index):
    return tuple(AxisIndex((), index) if i == axis else read(i - (i > axis)) for i in range(types[0].ndim))


layout("split", 1, _split_infer, lambda x, axis, index: np.take(x, index, axis=axis), _split_grad,
       {"axis": Attr("int"), "index": Attr("int")},
       "piece `index` of needle's split along `axis` (the axis is removed)", index_map=_split_map)


# ---- dilate / undilate ------------------------------------------------------------------
def _dilate_infer(types, axes, dilation):
    (t,) = types
    _axes_ok(axes, t.ndim)
    check(dilation >= 0, f"dilation {dilation} must be >= 0")
    return TensorType([d * (dilation + 1) if i in axes else d for i, d in enumerate(t.shape)], t.dtype)


def _dilate_ref(x, axes, dilation):
    out = np.zeros([d * (dilation + 1) if i in axes else d for i, d in enumerate(x.shape)], x.dtype)
    out[tuple(slice(None, None, dilation + 1) if i in axes else slice(None) for i in range(x.ndim))] = x
    return out


def _undilate_infer(types, axes, dilation):
    (t,) = types
    _axes_ok(axes, t.ndim)
    check(dilation >= 0, f"dilation {dilation} must be >= 0")
    return TensorType([-(-d // (dilation + 1)) if i in axes else d for i, d in enumerate(t.shape)], t.dtype)


def _undilate_grad(b, n, g):
    x = n.operands[0]
    g = b.dilate(g, **n.attrs)
    if g.shape != x.shape:
        g = b.slice(g, start=(0,) * x.ndim, stop=x.shape)
    return [g]


_DILATION = {"axes": Attr("ints"), "dilation": Attr("int")}
layout("dilate", 1, _dilate_infer, _dilate_ref,
       lambda b, n, g: [b.undilate(g, **n.attrs)], _DILATION,
       "insert `dilation` zeros after each element along `axes` (needle's)",
       index_map=lambda types, result, axes, dilation: tuple(
           read(i, divisor=dilation + 1, guarded=dilation > 0) if i in axes else read(i)
           for i in range(types[0].ndim)))
layout("undilate", 1, _undilate_infer,
       lambda x, axes, dilation: x[tuple(slice(None, None, dilation + 1) if i in axes else slice(None)
                                         for i in range(x.ndim))],
       _undilate_grad, _DILATION, "every (dilation+1)-th element along `axes`",
       index_map=lambda types, result, axes, dilation: tuple(
           read(i, dilation + 1 if i in axes else 1) for i in range(types[0].ndim)))
