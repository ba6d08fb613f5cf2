"""A pair of window ops over the last two axes: im2col `windows` and its adjoint `unwindows`,
which convolutions and pooling build on."""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..graph import check
from ..registry import Attr, AxisIndex, LoopNest, OpDef, register
from ..types import TensorType


FOLD_PIXELS = 64  # output pixels per image below which a conv's products take the whole batch at once
PHASE_COLUMNS = 8  # columns of a phase's rows from which strided col2im sums by phases (`phased`)
MAX_SHIFTED = 49  # window elements up to which stride-1 col2im (unwindows) is a sum of shifted planes


def out_size(size, kernel, stride, what):
    check(size >= kernel, f"{what} {size} is smaller than the kernel {kernel}")
    return (size - kernel) // stride + 1


def window_axis(out_axis, kernel_axis, stride, padding=0):
    """The input row read by output row `out_axis` at kernel row `kernel_axis`; guarded when padded."""
    return AxisIndex(((out_axis, stride), (kernel_axis, 1)), -padding, guarded=padding > 0)


WINDOW_ATTRS = {"kernel": Attr("int"), "stride": Attr("int")}


def windows_infer(types, kernel, stride):
    (t,) = types
    check(t.ndim >= 2, f"needs rank >= 2, got {t.ndim}")
    check(kernel >= 1 and stride >= 1, f"kernel {kernel} and stride {stride} must be >= 1")
    ho = out_size(t.shape[-2], kernel, stride, "height")
    wo = out_size(t.shape[-1], kernel, stride, "width")
    return TensorType(t.shape[:-2] + (ho, wo, kernel, kernel), t.dtype)


def windows_ref(x, kernel, stride):
    *lead, h, w = x.shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    sh, sw = x.strides[-2:]
    return as_strided(x, tuple(lead) + (ho, wo, kernel, kernel),
                      x.strides[:-2] + (sh * stride, sw * stride, sh, sw)).copy()


def _unwindows_infer(types, kernel, stride, size):
    (t,) = types
    check(kernel >= 1 and stride >= 1, f"kernel {kernel} and stride {stride} must be >= 1")
    check(t.ndim >= 4 and t.shape[-2:] == (kernel, kernel),
          f"needs (..., Ho, Wo, {kernel}, {kernel}) windows, got shape {t.shape}")
    check(len(size) == 2, f"size must be (height, width), got {size}")
    expected = tuple(out_size(d, kernel, stride, "size") for d in size)
    check(t.shape[-4:-2] == expected, f"{t.shape[-4:-2]} windows do not tile size {size}")
    return TensorType(t.shape[:-4] + tuple(size), t.dtype)


def _unwindows_ref(g, kernel, stride, size):
    *lead, ho, wo, _, _ = g.shape
    out = np.zeros(tuple(lead) + tuple(size), g.dtype)
    for i in range(kernel):
        for j in range(kernel):
            out[..., i:i + stride * ho:stride, j:j + stride * wo:stride] += g[..., i, j]
    return out


def lead_axes(ndim):
    return tuple(AxisIndex(((a, 1),)) for a in range(ndim))


def _windows_map(types, result, kernel, stride):
    """(..., ho, wo, i, j) reads x[..., ho*stride + i, wo*stride + j]: im2col as an index map."""
    lead = types[0].ndim - 2
    return lead_axes(lead) + (window_axis(lead, lead + 2, stride), window_axis(lead + 1, lead + 3, stride))


def _unwindows_loops(types, result, kernel, stride, size):
    """Loops (..., y, x | i, j) sum g[..., (y-i)/stride, (x-j)/stride, i, j] where that exists."""
    lead = result.ndim - 2
    y, x, i, j = lead, lead + 1, lead + 2, lead + 3
    g = lead_axes(lead) + (AxisIndex(((y, 1), (i, -1)), 0, stride, True),
                       AxisIndex(((x, 1), (j, -1)), 0, stride, True),
                       AxisIndex(((i, 1),)), AxisIndex(((j, 1),)))
    return LoopNest((kernel, kernel), (g,), "add")


def _unwindows_decompose(b, n):
    """Stride-1 col2im (a convolution's input gradient) over small images (fewer than FOLD_PIXELS
    windows: ResNet9's 4x4 and 2x2 layers) as a sum of K·K shifted copies of the window planes
    (each sliced out and padded into place): one elementwise kernel whose loops run over the output
    rows, where the loop nest's reduction over (i, j) ran rows as short as the image's width K·K
    times over (ResNet9 step 49 -> 28 ms). Over larger images the nest wins (LeNet's conv2: 5 ms
    against 9 for its 25 guarded loads an element). Windows as far apart as they are
    wide (pooling's gradient) are a relayout of the windows instead, and windows that overlap at a
    stride past 1 are summed by phases over rows wide enough (`phased`: the nest's divisibility
    guard a tap ran scalar). Strides past the kernel and stride-1 kernels over MAX_SHIFTED elements
    keep the loop nest."""
    g = n.operands[0]
    k, size = n.attrs["kernel"], n.attrs["size"]
    *lead, ho, wo, _, _ = g.shape
    if n.attrs["stride"] == k:  # windows that tile without overlap (pooling's gradient): a relayout
        axes = tuple(range(len(lead)))
        d = len(lead)
        tiles = b.reshape(b.permute(g, axes=axes + (d, d + 2, d + 1, d + 3)), shape=tuple(lead) + (ho * k, wo * k))
        if (ho * k, wo * k) == tuple(size):
            return tiles
        return b.pad(tiles, widths=((0, 0),) * d + ((0, size[0] - ho * k), (0, size[1] - wo * k)))
    if phased(k, n.attrs["stride"], size[1]):
        return col2im_phases(b, lambda i, j, place: place(window_plane(b, g, i, j)), g.shape[:-2], k,
                             n.attrs["stride"], tuple(size))
    if k * k > MAX_SHIFTED or n.attrs["stride"] != 1 or ho * wo >= FOLD_PIXELS:
        return None
    total = None
    for i in range(k):
        for j in range(k):
            plane = b.reshape(b.slice(g, start=(0,) * len(lead) + (0, 0, i, j),
                                      stop=tuple(lead) + (ho, wo, i + 1, j + 1)), shape=tuple(lead) + (ho, wo))
            widths = ((0, 0),) * len(lead) + ((i, size[0] - i - ho), (j, size[1] - j - wo))
            term = b.pad(plane, widths=widths)
            total = term if total is None else b.add(total, term)
    return total


def phased(k, s, width) -> bool:
    """Whether col2im at stride `s` sums by phases (`col2im_phases`): windows that overlap, and
    phase rows of at least PHASE_COLUMNS columns for the lanes (a pooling gradient's; a conv's input
    gradient takes the phases however short its rows, conv_sums.py col2im)."""
    return 1 < s < k and -(-width // s) >= PHASE_COLUMNS


def col2im_phases(b, term, windows, k, s, size):
    """Strided col2im by phases: output pixel (q·s + r, p·s + t) sums windows (q - a, p - c) at
    taps (r + s·a, t + s·c), so each tap's plane of `windows` (..., Ho, Wo) lands, shifted, on one
    phase of a (..., Q, s, P, s) view of the output; term(i, j, place) is tap (i, j)'s term there,
    `place` putting a (..., Ho, Wo) plane into its phase (zeros elsewhere). The terms are summed in
    the taps' order, as unwindows' loop nest sums them (zeros where a tap reads no window), then
    cropped to `size`."""
    *lead, ho, wo = windows
    d = len(lead)
    rows, cols = -(-size[0] // s), -(-size[1] // s)

    def placer(i, j):
        (a, r), (c, t) = divmod(i, s), divmod(j, s)
        keep = (min(ho, rows - a), min(wo, cols - c))
        widths = ((0, 0),) * d + ((a, rows - a - keep[0]), (r, s - 1 - r), (c, cols - c - keep[1]), (t, s - 1 - t))

        def place(plane):
            plane = b.reshape(plane, shape=tuple(lead) + (ho, 1, wo, 1))
            if keep != (ho, wo):
                plane = b.slice(plane, start=(0,) * (d + 4), stop=tuple(lead) + (keep[0], 1, keep[1], 1))
            return b.pad(plane, widths=widths)
        return place
    total = None
    for i in range(k):
        for j in range(k):
            value = term(i, j, placer(i, j))
            total = value if total is None else b.add(total, value)
    out = b.reshape(total, shape=tuple(lead) + (rows * s, cols * s))
    if (rows * s, cols * s) == size:
        return out
    return b.slice(out, start=(0,) * (d + 2), stop=tuple(lead) + size)


def window_plane(b, g, i, j):
    """Tap (i, j)'s plane (..., Ho, Wo) of windows `g` (..., Ho, Wo, K, K)."""
    *lead, ho, wo, _, _ = g.shape
    d = len(lead)
    return b.reshape(b.slice(g, start=(0,) * d + (0, 0, i, j), stop=tuple(lead) + (ho, wo, i + 1, j + 1)),
                     shape=tuple(lead) + (ho, wo))


register(OpDef("windows", 1, windows_infer, windows_ref,
               lambda b, n, g: [b.unwindows(g, size=n.operands[0].shape[-2:], **n.attrs)],
               None, "window", WINDOW_ATTRS,
               "the kernel x kernel windows over the last two axes (im2col): (..., Ho, Wo, k, k)",
               index_map=_windows_map))
register(OpDef("unwindows", 1, _unwindows_infer, _unwindows_ref,
               lambda b, n, g: [b.windows(g, kernel=n.attrs["kernel"], stride=n.attrs["stride"])],
               None, "window", {**WINDOW_ATTRS, "size": Attr("ints")},
               "the adjoint of windows: sums each window element back into a (..., *size) tensor",
               loop_nest=_unwindows_loops, decompose=_unwindows_decompose))
