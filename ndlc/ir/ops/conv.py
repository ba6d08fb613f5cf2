"""Convolution (needle's: NHWC input, (KH, KW, Cin, Cout) weights), lowered to window ops and gemms
or to direct loop nests in register tiles."""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..graph import check
from ..registry import Attr, AxisIndex, LoopNest, OpDef, register
from ..tiles import FEW_TO_A_SET, L1_SETS, VECTOR_BYTES, register_tile, spread
from ..types import TensorType, is_float, numpy_dtype
from .conv_adjoint import PHASE_WASTE, conv_input_phases, live_taps, phase_waste
from .windows import FOLD_PIXELS, col2im_phases, out_size, window_axis, window_plane


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
        return [_conv_input_grad(b, x, w, g, s, p), _conv_weight_grad(b, x, w, g, s, p)]
    (rows, columns), q = live
    taps = _live_weight(b, w, live)
    zeros = ((rows[0], w.shape[0] - rows[1]), (columns[0], w.shape[1] - columns[1]), (0, 0), (0, 0))
    return [_conv_input_grad(b, x, taps, g, s, q), b.pad(_conv_weight_grad(b, x, taps, g, s, q), widths=zeros)]


def _live_weight(b, w, live):
    """The weight's taps that read the image (live_taps' spans)."""
    (rows, columns), _ = live
    return b.slice(w, start=(rows[0], columns[0], 0, 0), stop=(rows[1], columns[1]) + w.shape[2:])


def _dilated(b, g, s):
    """The adjoint with s - 1 zeros between outputs: each at the input position its window starts from."""
    if s == 1:
        return g
    g = b.dilate(g, axes=(1, 2), dilation=s - 1)
    return b.slice(g, start=(0, 0, 0, 0), stop=(g.shape[0], (g.shape[1] - 1) // s * s + 1,
                                                (g.shape[2] - 1) // s * s + 1, g.shape[3]))


def _conv_input_grad(b, x, w, g, s, p):
    """Strides past 1: one stride-1 conv over the input's s·s phases (conv_adjoint.py), unless
    over tiny images the phases compute over PHASE_WASTE times the conv's products. Square
    kernels: the transposed weight (Cin·K·K, Cout) @ the adjoint (Cout, Ho·Wo) per image, summed
    back over the windows (col2im: unwindows; over wide rows, _plane_col2im) and cropped to the
    input, or the adjoint's own direct conv with the flipped kernel: for a direct conv, and over
    inputs of TILED_PIXELS pixels where register tiles fit (NHWC: _conv_input_correlation; else over
    wide rows in tiles of channels x pixels). Other kernels: _conv_input_correlation."""
    kh, kw, cin, cout = w.shape
    batch, ho, wo, _ = g.shape
    folded = kh == kw and ho * wo < FOLD_PIXELS  # one product over the batch, then col2im (below)
    if s > 1 and not (folded and phase_waste(x.shape, w.shape, s, p) > PHASE_WASTE):
        return conv_input_phases(b, x, w, g, s, p)
    if kh != kw:
        return _conv_input_correlation(b, x, w, g, p)
    if s == 1 and x.shape[1] * x.shape[2] >= TILED_PIXELS and _tiled(x.type):  # the adjoint's direct conv, in tiles
        return _conv_input_correlation(b, x, w, g, p)
    large = ho * wo >= FOLD_PIXELS  # images whose rows fill register tiles
    direct = _direct(x.shape, w.shape, s, p) and cout * kh * kw <= DIRECT_ADJOINT_MAX  # as its forward
    if p < kh and (direct or (large and _planes_tiled(g.type, cin, kh, kh - 1 - p))):
        return _conv_direct(b, g, b.permute(b.flip(w, axes=(0, 1)), axes=(0, 1, 3, 2)), kh - 1 - p)
    if ho * wo < FOLD_PIXELS:  # (N·Ho·Wo, Cout) @ (Cout, K·K·Cin): one product, the adjoint as it is
        rows = b.matmul(b.reshape(g, shape=(batch * ho * wo, cout)), b.permute(_weight_matrix(b, w), axes=(1, 0)))
        windows = b.permute(b.reshape(rows, shape=(batch, ho, wo, kh, kw, cin)), axes=(0, 5, 1, 2, 3, 4))
        return _col2im(b, x, windows, kh, s, p)
    weight = b.reshape(b.permute(w, axes=(2, 0, 1, 3)), shape=(1, cin * kh * kw, cout))
    weight = b.broadcast_to(weight, shape=(batch, cin * kh * kw, cout))
    if _on_planes(x.shape, kh, s, p):  # the windows' adjoint over wide rows, summed back a row at a time
        return _plane_col2im(b, x, b.matmul(weight, _wide_adjoint(b, g, x.shape[2] + 2 * p)), kh, p)
    adjoint = b.reshape(b.permute(g, axes=(0, 3, 1, 2)), shape=(batch, cout, ho * wo))
    columns = b.matmul(weight, adjoint)
    windows = b.permute(b.reshape(columns, shape=(batch, cin, kh, kw, ho, wo)), axes=(0, 1, 4, 5, 2, 3))
    return _col2im(b, x, windows, kh, s, p)


def _col2im(b, x, windows, k, s, p):
    """The (N, Cin, Ho, Wo, K, K) windows' adjoint summed back onto the NHWC input (unwindows),
    cropped to it where padded; overlapping strided windows by phases however short their rows
    (unwindows' nest guards each tap, scalar: ResNet9's 4x4 -> 2x2 input gradient 2.3x slower)."""
    batch, cin = windows.shape[:2]
    height, width = x.shape[1] + 2 * p, x.shape[2] + 2 * p
    if 1 < s < k:
        padded = col2im_phases(b, lambda i, j, place: place(window_plane(b, windows, i, j)), windows.shape[:-2],
                               k, s, (height, width))
    else:
        padded = b.unwindows(windows, kernel=k, stride=s, size=(height, width))  # (N, Cin, Hp, Wp)
    if p:
        padded = b.slice(padded, start=(0, 0, p, p), stop=(batch, cin, p + x.shape[1], p + x.shape[2]))
    return b.permute(padded, axes=(0, 2, 3, 1))


def _conv_input_correlation(b, x, w, g, p):
    """A stride-1 conv's input gradient: the correlation of the adjoint with the flipped kernel,
    padded by k - 1 less the conv's own padding (which covers the input exactly), then padded or
    cropped to the input where the windows did not reach."""
    kernel = w.shape[:2]
    full = max(kernel) - 1
    reach = min(p, full)  # padding rows whose adjoint no input row needs
    flipped = b.permute(b.flip(w, axes=(0, 1)), axes=(0, 1, 3, 2))
    dx = b.conv(g, flipped, stride=1, padding=full - reach)
    start = [p - reach + full - (k - 1) for k in kernel]  # dx index of input row 0
    short = [max(0, a + d - e) for a, d, e in zip(start, x.shape[1:3], dx.shape[1:3])]
    if any(short):  # input rows past the last window get no adjoint
        dx = b.pad(dx, widths=((0, 0), (0, short[0]), (0, short[1]), (0, 0)))
    if dx.shape[1:3] != x.shape[1:3]:
        dx = b.slice(dx, start=(0, start[0], start[1], 0),
                     stop=(x.shape[0], start[0] + x.shape[1], start[1] + x.shape[2], x.shape[3]))
    return dx


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
    if _direct(x.shape, w.shape, s, p):  # the forward's planes against the wide adjoint, per image, summed
        planes, wp, _ = _direct_planes(b, x, kh, p)
        per_image = b.plane_correlate(_wide_adjoint(b, g, wp), planes, kernel=kh, row=wp)
        return b.permute(b.summation(per_image, axes=(0,)), axes=(2, 3, 1, 0))
    limit = TILED_ADJOINT if kh * kw == 1 else TILED_WINDOWS_ADJOINT
    tiled = s == 1 and FOLD_PIXELS <= ho * wo and ho * wo * cout <= limit \
        and _tiled(TensorType((cin, kh, kw, cout), x.dtype))  # the correlation below, in register tiles
    folded = ho * wo < FOLD_PIXELS or (TILED_PIXELS <= ho * wo <= FOLD_TILED and _tiled(g.type))  # no im2col to share
    if kh == kw and folded and not tiled:  # (K·K·Cin, N·Ho·Wo) @ (N·Ho·Wo, Cout): the batch summed in BLAS
        rows = _im2rows(b, x, kh, s, p)
        total = b.matmul(b.permute(rows, axes=(1, 0)), b.reshape(g, shape=(batch * ho * wo, cout)))
        return b.reshape(total, shape=w.shape)
    if kh == kw and not tiled:
        columns = _im2col(b, x, kh, s, p)  # (N, Cin·K·K, Ho·Wo)
        adjoint = b.reshape(b.permute(g, axes=(0, 3, 1, 2)), shape=(batch, cout, ho * wo))
        per_image = b.matmul(adjoint, b.permute(columns, axes=(0, 2, 1)))  # (N, Cout, Cin·K·K)
        total = b.reshape(b.summation(per_image, axes=(0,)), shape=(cout, cin, kh, kw))
        return b.permute(total, axes=(2, 3, 1, 0))
    g = _dilated(b, g, s)
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
    over wide rows (_plane_col2im): stride 1, and the garbage columns (K - 1 of each row of W + 2p)
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


def _plane_col2im(b, x, columns, k, p):
    """The (N, Cin·K·K, Ho·Wp) windows' adjoint (zero in each row's K - 1 garbage columns) summed
    back onto the flattened padded planes of NHWC `x` (plane_unwindows: K·K shifted rows, each
    one interval; a spare row takes the last garbage columns' zeros), cropped to the input."""
    batch, h, w, cin = x.shape
    wp = w + 2 * p
    windows = b.reshape(columns, shape=(batch, cin, k, k, columns.shape[2]))
    planes = b.plane_unwindows(windows, kernel=k, row=wp, size=(h + 2 * p + 1) * wp)
    padded = b.reshape(planes, shape=(batch, cin, h + 2 * p + 1, wp))
    return b.permute(b.slice(padded, start=(0, 0, p, p), stop=(batch, cin, p + h, p + w)), axes=(0, 2, 3, 1))


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
    which the schedule runs in register tiles of wo x co (ir/tiles.py), where one fits."""
    return register_tile(out.shape[2], out.shape[3], numpy_dtype(out.dtype).itemsize) is not None


def _widened(out):
    """The output channels, rounded up to a whole vector, in which a conv of output type `out`
    (NHWC) fits a register tile where its own channels fit none, if they fill WIDENED_FILL of
    those vectors; else None."""
    lanes = VECTOR_BYTES // numpy_dtype(out.dtype).itemsize
    wide = -(-out.shape[3] // lanes) * lanes
    if wide == out.shape[3] or out.shape[3] < WIDENED_FILL * wide:
        return None
    return wide if _tiled(TensorType(out.shape[:3] + (wide,), out.dtype)) else None


def _padding_in_place(x):
    """Whether a tiled conv nest reads NHWC `x` padded in place (codegen/llvm_rows.py _taps), not a
    padded copy: where its channels' loads spread over the L1 cache, at most FEW_TO_A_SET to a set
    (16 channels' planes 4 KiB apart: 2x slower; 3 channels' read in place: ir/tiles.py)."""
    return spread(x.shape[3], _channel_stride(x), numpy_dtype(x.dtype).itemsize, FEW_TO_A_SET)


def _channel_stride(x):
    """Elements between channels (axis 3) of `x` in the value it views through permutes (an NCHW plane)."""
    axis = 3
    while x.node is not None and x.node.op == "permute":
        axis = x.node.attrs["axes"][axis]
        x = x.node.operands[0]
    return int(np.prod(x.shape[axis + 1:]))


def _row_tiled(out):
    """Whether a stride-1 conv of output type `out` (NHWC) runs over NCHW planes (_conv_rows) in
    register tiles of channels x pixels along its rows: Wo a multiple of the tile's vectors, or
    ragged rows that fill most of theirs (ir/tiles.py)."""
    return register_tile(out.shape[3], out.shape[2], numpy_dtype(out.dtype).itemsize, ragged=True) is not None


def _conv_rows(b, x, w, p):
    """The conv over the input's NCHW planes, padded there (a copy of rows, where NHWC padding
    transposed the input), into the NCHW output (row_conv): each tile of channels x pixels loads
    the input's row as vectors and stores the output's rows, so nn.Conv's permute back is none and
    its bias an epilogue, and every reader reads NCHW. Where the tile's pixels do not divide Wo, a
    row's last block computes whole (the schedule checks its reads stay in their buffer) and
    stores Wo's remainder: the planes carry the columns it reads past the row, and as many more as
    keep the channels' planes apart in the L1 cache (_spread_row)."""
    planes = b.permute(x, axes=(0, 3, 1, 2))
    width = x.shape[2] + 2 * p - w.shape[1] + 1
    itemsize = numpy_dtype(x.dtype).itemsize
    tile = register_tile(w.shape[3], width, itemsize, ragged=True)
    row = _spread_row(x.shape[1] + 2 * p, x.shape[2] + 2 * p - width % -tile[1], x.shape[3], itemsize)
    extra = row - x.shape[2] - 2 * p  # columns past the padding: the last block's reads, the spread
    if p or extra:
        planes = b.pad(planes, widths=((0, 0), (0, 0), (p, p), (p, p + extra)))
    return b.permute(b.row_conv(planes, w, width=width), axes=(0, 2, 3, 1))


def _spread_row(rows, least, channels, itemsize):
    """The padded planes' row, at least `least` elements (the first of the next L1_SETS), whose
    planes of `rows` rows put the same element of each of `channels` channels (what a tile's steps
    read) at most two to an L1 set (L1_SETS of 64-byte lines)."""
    for row in range(least, least + L1_SETS):
        if spread(channels, rows * row, itemsize):
            return row
    return least  # more channels than two to a set can place


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
    fill a tile of channels x pixels run over NCHW planes (_conv_rows), few products a pixel (at
    most DIRECT_MAX) otherwise over wide rows (_conv_direct): neither packs nor calls BLAS, and
    rows write the output itself where wide rows leave a crop to their readers (LeNet's conv1
    forward, min of 60 calls: 1.15-1.24 -> 0.92-0.96 ms, one thread, alternating, load 4-9).
    Where the output's width and channels fit a register tile (_tiled) and its images span
    TILED_PIXELS, or its kernel (a weight gradient's correlation: the adjoint's image)
    FOLD_PIXELS, the conv keeps its loop nest (None), its padding read in place (_padding_in_place)
    or padded first; where only its channels rounded up to whole vectors fit a tile (_widened), it
    runs over a weight padded to those, its spare outputs cropped. A rectangular kernel keeps it too."""
    x, w = n.operands
    kh, kw, cin, cout = w.shape
    s, p = n.attrs["stride"], n.attrs["padding"]
    pixels = n.result.shape[1] * n.result.shape[2]
    live = live_taps(x.shape, w.shape, s, p)
    if live is not None:  # the conv of the taps that read the image (ResNet9's 1x1 layers: one of nine)
        return b.conv(x, _live_weight(b, w, live), stride=s, padding=live[1])
    if s == 1 and kh == kw and pixels >= FOLD_PIXELS and _row_tiled(n.result.type):
        return _conv_rows(b, x, w, p)
    if _direct(x.shape, w.shape, s, p):
        return _conv_direct(b, x, w, p)
    if (pixels >= TILED_PIXELS or kh * kw >= FOLD_PIXELS) and _tiled(n.result.type):  # the nest, in register tiles
        if p and not _padding_in_place(x):  # padded first: the nest's loads unguarded
            return b.conv(b.pad(x, widths=((0, 0), (p, p), (p, p), (0, 0))), w, stride=s, padding=0)
        return None
    wide = _widened(n.result.type)
    if pixels >= TILED_PIXELS and wide:  # the nest in tiles of channels rounded up to a vector, the spare ones cropped
        spare = b.pad(w, widths=((0, 0), (0, 0), (0, 0), (0, wide - cout)))
        return b.slice(b.conv(x, spare, stride=s, padding=p), start=(0, 0, 0, 0), stop=n.result.shape)
    if kh != kw:
        return None
    if pixels < FOLD_PIXELS:  # one product, NHWC out as it is
        product = b.matmul(_im2rows(b, x, kh, s, p), _weight_matrix(b, w))  # (N·Ho·Wo, Cout)
        return b.reshape(product, shape=n.result.shape)
    columns = _im2col(b, x, kh, s, p)
    batch, _, pixels = columns.shape
    weight = b.reshape(b.permute(w, axes=(3, 2, 0, 1)), shape=(1, cout, cin * kh * kw))
    product = b.matmul(b.broadcast_to(weight, shape=(batch, cout, cin * kh * kw)), columns)
    return b.permute(b.reshape(product, shape=(batch, cout) + n.result.shape[1:3]), axes=(0, 2, 3, 1))


register(OpDef("conv", 2, _conv_infer, _conv_ref, _conv_grad, None, "conv",
               {"stride": Attr("int"), "padding": Attr("int")},
               "2-D convolution (cross-correlation), NHWC input, (KH, KW, Cin, Cout) weight",
               float_only=True, loop_nest=_conv_loops, decompose=_conv_decompose))
