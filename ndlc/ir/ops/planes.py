"""Windows of flattened image planes, a stride-1 convolution over "wide" rows: an image (H, W)
flattened to one axis, the window at pixel q of kernel element (i, j) is element q + i·W + j.
Output pixels then run along one axis of H·W-ish length (the columns past Wo of each row are
garbage a consumer crops), so the im2col is a contiguous copy per (channel, i, j), col2im a sum of
K·K shifted rows, each guarded by one interval (no guard per element), and a convolution of few
input channels one reduction vectorised along the row (plane_conv; its weight gradient
plane_correlate)."""
import numpy as np

from ..graph import check
from ..registry import Attr, AxisIndex, LoopNest, OpDef, get_op, register
from ..types import TensorType, is_float

_ATTRS = {"kernel": Attr("int"), "row": Attr("int")}


def _check_reach(kernel, row, length, size, what):
    check(kernel >= 1 and row >= 1 and length >= 1, f"kernel {kernel}, row {row} and {what} {length} must be >= 1")
    reach = (kernel - 1) * row + kernel - 1 + length
    check(reach <= size, f"kernel {kernel} over rows of {row} with {what} {length} reaches element {reach - 1}, "
          f"past a plane of {size}")


def _windows_infer(types, kernel, row, length):
    (t,) = types
    check(t.ndim >= 1, "needs rank >= 1 (flattened planes along the last axis)")
    _check_reach(kernel, row, length, t.shape[-1], "length")
    return TensorType(t.shape[:-1] + (kernel, kernel, length), t.dtype)


def _windows_ref(x, kernel, row, length):
    out = np.empty(x.shape[:-1] + (kernel, kernel, length), x.dtype)
    for i in range(kernel):
        for j in range(kernel):
            out[..., i, j, :] = x[..., i * row + j:i * row + j + length]
    return out


def _windows_map(types, result, kernel, row, length):
    """(..., i, j, q) reads x[..., i·row + j + q]."""
    lead = types[0].ndim - 1
    return tuple(AxisIndex(((a, 1),)) for a in range(lead)) + (AxisIndex(((lead, row), (lead + 1, 1), (lead + 2, 1))),)


def _unwindows_infer(types, kernel, row, size):
    (t,) = types
    check(t.ndim >= 3 and t.shape[-3:-1] == (kernel, kernel),
          f"needs (..., {kernel}, {kernel}, length) windows, got shape {t.shape}")
    _check_reach(kernel, row, t.shape[-1], size, "length")
    return TensorType(t.shape[:-3] + (size,), t.dtype)


def _unwindows_ref(g, kernel, row, size):
    out = np.zeros(g.shape[:-3] + (size,), g.dtype)
    length = g.shape[-1]
    for i in range(kernel):
        for j in range(kernel):
            out[..., i * row + j:i * row + j + length] += g[..., i, j, :]
    return out


def _unwindows_loops(types, result, kernel, row, size):
    """Loops (..., p | i, j) sum g[..., i, j, p - i·row - j] where that lies in the row: along p
    each (i, j) is one interval, which the 'rows' schedule splits off (no check per element)."""
    lead = result.ndim - 1
    p, i, j = lead, lead + 1, lead + 2
    g = tuple(AxisIndex(((a, 1),)) for a in range(lead)) + (
        AxisIndex(((i, 1),)), AxisIndex(((j, 1),)), AxisIndex(((p, 1), (i, -row), (j, -1)), 0, 1, True))
    return LoopNest((kernel, kernel), (g,), "add")


register(OpDef("plane_windows", 1, _windows_infer, _windows_ref,
               lambda b, n, g: [b.plane_unwindows(g, kernel=n.attrs["kernel"], row=n.attrs["row"],
                                                  size=n.operands[0].shape[-1])],
               None, "window", {**_ATTRS, "length": Attr("int")},
               "kernel x kernel windows of flattened planes (rows of `row`): (..., k, k, length), "
               "[..., i, j, q] = x[..., i*row + j + q]", index_map=_windows_map))
register(OpDef("plane_unwindows", 1, _unwindows_infer, _unwindows_ref,
               lambda b, n, g: [b.plane_windows(g, kernel=n.attrs["kernel"], row=n.attrs["row"],
                                                length=n.operands[0].shape[-1])],
               None, "window", {**_ATTRS, "size": Attr("int")},
               "the adjoint of plane_windows: sums each window element back into a (..., size) plane",
               loop_nest=_unwindows_loops))


# ---- plane_conv -------------------------------------------------------------------------
def _conv_infer(types, kernel, row, length):
    x, w = types
    check(x.ndim == 3 and w.ndim == 4, "needs planes (N, Cin, size) and weight (K, K, Cin, Cout)")
    check(x.dtype == w.dtype and is_float(x.dtype), f"needs one float dtype, got {x.dtype} and {w.dtype}")
    check(w.shape[:3] == (kernel, kernel, x.shape[1]),
          f"weight {w.shape} is not ({kernel}, {kernel}, {x.shape[1]}, Cout): kernel {kernel}, {x.shape[1]} channels")
    _check_reach(kernel, row, length, x.shape[2], "length")
    return TensorType((x.shape[0], w.shape[3], length), x.dtype)


def _conv_ref(x, w, kernel, row, length):
    out = np.zeros((x.shape[0], w.shape[3], length), x.dtype)
    for i in range(kernel):
        for j in range(kernel):
            out += np.einsum("ncm,cd->ndm", x[..., i * row + j:i * row + j + length], w[i, j]).astype(x.dtype)
    return out


def _conv_loops(types, result, kernel, row, length):
    """Loops (n, co, m | i, j, ci): x[n, ci, i·row + j + m] · w[i, j, ci, co]. Along m the loads are
    contiguous and the weight's fixed: the 'rows' schedule vectorises the row."""
    x = (AxisIndex(((0, 1),)), AxisIndex(((5, 1),)), AxisIndex(((3, row), (4, 1), (2, 1))))
    w = tuple(AxisIndex(((a, 1),)) for a in (3, 4, 5, 1))
    return LoopNest((kernel, kernel, types[0].shape[1]), (x, w), "add", lambda a, b: a * b)


def _conv_grad(b, n, g):
    """planes: the weight (Cin·K·K, Cout) @ the adjoint (Cout, length) per image, summed back
    (plane_unwindows); weight: the adjoint correlated with the planes (plane_correlate), summed."""
    x, w = n.operands
    k, row = n.attrs["kernel"], n.attrs["row"]
    batch, cin, size = x.shape
    cout, length = g.shape[1:]
    weight = b.reshape(b.permute(w, axes=(2, 0, 1, 3)), shape=(1, cin * k * k, cout))
    columns = b.matmul(b.broadcast_to(weight, shape=(batch, cin * k * k, cout)), g)
    dx = b.plane_unwindows(b.reshape(columns, shape=(batch, cin, k, k, length)), kernel=k, row=row, size=size)
    total = b.summation(b.plane_correlate(g, x, kernel=k, row=row), axes=(0,))  # (Cout, Cin, K, K)
    return [dx, b.permute(total, axes=(2, 3, 1, 0))]


register(OpDef("plane_conv", 2, _conv_infer, _conv_ref, _conv_grad, None, "conv", {**_ATTRS, "length": Attr("int")},
               "stride-1 convolution over flattened planes (rows of `row`): (N, Cin, size) x (K, K, Cin, Cout) "
               "-> (N, Cout, length), [n, co, m] = sum of x[n, ci, i*row + j + m] * w[i, j, ci, co]",
               float_only=True, loop_nest=_conv_loops))


# ---- plane_correlate ----------------------------------------------------------------------
def _correlate_infer(types, kernel, row):
    g, x = types
    check(g.ndim == 3 and x.ndim == 3 and g.shape[0] == x.shape[0],
          "needs an adjoint (N, Cout, length) and planes (N, Cin, size) of as many images")
    check(g.dtype == x.dtype and is_float(g.dtype), f"needs one float dtype, got {g.dtype} and {x.dtype}")
    _check_reach(kernel, row, g.shape[2], x.shape[2], "length")
    return TensorType((g.shape[0], g.shape[1], x.shape[1], kernel, kernel), g.dtype)


def _correlate_ref(g, x, kernel, row):
    out = np.empty((g.shape[0], g.shape[1], x.shape[1], kernel, kernel), g.dtype)
    length = g.shape[2]
    for i in range(kernel):
        for j in range(kernel):
            out[..., i, j] = np.einsum("ndm,ncm->ndc", g, x[..., i * row + j:i * row + j + length])
    return out


def _correlate_loops(types, result, kernel, row):
    """Loops (n, co, ci, i, j | m): g[n, co, m] · x[n, ci, i·row + j + m], both contiguous along m."""
    g = (AxisIndex(((0, 1),)), AxisIndex(((1, 1),)), AxisIndex(((5, 1),)))
    x = (AxisIndex(((0, 1),)), AxisIndex(((2, 1),)), AxisIndex(((3, row), (4, 1), (5, 1))))
    return LoopNest((types[0].shape[2],), (g, x), "add", lambda a, b: a * b)


def _correlate_grad(b, n, adjoint):
    """Per image, with the windows W (Cin·K·K, length) of x: g's is adjointᵀ-weighted windows
    (Cout, Cin·K·K) @ W; x's the windows' adjoint (Cin·K·K, Cout) @ g summed back (plane_unwindows)."""
    g, x = n.operands
    k, row = n.attrs["kernel"], n.attrs["row"]
    batch, cout, length = g.shape
    cin = x.shape[1]
    weights = b.reshape(adjoint, shape=(batch, cout, cin * k * k))
    windows = b.reshape(b.plane_windows(x, kernel=k, row=row, length=length), shape=(batch, cin * k * k, length))
    columns = b.reshape(b.matmul(b.permute(weights, axes=(0, 2, 1)), g), shape=(batch, cin, k, k, length))
    return [b.matmul(weights, windows), b.plane_unwindows(columns, kernel=k, row=row, size=x.shape[2])]


register(OpDef("plane_correlate", 2, _correlate_infer, _correlate_ref, _correlate_grad, None, "conv", _ATTRS,
               "per image, the adjoint (N, Cout, length) correlated with flattened planes (N, Cin, size) over "
               "kernel x kernel windows of rows of `row`: (N, Cout, Cin, k, k), a direct conv's weight gradient",
               float_only=True, loop_nest=_correlate_loops))


# ---- row_conv -----------------------------------------------------------------------------
def _row_conv_infer(types, width):
    x, w = types
    check(x.ndim == 4 and w.ndim == 4, "needs planes (N, Cin, H, W) and weight (KH, KW, Cin, Cout)")
    check(x.dtype == w.dtype and is_float(x.dtype), f"needs one float dtype, got {x.dtype} and {w.dtype}")
    check(x.shape[1] == w.shape[2], f"input channels {x.shape[1]} != weight's Cin {w.shape[2]}")
    check(x.shape[2] >= w.shape[0] and x.shape[3] >= w.shape[1],
          f"planes {x.shape[2:]} are smaller than the kernel {w.shape[:2]}")
    check(1 <= width <= x.shape[3] - w.shape[1] + 1,
          f"width {width} is not within the {x.shape[3] - w.shape[1] + 1} outputs a row of {x.shape[3]} has")
    return TensorType((x.shape[0], w.shape[3], x.shape[2] - w.shape[0] + 1, width), x.dtype)


def _row_conv_ref(x, w, width):
    kh, kw = w.shape[:2]
    ho = x.shape[2] - kh + 1
    out = np.zeros((x.shape[0], w.shape[3], ho, width), x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nchw,cd->ndhw", x[:, :, i:i + ho, j:j + width], w[i, j]).astype(x.dtype)
    return out


def _row_conv_loops(types, result, width):
    """Loops (n, co, ho, wo | kh, kw, ci): x[n, ci, ho + kh, wo + kw] · w[kh, kw, ci, co]. The input
    is contiguous along wo and fixed along co, the weight fixed along wo: the 'rows' schedule moves
    co next to wo for its register tiles of channels x pixels, vectors along the row."""
    x = (AxisIndex(((0, 1),)), AxisIndex(((6, 1),)), AxisIndex(((2, 1), (4, 1))), AxisIndex(((3, 1), (5, 1))))
    w = tuple(AxisIndex(((a, 1),)) for a in (4, 5, 6, 1))
    return LoopNest(types[1].shape[:3], (x, w), "add", lambda a, b: a * b)


def _row_conv_grad(b, n, g):
    """The NHWC conv's gradient rule (ir/ops/conv.py) on the planes' columns the outputs read and
    the adjoint permuted; the columns past them get none."""
    x, w = n.operands
    used = n.attrs["width"] + w.shape[1] - 1
    columns = b.slice(x, start=(0, 0, 0, 0), stop=x.shape[:3] + (used,)) if used < x.shape[3] else x
    same = b.conv(b.permute(columns, axes=(0, 2, 3, 1)), w, stride=1, padding=0).node  # unused once differentiated
    dx, dw = get_op("conv").grad(b, same, b.permute(g, axes=(0, 2, 3, 1)))
    dx = b.permute(dx, axes=(0, 3, 1, 2))
    if used < x.shape[3]:
        dx = b.pad(dx, widths=((0, 0), (0, 0), (0, 0), (0, x.shape[3] - used)))
    return [dx, dw]


register(OpDef("row_conv", 2, _row_conv_infer, _row_conv_ref, _row_conv_grad, None, "conv", {"width": Attr("int")},
               "stride-1 unpadded convolution of NCHW planes (N, Cin, H, W) x (KH, KW, Cin, Cout) -> NCHW "
               "(N, Cout, Ho, width), [n, co, y, x] = sum of x[n, ci, y + i, x + j] * w[i, j, ci, co]; "
               "columns of the planes past the outputs' windows are read only by a ragged tile's last block",
               float_only=True, loop_nest=_row_conv_loops))
