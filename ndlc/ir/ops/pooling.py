"""2-D pooling (NCHW) over kernel x kernel windows: a loop nest over each window (an average
pooling compiled as the sum of its window planes); gradients through the window ops (`windows`,
`unwindows`: ir/ops/windows.py)."""
import functools

from ..graph import check
from ..registry import LoopNest, OpDef, register
from ..types import TensorType, is_float
from .windows import (WINDOW_ATTRS, col2im_phases, lead_axes, phased, window_axis, window_plane, windows_infer,
                      windows_ref)


def _pool_infer(types, kernel, stride):
    check(types[0].ndim == 4, f"needs an NCHW input, got rank {types[0].ndim}")
    t = windows_infer(types, kernel, stride)
    return TensorType(t.shape[:-2], t.dtype)


def _avg_pool_infer(types, kernel, stride):
    check(is_float(types[0].dtype), f"needs a floating-point input, got {types[0].dtype}")
    return _pool_infer(types, kernel, stride)


def _window_shape(v):
    return v.shape + (1, 1)


def _avg_pool_grad(b, n, g):
    k = n.attrs["kernel"]
    spread = b.broadcast_to(b.reshape(g, shape=_window_shape(g)), shape=g.shape + (k, k))
    return [b.unwindows(b.mul_scalar(spread, scalar=1.0 / (k * k)),
                        size=n.operands[0].shape[-2:], **n.attrs)]


def _max_pool_grad(b, n, g):
    """Each window's gradient to its maxima (every tied one). Overlapping windows (1 < stride <
    kernel, over rows wide enough) sum their shares by col2im's phases (ir/ops/windows.py), each share compared there
    from the input and the pooled maximum placed into the phase, so that no kernel stores the K·K
    shares of every window (k3 s2 32x32x33x33 fwd+bwd 1.7 -> 1.0 ms on one thread)."""
    k, s, x = n.attrs["kernel"], n.attrs["stride"], n.operands[0]
    windows = b.windows(x, **n.attrs)
    if phased(k, s, x.shape[-1]):
        def share(i, j, place):
            spread = place(g)
            picked = b.equal(place(window_plane(b, windows, i, j)), place(n.result))
            return b.where(picked, spread, b.constant_like(spread, 0.0))
        return [col2im_phases(b, share, g.shape, k, s, x.shape[-2:])]
    best = b.broadcast_to(b.reshape(n.result, shape=_window_shape(g)), shape=windows.shape)
    spread = b.broadcast_to(b.reshape(g, shape=_window_shape(g)), shape=windows.shape)
    picked = b.where(b.equal(windows, best), spread, b.constant_like(spread, 0.0))
    return [b.unwindows(picked, size=x.shape[-2:], **n.attrs)]


# window elements up to which an average pooling is a sum of its K·K window planes (loads an output,
# each a strided view of the input) rather than a reduction over each window
POOL_TERMS = 16


def _avg_pool_decompose(b, n):
    """Average pooling as the sum of the K·K planes windows(x)[..., i, j] (views: loads at a stride
    along the output row, which vectorise) over K·K, an elementwise definition that fusion composes
    into its consumers or stores in the layout they read, where the window loop nest ran one output
    at a time (64x6x28x28, 2x2: 0.27 -> 0.10 ms, one thread). Windows of more than POOL_TERMS
    elements keep the nest. Max pooling keeps it: its gradient compares each window element with
    the pooled maximum, which as a definition is recomputed per element (fwd+bwd 0.5 -> 1.7 ms)."""
    k = n.attrs["kernel"]
    if k * k > POOL_TERMS:
        return None
    windows = b.windows(n.operands[0], **n.attrs)
    lead = windows.shape[:4]
    planes = [b.reshape(b.slice(windows, start=(0, 0, 0, 0, i, j), stop=lead + (i + 1, j + 1)), shape=lead)
              for i in range(k) for j in range(k)]
    return b.divide_scalar(functools.reduce(b.add, planes), scalar=float(k * k))


def _pool_loops(combine, epilogue=None):
    """Loops (n, c, ho, wo | i, j) combining x[n, c, ho*stride + i, wo*stride + j]."""
    def loops(types, result, kernel, stride):
        x = lead_axes(2) + (window_axis(2, 4, stride), window_axis(3, 5, stride))
        return LoopNest((kernel, kernel), (x,), combine,
                        epilogue=epilogue and (lambda acc: epilogue(acc, kernel)))
    return loops


register(OpDef("avg_pool2d", 1, _avg_pool_infer,
               lambda x, kernel, stride: windows_ref(x, kernel, stride).mean(axis=(-2, -1), dtype=x.dtype),
               _avg_pool_grad, None, "window", WINDOW_ATTRS, "mean over kernel x kernel windows (NCHW)",
               float_only=True, loop_nest=_pool_loops("add", lambda acc, k: acc / float(k * k)),
               decompose=_avg_pool_decompose))
register(OpDef("max_pool2d", 1, _pool_infer,
               lambda x, kernel, stride: windows_ref(x, kernel, stride).max(axis=(-2, -1)),
               _max_pool_grad, None, "window", WINDOW_ATTRS,
               "max over kernel x kernel windows (NCHW); every tied maximum gets the gradient",
               loop_nest=_pool_loops("max")))
