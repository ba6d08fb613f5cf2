"""Pieces of a convolution's lowering that need none of the forward's paths: the kernel taps that
ever read the image (the conv and both its gradients take those alone), the NaN that eager's zero
padding gives an infinite or NaN weight where a lowering skips the padding's taps, and a strided
conv's input gradient as one stride-1 conv over its phases."""
import numpy as np

from ..graph import Builder


# products a stride-s conv's input gradient as its phases' stride-1 conv computes per product of the
# conv (phase rows past the image, zero taps past K) up to which a conv of fewer than FOLD_PIXELS outputs
# takes it, where its gemm and col2im by phases at stride s run (conv_sums.py col2im; input and weight
# gradients, one thread, min of 40, alternating twice, load ~6): 64x5x9x9 -> 12 k5, 1.44: 0.30 against
# 0.36 ms; 64x3x13x13 -> 8 k7, 1.31: 0.63 against 0.75; ResNet9's 8x8 -> 4x4 at batch 256, 2.78:
# 1.9 against 1.2-1.3; its 4x4 -> 2x2, 4.0: 2.3 against 1.0 (col2im's loop nest, before, lost to 4.0)
PHASE_WASTE = 2


def live_taps(shape, wshape, s, p):
    """The kernel rows and columns, [start, stop) each, that read the image at some output of a
    stride-s conv of NHWC input `shape` padded by p, and the padding that gives the conv of those
    taps alone the same output; None where every tap reads the image or no even padding does.
    ResNet9's 1x1 images: one tap of a 3x3 kernel, the other eight multiply padding only."""
    spans = []
    for size, k in zip(shape[1:3], wshape[:2]):
        out = (size + 2 * p - k) // s + 1
        live = [i for i in range(k) if any(0 <= y * s + i - p < size for y in range(out))]
        spans.append((live[0], live[-1] + 1) if live else (0, k))
    if spans == [(0, wshape[0]), (0, wshape[1])] or spans[0][0] != spans[1][0] or spans[0][0] > p:
        return None
    padding = p - spans[0][0]
    for size, k, (start, stop) in zip(shape[1:3], wshape[:2], spans):
        if (size + 2 * padding - (stop - start)) // s != (size + 2 * p - k) // s:
            return None
    return spans, padding


def _bad_taps(b, w, axes):
    """Whether any weight of each remaining (tap, output channel) of `w` summed over `axes` is
    infinite or NaN: its products with the padding's zeros, 0·w, summed, are NaN there, 0 elsewhere."""
    zeros = b.summation(b.mul_scalar(w, scalar=0.0), axes=axes)
    return b.not_equal(zeros, b.constant_like(zeros, 0.0))


def dead_taps_poisoned(b, w, live):
    """The weight's live taps (live_taps' spans), each output channel NaN where a tap that reads
    only padding has an infinite or NaN weight: eager multiplies that tap by the padding's zeros at
    every output (0·inf, NaN); the conv of the live taps alone would not. Weight-sized: the same
    weights, bit for bit, where all are finite."""
    (rows, columns), _ = live
    kh, kw, cin, cout = w.shape
    taps = b.slice(w, start=(rows[0], columns[0], 0, 0), stop=(rows[1], columns[1], cin, cout))
    dead = _outside(b, (rows[1] - rows[0], columns[1] - columns[0], 1), ((rows[0], kh - rows[1]),
                                                                          (columns[0], kw - columns[1]), (0, 0)), w.dtype)
    bad = b.multiply(b.cast(_bad_taps(b, w, (2,)), dtype=w.dtype), b.broadcast_to(dead, shape=(kh, kw, cout)))
    bad = b.summation(bad, axes=(0, 1))
    bad = b.broadcast_to(b.reshape(b.greater(bad, b.constant_like(bad, 0.0)), shape=(1, 1, 1, cout)), shape=taps.shape)
    return b.where(bad, b.constant_like(taps, np.nan), taps)


def _outside(b, shape, widths, dtype):
    """1 over the padding `widths` around a block of `shape`, 0 over the block (a constant)."""
    inside = b.pad(b.full(shape=shape, value=1.0, dtype=dtype), widths=widths)
    return b.add_scalar(b.negate(inside), scalar=1.0)


def padding_nan(b, x, w, s, p, out):
    """`out`, the conv of NHWC `x` padded by p in place (a loop nest whose register tiles skip the
    taps over padding, codegen/llvm_rows.py _taps), NaN where eager's zero padding meets an infinite
    or NaN weight: at each output (ho, wo, co) whose window reads padding at a tap (kh, kw) where
    some w[kh, kw, ci, co] is not finite, i.e. where the bad taps (1, else 0) of its window
    outnumber those that read the image: the same nest over an image of ones. Weight-sized and
    image-sized work; the select is an epilogue, nothing in the conv's loop changes."""
    kh, kw, cin, cout = w.shape
    b.why = f"{b.why}; then NaN where the padding meets an infinite or NaN weight, as eagerly (padding_nan)"
    bad = b.cast(_bad_taps(b, w, (2,)), dtype=w.dtype)
    ones = b.full(shape=(1, x.shape[1], x.shape[2], 1), value=1.0, dtype=x.dtype)
    inside = Builder.emit(b, "conv", ones, b.reshape(bad, shape=(kh, kw, 1, cout)), stride=s, padding=p)
    total = b.broadcast_to(b.reshape(b.summation(bad, axes=(0, 1)), shape=(1, 1, 1, cout)), shape=inside.shape)
    crossed = b.broadcast_to(b.greater(total, inside), shape=out.shape)
    return b.where(crossed, b.constant_like(out, np.nan), out)


def conv_input_phases(b, x, w, g, s, p):
    """A stride-s conv's input gradient as one stride-1 conv (sub-pixel convolution): padded input
    row q·s + r reads the adjoint's rows q - t at kernel taps r + s·t only, so each phase (r, c)
    of the input is a stride-1 correlation of the adjoint with a T x T sub-kernel (T = ceil(K/s),
    zeros past K); the phases are output channels (r, c, ci) of one conv, then interleaved and
    cropped to the input. Where the adjoint dilated by s ran K·K taps a pixel, s·s of them zeros
    (3x3 stride 2: 4 times the products), and col2im a divisibility guard per tap."""
    batch, ho, wo, cout = g.shape
    cin = w.shape[2]
    phases, taps, first, rows = _phase_grid(x.shape, w.shape, s, p)
    # zero taps to T·s (a kernel past the stride: T = 1 and its K phases as they are)
    zeros = tuple((0, (t - 1) * s + r - k) for t, r, k in zip(taps, phases, w.shape[:2]))
    w = _pad_or_crop(b, w, zeros + ((0, 0), (0, 0)))
    w = b.reshape(w, shape=(taps[0], phases[0], taps[1], phases[1], cin, cout))
    w = b.permute(b.flip(w, axes=(0, 2)), axes=(0, 2, 5, 1, 3, 4))
    w = b.reshape(w, shape=(taps[0], taps[1], cout, phases[0] * phases[1] * cin))
    # the adjoint's rows q0 - (T - 1) .. q0 + rows - 1, zeros outside it
    before = [t - 1 - first for t in taps]
    after = [m + first - o for m, o in zip(rows, (ho, wo))]
    g = _pad_or_crop(b, g, ((0, 0), (before[0], after[0]), (before[1], after[1]), (0, 0)))
    out = b.conv(g, w, stride=1, padding=0)  # (N, rows, cols, R·R·Cin)
    out = b.reshape(out, shape=(batch, rows[0], rows[1], phases[0], phases[1], cin))
    out = b.permute(out, axes=(0, 1, 3, 2, 4, 5))
    if phases != [s, s]:
        out = b.pad(out, widths=((0, 0), (0, 0), (0, s - phases[0]), (0, 0), (0, s - phases[1]), (0, 0)))
    out = b.reshape(out, shape=(batch, rows[0] * s, rows[1] * s, cin))
    start = p - first * s
    return b.slice(out, start=(0, start, start, 0), stop=(batch, start + x.shape[1], start + x.shape[2], cin))


def _phase_grid(shape, wshape, s, p):
    """Per axis of a stride-s conv of NHWC input `shape`: the phases that read a tap (rows r >= K,
    a stride past the kernel, read none), the sub-kernel's taps T = ceil(K/s), the phase row q
    holding padded input row p (input row 0), and the phase rows from it to input row H - 1."""
    phases = [min(s, k) for k in wshape[:2]]
    taps = [-(-k // s) for k in wshape[:2]]
    first = p // s
    rows = [(p + size - 1) // s - first + 1 for size in shape[1:3]]
    return phases, taps, first, rows


def phase_waste(shape, wshape, s, p):
    """The products of a stride-s conv's phases (conv_input_phases) per product of the conv."""
    phases, taps, _, rows = _phase_grid(shape, wshape, s, p)
    ho, wo = ((n + 2 * p - k) // s + 1 for n, k in zip(shape[1:3], wshape[:2]))
    return np.prod(rows + taps + phases) / (ho * wo * wshape[0] * wshape[1])


def _pad_or_crop(b, x, widths):
    """`x` padded by the positive `widths` (before, after) and cropped by the negative ones."""
    start = tuple(max(0, -lo) for lo, _ in widths)
    stop = tuple(d - max(0, -hi) for d, (_, hi) in zip(x.shape, widths))
    if start != (0,) * x.ndim or stop != x.shape:
        x = b.slice(x, start=start, stop=stop)
    if any(lo > 0 or hi > 0 for lo, hi in widths):
        x = b.pad(x, widths=tuple((max(0, lo), max(0, hi)) for lo, hi in widths))
    return x
