"""Convolution (needle's: NHWC input, (KH, KW, Cin, Cout) weights), lowered to window ops and gemms
or to direct loop nests in register tiles."""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..graph import Builder, check
from ..registry import Attr, AxisIndex, LoopNest, OpDef, register
from ..tiles import FEW_TO_A_SET, VECTOR_BYTES, register_tile
from ..types import TensorType, is_float, numpy_dtype
from .conv_adjoint import PHASE_WASTE, conv_input_phases, dead_taps_poisoned, live_taps, padding_nan, phase_waste
from .conv_rows import channel_stride, conv_rows, padding_in_place, row_tiled
from .conv_sums import col2im, conv_input_correlation, dilated, plane_col2im
from .windows import FOLD_PIXELS, out_size, window_axis


# output pixels an image from which a conv below FOLD_PIXELS (windows.py: there its products take the
# whole batch at once) keeps its own nest in register tiles (_tiled): ResNet9's 4x4 forward 1.31-1.42 ms
# as packing and batch-folded gemm, 1.19-1.22 as tiles (min of 40, one process alternating both, load ~4);
# its stride-1 input gradient too (the adjoint's padded conv: fwd+bwd 2.2-2.9 -> 1.6 ms, 2 threads); its
# weight gradient keeps that packing
TILED_PIXELS = 16
FOLD_TILED = 256  # output pixels per image up to which a conv in register tiles takes its weight gradient over the
# whole batch at once: the per-image products of larger images run at BLAS speed, and the batch's windows
# then only add memory traffic (3x3 32x16 -> 32 on 32x32 images, fwd+bwd: 5.6 ms per image, 8.0 folded)
# The least share of its channels' vectors a conv's output channels must fill (Cout 12 of 16) for the
# nest in register tiles over channels rounded up to whole vectors (zero weights in the spare ones,
# cropped), where its own channels fit no tile and it ran as a packing and a gemm of few columns
WIDENED_FILL = 0.75
WIDE_WASTE = 0.5  # the most garbage columns, as a share of a wide row, a stride-1 input gradient computes
# products a pixel (Cin·K·K) up to which a stride-1 conv is one reduction over wide rows instead of a
# packing and per-image gemms (measured, one thread: LeNet's conv1, 25: 4.8 -> 1.9 ms; LeNet's conv2, 150,
# and 3x3 16 -> 32, 144: 1.2-1.7x slower than their gemms)
DIRECT_MAX = 32
# ... and its input gradient, the adjoint convolved with the flipped kernel, up to this many products a
# pixel (Cout·K·K; LeNet's conv1, 150: fwd+bwd 13-18 -> 5.6-6.8 ms, one thread, where the gemm of
# (Cin·K·K = 25, Cout = 6) @ (6, Ho·Wp) and col2im ran)
DIRECT_ADJOINT_MAX = 150
DIRECT_BLOCK = 32  # its rows' length a multiple of this: the 'rows' schedule's register blocks (REGISTER_BLOCK)
# elements of an image's adjoint up to which a weight gradient runs in register tiles: its sum steps
# over the images fastest, one adjoint image apart (measured, one thread, load 5-6: LeNet conv2's
# 1600, gemms 10 -> tiles 4-6 ms); a 1x1 kernel's gemms need no packing (8x64x15x15 -> 64, 14400:
# gemms 0.40 ms, tiles 0.57), a larger one's im2col packs K·K times the input, and its adjoint's
# transpose for the tiles is a blocked copy (passes/canonical.py): a 32x32x32 adjoint, 32768, tiles
# 26 ms against im2col and gemms 20 before, 4.2 against 6.8 since (one thread, load ~6)
TILED_ADJOINT = 8192
TILED_WINDOWS_ADJOINT = 32768
# Planes a multiple of 4 KiB apart put a tile's loads of every channel in one L1 set (ir/tiles.py
# spread). A 3x3 16 -> 32 conv of 28x28 images as ragged rows over planes of 30 x 34 (4080 bytes):
# 5.3 ms, against 3.6-3.7 over rows of 42 and 4.4 for the NHWC nest (one thread, min of 60, load ~6)


# ---- conv -------------------------------------------------------------------------------
def _conv_infer(types, stride, padding):
    x, w = types
    check(x.ndim == 4 and w.ndim == 4, "needs input (N, H, W, Cin) and weight (KH, KW, Cin, Cout)")
    check(x.dtype == w.dtype and is_float(x.dtype), f"needs one float dtype, got {x.dtype} and {w.dtype}")
    check(x.shape[3] == w.shape[2], f"input channels {x.shape[3]} != weight's Cin {w.shape[2]}")
    check(stride >= 1 and padding >= 0, f"stride {stride} must be >= 1 and padding {padding} >= 0")
    ho = out_size(x.shape[1] + 2 * padding, w.shape[0], stride, "padded height")
    wo = out_size(x.shape[2] + 2 * padding, w.shape[1], stride, "padded width")
    return TensorType((x.shape[0], ho, wo, w.shape[3]), x.dtype)


def _conv_ref(x, w, stride, padding):
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    sn, sh, sw, sc = x.strides
    cols = as_strided(x, (n, ho, wo, kh, kw, c), (sn, sh * stride, sw * stride, sh, sw, sc))
    return np.tensordot(cols, w, axes=([3, 4, 5], [0, 1, 2])).astype(x.dtype)


def _conv_grad(b, n, g):
    """Both gradients of the conv of the taps that read the image (live_taps), the others' zero."""
    x, w = n.operands
    s, p = n.attrs["stride"], n.attrs["padding"]
    live = live_taps(x.shape, w.shape, s, p)
    if live is None:
        return [_conv_input_grad(b, x, w, g, s, p), _apart(b, _conv_weight_grad, x, w, g, s, p)]
    (rows, columns), q = live
    taps = _live_weight(b, w, live)
    zeros = ((rows[0], w.shape[0] - rows[1]), (columns[0], w.shape[1] - columns[1]), (0, 0), (0, 0))
    return [_conv_input_grad(b, x, taps, g, s, q), b.pad(_apart(b, _conv_weight_grad, x, taps, g, s, q), widths=zeros)]


def _apart(b, gradient, *args):
    """`gradient` built with its own reason, not after the one the gradient before it gave."""
    b.why = None
    return gradient(b, *args)


def _say(b, x, w, s, p, rule, what="conv"):
    """Gives the nodes `b` emits next the reason a conv (input `x`, weight `w`) is lowered as it is:
    `rule` with the numbers that chose it, after the reason of the rule that made this conv, if any."""
    kh, kw, cin, cout = w.shape
    said = f"{what} {cin}->{cout} k{kh if kh == kw else f'{kh}x{kw}'} s{s} p{p} on {'x'.join(map(str, x.shape[:3]))}: {rule}"
    b.why = f"{b.why}; then {said}" if b.why else said


def _mb(*shape, itemsize=4):
    """The megabytes of a float array of `shape` (what an im2col packs)."""
    return f"{np.prod(shape) * itemsize / 1e6:.2g} MB"


def _live_weight(b, w, live):
    """The weight's taps that read the image (live_taps' spans)."""
    (rows, columns), _ = live
    return b.slice(w, start=(rows[0], columns[0], 0, 0), stop=(rows[1], columns[1]) + w.shape[2:])


def _conv_input_grad(b, x, w, g, s, p):
    """Strides past 1: one stride-1 conv over the input's s·s phases (conv_adjoint.py), unless
    over tiny images the phases compute over PHASE_WASTE times the conv's products. Square
    kernels: the transposed weight (Cin·K·K, Cout) @ the adjoint (Cout, Ho·Wo) per image, summed
    back over the windows (col2im: unwindows; over wide rows, plane_col2im) and cropped to the
    input, or the adjoint's own direct conv with the flipped kernel: for a direct conv, and over
    inputs of TILED_PIXELS pixels where register tiles fit (NHWC: conv_input_correlation; else over
    wide rows in tiles of channels x pixels). Other kernels: conv_input_correlation."""
    kh, kw, cin, cout = w.shape
    batch, ho, wo, _ = g.shape
    folded = kh == kw and ho * wo < FOLD_PIXELS  # one product over the batch, then col2im (below)
    say = lambda rule: _say(b, x, w, s, p, rule, "input gradient of conv")
    waste = phase_waste(x.shape, w.shape, s, p) if s > 1 and folded else 0
    if s > 1 and waste <= PHASE_WASTE:
        say(f"one stride-1 conv over the input's {s * s} phases (stride {s}"
            + (f"; phase waste {waste:.2f} <= PHASE_WASTE {PHASE_WASTE})" if folded else ")"))
        return conv_input_phases(b, x, w, g, s, p)
    if kh != kw:
        say("the adjoint correlated with the flipped kernel: a rectangular kernel")
        return conv_input_correlation(b, x, w, g, p)
    tile = _tiled(x.type)
    if s == 1 and x.shape[1] * x.shape[2] >= TILED_PIXELS and tile:  # the adjoint's direct conv, in tiles
        say(f"the adjoint's conv with the flipped kernel: stride 1, {x.shape[1] * x.shape[2]} input pixels >= "
            f"TILED_PIXELS {TILED_PIXELS}, register tiles {tile[0]}x{tile[1]} of W {x.shape[2]} x Cin {cin}")
        return conv_input_correlation(b, x, w, g, p)
    large = ho * wo >= FOLD_PIXELS  # images whose rows fill register tiles
    direct = _direct(x.shape, w.shape, s, p) and cout * kh * kw <= DIRECT_ADJOINT_MAX  # as its forward
    if p < kh and (direct or (large and _planes_tiled(g.type, cin, kh, kh - 1 - p))):
        say("plane_conv of the adjoint with the flipped kernel over wide rows: " + (
            f"Cout*K*K {cout * kh * kw} <= DIRECT_ADJOINT_MAX {DIRECT_ADJOINT_MAX}, its forward direct" if direct else
            f"{ho * wo} output pixels >= FOLD_PIXELS {FOLD_PIXELS}, register tiles of its {cin} channels x pixels"))
        return _conv_direct(b, g, b.permute(b.flip(w, axes=(0, 1)), axes=(0, 1, 3, 2)), kh - 1 - p)
    no_tile = f"no register tile for W {x.shape[2]} x Cin {cin}" if not tile else f"stride {s}"
    if ho * wo < FOLD_PIXELS:  # (N·Ho·Wo, Cout) @ (Cout, K·K·Cin): one product, the adjoint as it is
        say(f"one gemm over the batch ({batch * ho * wo}x{cout} @ {cout}x{kh * kw * cin}), then col2im: "
            f"{ho * wo} output pixels < FOLD_PIXELS {FOLD_PIXELS}, {no_tile}")
        rows = b.matmul(b.reshape(g, shape=(batch * ho * wo, cout)), b.permute(_weight_matrix(b, w), axes=(1, 0)))
        windows = b.permute(b.reshape(rows, shape=(batch, ho, wo, kh, kw, cin)), axes=(0, 5, 1, 2, 3, 4))
        return col2im(b, x, windows, kh, s, p)
    weight = b.reshape(b.permute(w, axes=(2, 0, 1, 3)), shape=(1, cin * kh * kw, cout))
    weight = b.broadcast_to(weight, shape=(batch, cin * kh * kw, cout))
    row = x.shape[2] + 2 * p
    if _on_planes(x.shape, kh, s, p):  # the windows' adjoint over wide rows, summed back a row at a time
        say(f"a gemm per image ({cin * kh * kw}x{cout} @ {cout}x{ho * row}) over wide rows, then col2im along them: "
            f"{kh - 1} garbage columns <= WIDE_WASTE {WIDE_WASTE} of row {row}; {no_tile}")
        return plane_col2im(b, x, b.matmul(weight, _wide_adjoint(b, g, x.shape[2] + 2 * p)), kh, p)
    adjoint = b.reshape(b.permute(g, axes=(0, 3, 1, 2)), shape=(batch, cout, ho * wo))
    say(f"a gemm per image ({cin * kh * kw}x{cout} @ {cout}x{ho * wo}), then col2im: "
        + (f"stride {s}" if s > 1 else f"{kh - 1} garbage columns > WIDE_WASTE {WIDE_WASTE} of row {row}") + f"; {no_tile}")
    columns = b.matmul(weight, adjoint)
    windows = b.permute(b.reshape(columns, shape=(batch, cin, kh, kw, ho, wo)), axes=(0, 1, 4, 5, 2, 3))
    return col2im(b, x, windows, kh, s, p)


def _conv_weight_grad(b, x, w, g, s, p):
    """Square kernels: the sum over images of adjoint (Cout, Ho·Wo) @ windows^T (Ho·Wo, Cin·K·K),
    the windows being the forward's own im2col matrix (shared once decomposed), or one product over
    the batch where the forward stores none (small images, or its nest in register tiles); a direct
    conv's adjoint over wide rows correlated with its planes (plane_correlate). Rectangular kernels, and
    stride-1 kernels whose width and output channels fit a register tile (_tiled: no packing, each
    step of the sum over images and pixels an outer product): the input (channels as batch)
    correlated with the adjoint (batch as channels)."""
    kh, kw, cin, cout = w.shape
    batch, ho, wo, _ = g.shape
    say = lambda rule: _say(b, x, w, s, p, rule, "weight gradient of conv")
    if _direct(x.shape, w.shape, s, p):  # the forward's planes against the wide adjoint, per image, summed
        say(f"plane_correlate of the forward's wide rows with the adjoint, summed over images: "
            f"Cin*K*K {cin * kh * kw} <= DIRECT_MAX {DIRECT_MAX}, its forward direct")
        planes, wp, _ = _direct_planes(b, x, kh, p)
        per_image = b.plane_correlate(_wide_adjoint(b, g, wp), planes, kernel=kh, row=wp)
        return b.permute(b.summation(per_image, axes=(0,)), axes=(2, 3, 1, 0))
    limit = TILED_ADJOINT if kh * kw == 1 else TILED_WINDOWS_ADJOINT
    tiled = s == 1 and FOLD_PIXELS <= ho * wo and ho * wo * cout <= limit \
        and _tiled(TensorType((cin, kh, kw, cout), x.dtype))  # the correlation below, in register tiles
    folded = ho * wo < FOLD_PIXELS or (TILED_PIXELS <= ho * wo <= FOLD_TILED and _tiled(g.type))  # no im2col to share
    work = f"Ho*Wo*Cout {ho * wo * cout} {'<=' if ho * wo * cout <= limit else '>'} " \
        f"{'TILED_ADJOINT' if kh * kw == 1 else 'TILED_WINDOWS_ADJOINT'} {limit}"
    untiled = f"stride {s}" if s > 1 else f"{ho * wo} output pixels < FOLD_PIXELS {FOLD_PIXELS}" \
        if ho * wo < FOLD_PIXELS else work if ho * wo * cout > limit else "no register tile for its weight"
    if kh == kw and folded and not tiled:  # (K·K·Cin, N·Ho·Wo) @ (N·Ho·Wo, Cout): the batch summed in BLAS
        say(f"one gemm over the batch ({kh * kw * cin}x{batch * ho * wo} @ {batch * ho * wo}x{cout}) of its windows: " + (
            f"{ho * wo} output pixels < FOLD_PIXELS {FOLD_PIXELS}" if ho * wo < FOLD_PIXELS else
            f"{ho * wo} output pixels <= FOLD_TILED {FOLD_TILED}, its forward in register tiles; {untiled}"))
        rows = _im2rows(b, x, kh, s, p)
        total = b.matmul(b.permute(rows, axes=(1, 0)), b.reshape(g, shape=(batch * ho * wo, cout)))
        return b.reshape(total, shape=w.shape)
    if kh == kw and not tiled:
        say(f"a gemm per image ({cout}x{ho * wo} @ {ho * wo}x{cin * kh * kw}) over im2col (packs "
            f"{_mb(batch, cin * kh * kw, ho * wo, itemsize=numpy_dtype(x.dtype).itemsize)}), summed: {untiled}")
        columns = _im2col(b, x, kh, s, p)  # (N, Cin·K·K, Ho·Wo)
        adjoint = b.reshape(b.permute(g, axes=(0, 3, 1, 2)), shape=(batch, cout, ho * wo))
        per_image = b.matmul(adjoint, b.permute(columns, axes=(0, 2, 1)))  # (N, Cout, Cin·K·K)
        total = b.reshape(b.summation(per_image, axes=(0,)), shape=(cout, cin, kh, kw))
        return b.permute(total, axes=(2, 3, 1, 0))
    say("the input (channels as batch) correlated with the adjoint: " + (
        "a rectangular kernel" if kh != kw else f"stride 1, {work}, register tiles of its weight"))
    g = dilated(b, g, s)
    dw = b.conv(b.permute(x, axes=(3, 1, 2, 0)), b.permute(g, axes=(1, 2, 0, 3)), stride=1, padding=p)
    if dw.shape[1:3] != (kh, kw):
        dw = b.slice(dw, start=(0, 0, 0, 0), stop=(dw.shape[0], kh, kw, dw.shape[3]))
    return b.permute(dw, axes=(1, 2, 0, 3))


def _im2col(b, x, k, s, p):
    """The windows of each image of NHWC `x` as a (Cin·K·K, Ho·Wo) matrix: (N, Cin·K·K, Ho·Wo),
    padding and stride in the index map (a view; fusion stores it where it is multiplied)."""
    windows = _windows(b, x, k, s, p)
    batch, cin, ho, wo = windows.shape[:4]
    return b.reshape(b.permute(windows, axes=(0, 1, 4, 5, 2, 3)), shape=(batch, cin * k * k, ho * wo))


def _windows(b, x, k, s, p):
    """The (N, Cin, Ho, Wo, K, K) windows of NHWC `x`, padded by p, stride s (views)."""
    if p:
        x = b.pad(x, widths=((0, 0), (p, p), (p, p), (0, 0)))
    return b.windows(b.permute(x, axes=(0, 3, 1, 2)), kernel=k, stride=s)


def _im2rows(b, x, k, s, p):
    """The windows of NHWC `x` as one (N·Ho·Wo, K·K·Cin) matrix, a row per output pixel, channels
    last as in the weight: for small images (ResNet9's 4x4 and 2x2 layers), whose products per
    image would be tiny BLAS calls."""
    windows = _windows(b, x, k, s, p)
    batch, cin, ho, wo = windows.shape[:4]
    return b.reshape(b.permute(windows, axes=(0, 2, 3, 4, 5, 1)), shape=(batch * ho * wo, k * k * cin))


def _on_planes(shape, k, s, p):
    """Whether a square-kernel conv's input gradient (NHWC input of `shape`) sums its windows back
    over wide rows (plane_col2im): stride 1, and the garbage columns (K - 1 of each row of W + 2p)
    at most WIDE_WASTE of the row, which its product computes too."""
    return s == 1 and k - 1 <= WIDE_WASTE * (shape[2] + 2 * p)


def _wide_adjoint(b, g, row):
    """The NHWC adjoint `g` as (N, Cout, Ho·row): each row of Wo padded by zeros to the planes' `row`,
    so that output pixel (y, x) is column y·row + x of a flattened plane."""
    batch, ho, wo, cout = g.shape
    wide = b.permute(g, axes=(0, 3, 1, 2))
    if row > wo:
        wide = b.pad(wide, widths=((0, 0), (0, 0), (0, 0), (0, row - wo)))
    return b.reshape(wide, shape=(batch, cout, ho * row))


def _direct(shape, wshape, s, p):
    """Whether a conv runs as one reduction over wide rows (_conv_direct): a square kernel, stride
    1, at most DIRECT_MAX products a pixel, at least FOLD_PIXELS outputs an image, few garbage columns."""
    k, cin = wshape[0], wshape[2]
    ho, wo = shape[1] + 2 * p - k + 1, shape[2] + 2 * p - k + 1
    return wshape[1] == k and cin * k * k <= DIRECT_MAX and ho * wo >= FOLD_PIXELS and _on_planes(shape, k, s, p)


def _planes_tiled(t, channels, k, p):
    """Whether a stride-1 conv of NHWC type `t` into `channels` channels runs over wide rows
    (_conv_direct) in register tiles of channels x pixels: few garbage columns, and a tile whose
    pixels divide DIRECT_BLOCK (so the rows, a multiple of it)."""
    itemsize = numpy_dtype(t.dtype).itemsize
    return _on_planes(t.shape, k, 1, p) and register_tile(channels, DIRECT_BLOCK, itemsize) is not None


def _direct_planes(b, x, k, p):
    """(the padded planes of NHWC `x` flattened, (N, Cin, rows·Wp), each row padded by p on the left
    and only as far on the right as the output's width needs (Wp = max(W + p, Wo)): a window past a
    row's end reads the next row's left zeros as its right padding, so that a row computes K - 1 - p
    garbage columns, not K - 1 (LeNet conv2's input gradient: rows of 14, not 18); their row Wp; the
    length of a direct conv's wide rows, Ho·Wp rounded up to DIRECT_BLOCK, which spare padded rows
    make room for)."""
    batch, h, width, cin = x.shape
    ho, wo = h + 2 * p - k + 1, width + 2 * p - k + 1
    wp = max(width + p, wo)
    length = -(-ho * wp // DIRECT_BLOCK) * DIRECT_BLOCK
    rows = -(-((k - 1) * (wp + 1) + length) // wp)  # the padded rows the last windows reach
    padded = b.pad(b.permute(x, axes=(0, 3, 1, 2)), widths=((0, 0), (0, 0), (p, rows - h - p), (p, wp - width - p)))
    return b.reshape(padded, shape=(batch, cin, rows * wp)), wp, length


def _conv_direct(b, x, w, p):
    """out[n, y, x, co] = Σ planes[n, ci, (y + i)·Wp + x + j] · w[i, j, ci, co] over each image's
    padded planes flattened (plane_conv): one loop nest over (n, co, y·Wp + x | i, j, ci), which
    the 'rows' schedule vectorises along the wide row, its length rounded up to DIRECT_BLOCK;
    Wo of each row of Wp kept. No packing, no BLAS."""
    batch, h, width, _ = x.shape
    k, cout = w.shape[0], w.shape[3]
    planes, wp, length = _direct_planes(b, x, k, p)
    ho, wo = h + 2 * p - k + 1, width + 2 * p - k + 1
    wide = b.plane_conv(planes, w, kernel=k, row=wp, length=length)
    wide = b.slice(wide, start=(0, 0, 0), stop=(batch, cout, ho * wp))
    out = b.reshape(wide, shape=(batch, cout, ho, wp))
    out = out if wo == wp else b.slice(out, start=(0, 0, 0, 0), stop=(batch, cout, ho, wo))
    return b.permute(out, axes=(0, 2, 3, 1))


def _tiled(out):
    """Whether a conv of output type `out` (NHWC) keeps its loop nest (n, ho, wo, co | kh, kw, ci),
    which the schedule runs in register tiles of wo x co (ir/tiles.py): the tile where one fits, else None."""
    return register_tile(out.shape[2], out.shape[3], numpy_dtype(out.dtype).itemsize)


def _widened(out):
    """The output channels, rounded up to a whole vector, in which a conv of output type `out`
    (NHWC) fits a register tile where its own channels fit none, if they fill WIDENED_FILL of
    those vectors; else None."""
    lanes = VECTOR_BYTES // numpy_dtype(out.dtype).itemsize
    wide = -(-out.shape[3] // lanes) * lanes
    if wide == out.shape[3] or out.shape[3] < WIDENED_FILL * wide:
        return None
    return wide if _tiled(TensorType(out.shape[:3] + (wide,), out.dtype)) else None


def _weight_matrix(b, w):
    """The (K, K, Cin, Cout) weight as a (K·K·Cin, Cout) matrix, rows in _im2rows' column order."""
    kh, kw, cin, cout = w.shape
    return b.reshape(w, shape=(kh * kw * cin, cout))


def _conv_loops(types, result, stride, padding):
    """Loops (n, ho, wo, co | kh, kw, ci): x[n, ho*s+kh-p, wo*s+kw-p, ci] * w[kh, kw, ci, co]."""
    kh, kw, cin, _ = types[1].shape
    x = (AxisIndex(((0, 1),)), window_axis(1, 4, stride, padding), window_axis(2, 5, stride, padding),
         AxisIndex(((6, 1),)))
    w = tuple(AxisIndex(((a, 1),)) for a in (4, 5, 6, 3))
    return LoopNest((kh, kw, cin), (x, w), "add", lambda a, b: a * b)


def _conv_decompose(b, n):
    """A square-kernel conv as one matrix product per image: out[n] (Cout, Ho·Wo) = the weight as a
    (Cout, Cin·K·K) matrix @ the windows of image n (_im2col; fusion stores them, the packing, which
    reads rows of the input along its width). The product comes out channels-first, as nn.Conv
    returns it, so its permute back is free. Images of fewer than FOLD_PIXELS outputs take the
    batch into one product instead, a row per output pixel (_im2rows); stride-1 output rows that
    fill a tile of channels x pixels run over NCHW planes (conv_rows), few products a pixel (at
    most DIRECT_MAX) otherwise over wide rows (_conv_direct): neither packs nor calls BLAS, and
    rows write the output itself where wide rows leave a crop to their readers (LeNet's conv1
    forward, min of 60 calls: 1.15-1.24 -> 0.92-0.96 ms, one thread, alternating, load 4-9).
    Where the output's width and channels fit a register tile (_tiled) and its images span
    TILED_PIXELS, or its kernel (a weight gradient's correlation: the adjoint's image)
    FOLD_PIXELS, the conv keeps its loop nest (None), its padding read in place (padding_in_place)
    or padded first; where only its channels rounded up to whole vectors fit a tile (_widened), it
    runs over a weight padded to those, its spare outputs cropped. A rectangular kernel keeps it too."""
    x, w = n.operands
    kh, kw, cin, cout = w.shape
    s, p = n.attrs["stride"], n.attrs["padding"]
    (batch, ho, wo, _), ckk = n.result.shape, cin * kh * kw
    pixels, say = ho * wo, lambda rule: _say(b, x, w, s, p, rule)
    packs = f"im2col packs {_mb(batch, ckk, pixels, itemsize=numpy_dtype(x.dtype).itemsize)}"
    live = live_taps(x.shape, w.shape, s, p)
    if live is not None:  # the conv of the taps that read the image (ResNet9's 1x1 layers: one of nine)
        say(f"only the taps that read the image: rows {live[0][0]}, columns {live[0][1]} of {kh}x{kw}")
        return b.conv(x, dead_taps_poisoned(b, w, live), stride=s, padding=live[1])
    rows = s == 1 and kh == kw and pixels >= FOLD_PIXELS and row_tiled(n.result.type)
    if rows:
        say(f"row_conv over NCHW planes in register tiles of {rows[0]} channels x {rows[1]} pixels: stride 1, "
            f"{pixels} output pixels >= FOLD_PIXELS {FOLD_PIXELS}; {packs} for a gemm")
        return conv_rows(b, x, w, p)
    no_rows = f"stride {s}" if s > 1 else f"no row tile for Cout {cout} x Wo {wo}"
    if _direct(x.shape, w.shape, s, p):
        say(f"plane_conv over wide rows: Cin*K*K {ckk} <= DIRECT_MAX {DIRECT_MAX}, {kh - 1} garbage columns <= "
            f"WIDE_WASTE {WIDE_WASTE} of row {x.shape[2] + 2 * p}; {no_rows}; {packs} for a gemm")
        return _conv_direct(b, x, w, p)
    tile = _tiled(n.result.type)
    if (pixels >= TILED_PIXELS or kh * kw >= FOLD_PIXELS) and tile:  # the nest, in register tiles
        nest = f"loop nest in register tiles of {tile[0]} of Wo {wo} x {tile[1]} of Cout {cout}: " + (
            f"{pixels} output pixels >= TILED_PIXELS {TILED_PIXELS}" if pixels >= TILED_PIXELS else
            f"K*K {kh * kw} >= FOLD_PIXELS {FOLD_PIXELS}") + f"; {no_rows}; {packs} for a gemm"
        if p and not padding_in_place(x):  # padded first: the nest's loads unguarded
            say(f"{nest}; padded first: {x.shape[3]} channels {channel_stride(x) * numpy_dtype(x.dtype).itemsize} "
                f"bytes apart load more than FEW_TO_A_SET {FEW_TO_A_SET} to an L1 set")
            return b.conv(b.pad(x, widths=((0, 0), (p, p), (p, p), (0, 0))), w, stride=s, padding=0)
        say(nest + ("; its padding read in place" if p else ""))
        return padding_nan(b, x, w, s, p, Builder.emit(b, "conv", x, w, stride=s, padding=p)) if p else None
    no_tile = f"no register tile for Wo {wo} x Cout {cout}" if not tile else f"{pixels} output pixels < TILED_PIXELS"
    wide = _widened(n.result.type)
    if pixels >= TILED_PIXELS and wide:  # the nest in tiles of channels rounded up to a vector, the spare ones cropped
        say(f"loop nest in register tiles over Cout {cout} widened to {wide} (fills {cout / wide:.2f} >= WIDENED_FILL "
            f"{WIDENED_FILL}), the spare outputs cropped: {no_tile}")
        spare = b.pad(w, widths=((0, 0), (0, 0), (0, 0), (0, wide - cout)))
        return b.slice(b.conv(x, spare, stride=s, padding=p), start=(0, 0, 0, 0), stop=n.result.shape)
    if kh != kw:
        say(f"loop nest: a rectangular kernel, {no_tile}")
        return None
    if pixels < FOLD_PIXELS:  # one product, NHWC out as it is
        say(f"im2col of the batch + one gemm ({batch * pixels}x{ckk} @ {ckk}x{cout}): {pixels} output pixels < "
            f"FOLD_PIXELS {FOLD_PIXELS}, {no_tile}; {packs}")
        product = b.matmul(_im2rows(b, x, kh, s, p), _weight_matrix(b, w))  # (N·Ho·Wo, Cout)
        return b.reshape(product, shape=n.result.shape)
    say(f"im2col + a gemm per image ({cout}x{ckk} @ {ckk}x{pixels}): {no_rows}, Cin*K*K {ckk}"
        f"{f' > DIRECT_MAX {DIRECT_MAX}' if ckk > DIRECT_MAX else ''}, {no_tile}; {packs}")
    columns = _im2col(b, x, kh, s, p)
    batch, _, pixels = columns.shape
    weight = b.reshape(b.permute(w, axes=(3, 2, 0, 1)), shape=(1, cout, cin * kh * kw))
    product = b.matmul(b.broadcast_to(weight, shape=(batch, cout, cin * kh * kw)), columns)
    return b.permute(b.reshape(product, shape=(batch, cout) + n.result.shape[1:3]), axes=(0, 2, 3, 1))


register(OpDef("conv", 2, _conv_infer, _conv_ref, _conv_grad, None, "conv",
               {"stride": Attr("int"), "padding": Attr("int")},
               "2-D convolution (cross-correlation), NHWC input, (KH, KW, Cin, Cout) weight",
               float_only=True, loop_nest=_conv_loops, decompose=_conv_decompose))
