"""Reductions over a set of axes (removed from the result, as in needle) and the softmax family."""
import numpy as np

from ..graph import check
from ..registry import Attr, AxisIndex, LoopNest, OpDef, register
from ..types import TensorType, is_float


def reduced_type(t: TensorType, axes) -> TensorType:
    check(all(0 <= a < t.ndim for a in axes), f"axes {axes} out of range for rank {t.ndim}")
    check(len(set(axes)) == len(axes), f"axes {axes} repeat an axis")
    return TensorType([d for i, d in enumerate(t.shape) if i not in axes], t.dtype)


def expand_back(b, v, shape, axes):
    """Broadcast a value reduced over `axes` back to `shape` (IR building; used by gradients)."""
    keep = tuple(1 if i in axes else d for i, d in enumerate(shape))
    if v.shape != keep:
        v = b.reshape(v, shape=keep)
    return b.broadcast_to(v, shape=tuple(shape)) if keep != tuple(shape) else v


def reduce_loops(combine):
    """Loops (kept axes | reduced axes) over the operand, combining with `combine`."""
    def loops(types, result, axes):
        (t,) = types
        kept = [a for a in range(t.ndim) if a not in axes]
        loop = {a: (kept.index(a) if a in kept else len(kept) + axes.index(a)) for a in range(t.ndim)}
        return LoopNest(tuple(t.shape[a] for a in axes),
                        (tuple(AxisIndex(((loop[a], 1),)) for a in range(t.ndim)),), combine)
    return loops


def reduction(name, reference, grad, float_only=False, doc="", **extra):
    def infer(types, axes):
        if float_only:
            check(is_float(types[0].dtype), f"needs a floating-point operand, got {types[0].dtype}")
        return reduced_type(types[0], axes)
    return register(OpDef(name, 1, infer, reference, grad, None, "reduction",
                          {"axes": Attr("ints")}, doc, float_only, **extra))


def _sum_ref(x, axes):
    return np.sum(x, axis=axes, dtype=x.dtype)


def _max_ref(x, axes):
    return np.max(x, axis=axes) if x.size or not axes else np.full(reduced_type(TensorType.of(x), axes).shape, -np.inf, x.dtype)


def _max_grad(b, n, g):
    x, axes = n.operands[0], n.attrs["axes"]
    hit = b.equal(x, expand_back(b, n.result, x.shape, axes))
    g = expand_back(b, g, x.shape, axes)
    return [b.where(hit, g, b.constant_like(g, 0.0))]


def _logsumexp_ref(x, axes):
    """-inf over an empty axis (the log of an empty sum), as the compiled loops and PyTorch give."""
    m = np.expand_dims(_max_ref(x, axes), axes)
    m = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return np.squeeze(out, axis=axes).astype(x.dtype)


def _shifted_exp(b, x, axes):
    """(m, exp(x - m)) with m = max(x) over axes (0 where not finite, as the reference): the
    stable pieces logsumexp's decomposition and gradient share, so that once decomposed the
    forward's exponentials are the backward's (CSE) and are computed once."""
    m = b.max(x, axes=axes)
    zeros = b.constant_like(m, 0.0)
    m = b.where(b.equal(b.add(m, b.negate(m)), zeros), m, zeros)
    return m, b.exp(b.add(x, b.negate(expand_back(b, m, x.shape, axes))))


def _logsumexp_grad(b, n, g):
    """g * softmax(x), the softmax as exp(x - max) / sum(exp(x - max)) (needle's form): exact for
    tied maxima of huge values, where exp(x - logsumexp) rounds to a doubled gradient."""
    x, axes = n.operands[0], n.attrs["axes"]
    _, shifted = _shifted_exp(b, x, axes)
    softmax = b.divide(shifted, expand_back(b, b.summation(shifted, axes=axes), x.shape, axes))
    return [b.multiply(expand_back(b, g, x.shape, axes), softmax)]


def _logsumexp_decompose(b, n):
    """log(sum(exp(x - m))) + m, with m = max(x) (0 where not finite, as the reference)."""
    x, axes = n.operands[0], n.attrs["axes"]
    m, shifted = _shifted_exp(b, x, axes)
    return b.add(b.log(b.summation(shifted, axes=axes)), m)


reduction("summation", _sum_ref,
          lambda b, n, g: [expand_back(b, g, n.operands[0].shape, n.attrs["axes"])],
          loop_nest=reduce_loops("add"))
reduction("max", _max_ref, _max_grad,
          doc="maximum over axes; the gradient goes to every element equal to the maximum",
          loop_nest=reduce_loops("max"))
reduction("logsumexp", _logsumexp_ref, _logsumexp_grad, float_only=True,
          doc="log(sum(exp(x))) over axes, computed stably by subtracting the maximum",
          decompose=_logsumexp_decompose)


def _logsoftmax_infer(types, axis):
    (t,) = types
    check(is_float(t.dtype), f"needs a floating-point operand, got {t.dtype}")
    check(0 <= axis < t.ndim, f"axis {axis} out of range for rank {t.ndim}")
    return t


def _logsoftmax_grad(b, n, g):
    axis = (n.attrs["axis"],)
    total = expand_back(b, b.summation(g, axes=axis), g.shape, axis)
    return [b.add(g, b.negate(b.multiply(b.exp(n.result), total)))]


register(OpDef("logsoftmax", 1, _logsoftmax_infer,
               lambda x, axis: (x - np.expand_dims(_logsumexp_ref(x, (axis,)), axis)).astype(x.dtype),
               _logsoftmax_grad, None, "reduction", {"axis": Attr("int")},
               "x - logsumexp(x) along one axis", float_only=True,
               decompose=lambda b, n: b.add(n.operands[0], b.negate(expand_back(
                   b, b.logsumexp(n.operands[0], axes=(n.attrs["axis"],)), n.operands[0].shape,
                   (n.attrs["axis"],))))))
