"""A padded convolution's forward as one kernel: the conv nest in register tiles reads its padding
in place (ir/ops/conv_rows.py padding_in_place), its taps split where the guards hold for the whole
tile (codegen/llvm_rows.py _taps); bit for bit the padded copy's sums, and equal to numpy's
forward and finite differences over random shapes. Beside it, small kernels over the weight find
the outputs where eager's zero padding meets an infinite or NaN weight (ir/ops/conv_adjoint.py
padding_nan): NaN there, as eagerly, where the tiles skip those taps."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ndlc as ndl
from ndlc import nn
from ndlc.ir import parse
from ndlc.jit.compile import compile_graph


def _kernels(text):
    """The kernels of a scheduled program but padding_nan's over the weight."""
    return len(_conv_kernels(text))


def _conv_kernels(text):
    kernels = [k for k in text.split("\n\n") if k.startswith("kernel ")]
    lowered = lambda k: [line for line in k.splitlines() if line.startswith("  lowered: ")]
    return [k for k in kernels if not lowered(k) or not all(line.endswith("(padding_nan)") for line in lowered(k))]


def test_a_padded_conv_in_register_tiles_is_one_kernel_reading_its_padding_in_place(monkeypatch, avx2_tiles):
    """ResNet9's 4x4 3x3 layer (NCHW planes of 64 bytes: its channels spread over the L1 cache):
    the conv nest reads the input guarded, its tiles check only the taps that cross the padding;
    one kernel where the padding was a kernel of its own, its stores NaN where padding_nan's
    kernels over the weight say the padding meets an infinite or NaN weight."""
    monkeypatch.setenv("NDLC_THREADS", "2")
    graph = parse("""
graph @c(%x: f32[8,32,4,4], %w: f32[3,3,32,32]) {
  %0 = permute(%x, axes=(0, 2, 3, 1)) : f32[8,4,4,32]
  %1 = conv(%0, %w, stride=1, padding=1) : f32[8,4,4,32]
  return %1
}""")
    scheduled = compile_graph(graph).ir("scheduled")
    assert _kernels(scheduled) == 1, scheduled
    kernel = _conv_kernels(scheduled)[0].rstrip("\n") + "\n"
    assert kernel == """\
kernel k4 -> %16
  fuses: %14 broadcast_to, %15 full, %0 permute, %1 conv, %16 where
  lowered: conv 32->32 k3 s1 p1 on 8x4x4: loop nest in register tiles of 4 of Wo 4 x 16 of Cout 32: 16 output \
pixels >= TILED_PIXELS 16; no row tile for Cout 32 x Wo 4; im2col packs 0.15 MB for a gemm; its padding read in \
place; then NaN where the padding meets an infinite or NaN weight, as eagerly (padding_nan)
  lowered: conv 32->32 k3 s1 p1 on 8x4x4: loop nest in register tiles of 4 of Wo 4 x 16 of Cout 32: 16 output \
pixels >= TILED_PIXELS 16; no row tile for Cout 32 x Wo 4; im2col packs 0.15 MB for a gemm; its padding read in place
  stored because: %16: graph output
  not merged into the kernel before: its loops (i0<8 i1<4 i2<4 i3<32 | i4<3 i5<3 i6<32) differ from \
(i0<4 i1<4 i2<32 | i3<3 i4<3)'s loops
  loops: i0<8 i1<4 i2<4 i3<32 | i4<3 i5<3 i6<32
  strategy: rows (blocks of 16 i3 by 4 i2 accumulate side by side; the reductions read strided along i6; \
the taps that cross the padding checked apart)
  parallel over i0 in 4 pieces of 2, taken in turn (2 threads)
  $0 = %x[512*i0 + 4*i1 + i2 + 4*i4 + i5 + 16*i6 - 5 if 0 <= i1 + i4 - 1 < 4 and 0 <= i2 + i5 - 1 < 4]
  $1 = %w[i3 + 3072*i4 + 1024*i5 + 32*i6]
  $2 = %13[128*i1 + 32*i2 + i3]
  phase 0: reduce
    acc0 = add of mul($0, $1)
    store %16[512*i0 + 128*i1 + 32*i2 + i3] = select($2, cast(nan, f32), acc0)
""", kernel


def test_planes_4_kib_apart_are_padded_first():
    """16 channels of 32x32 NCHW planes (4 KiB apart: a tap's loads of every channel in one L1
    set) keep the padding's own kernel, which the nest then reads unguarded."""
    graph = parse("""
graph @c(%x: f32[2,16,32,32], %w: f32[7,7,16,32]) {
  %0 = permute(%x, axes=(0, 2, 3, 1)) : f32[2,32,32,16]
  %1 = conv(%0, %w, stride=2, padding=3) : f32[2,16,16,32]
  return %1
}""")
    scheduled = compile_graph(graph).ir("scheduled")
    assert _kernels(scheduled) == 2 and "fuses: %0 permute, %1 pad" in scheduled, scheduled
    assert "reads its zero-filled elements repeatedly" in scheduled and "checked apart" not in scheduled


def test_three_channels_of_4_kib_planes_are_one_kernel_storing_nchw():
    """nn.Conv(3, 32, 7, stride=2, padding=3) over 32x32 images (the sweep's k7 case): its 3 channels'
    planes, 4 KiB apart, fall three to an L1 set, so the nest reads them padded in place; its 16x16
    NCHW output planes, 1 KiB apart, four to a set, so it stores them itself (passes/permuted_stores.py):
    one kernel where a padded NHWC copy, the conv and the permute back ran; equal to numpy's."""
    np.random.seed(0)
    conv = nn.Conv(3, 32, 7, stride=2, padding=3)
    x = np.random.default_rng(3).standard_normal((4, 3, 32, 32)).astype(np.float32)
    step = ndl.compile(lambda t: conv(t))
    out = step(ndl.Tensor(x)).numpy()
    scheduled = step.ir("scheduled")
    assert _kernels(scheduled) == 1 and "checked apart" in scheduled and "its stores" in scheduled, scheduled
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (3, 3), (3, 3)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (7, 7), axis=(2, 3))[:, :, ::2, ::2]
    want = np.einsum("nchwij,ijcd->ndhw", windows, conv.weight.numpy().astype(np.float64))
    want += conv.bias.numpy().reshape(1, -1, 1, 1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,cin,h,cout,k,s,p", [
    (8, 32, 4, 32, 3, 1, 1),   # ResNet9's 4x4 layer
    (4, 3, 16, 32, 3, 2, 1),   # 3 channels of 1 KiB planes, stride 2
    (2, 3, 32, 32, 7, 2, 3),   # 3 channels of 4 KiB planes, four to an L1 set at most: the sweep's k7
    (3, 5, 11, 16, 5, 1, 2),   # odd sizes: a ragged tile's last block past the channels
    (2, 4, 9, 8, 7, 2, 3),     # the kernel wider than the tile's interior
    (4, 8, 6, 24, 3, 2, 2),    # padding past K // 2
])
def test_the_padding_read_in_place_sums_as_the_padded_copy_bit_for_bit(n, cin, h, cout, k, s, p):
    """The same taps in the same order, a zero's product where a tap reads padding: the conv
    with its padding in place equals the conv over the padded copy bit for bit."""
    o = (h + 2 * p - k) // s + 1
    x = f"%x: f32[{n},{cin},{h},{h}], %w: f32[{k},{k},{cin},{cout}]"
    view = f"%0 = permute(%x, axes=(0, 2, 3, 1)) : f32[{n},{h},{h},{cin}]"
    in_place = parse(f"""
graph @a({x}) {{
  {view}
  %1 = conv(%0, %w, stride={s}, padding={p}) : f32[{n},{o},{o},{cout}]
  return %1
}}""")
    padded = parse(f"""
graph @b({x}) {{
  {view}
  %1 = pad(%0, widths=((0, 0), ({p}, {p}), ({p}, {p}), (0, 0))) : f32[{n},{h + 2 * p},{h + 2 * p},{cin}]
  %2 = conv(%1, %w, stride={s}, padding=0) : f32[{n},{o},{o},{cout}]
  return %2
}}""")
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal((n, cin, h, h)).astype(np.float32),
              rng.standard_normal((k, k, cin, cout)).astype(np.float32)]
    a, b = compile_graph(in_place), compile_graph(padded)
    assert "checked apart" in a.ir("scheduled") and _kernels(a.ir("scheduled")) < _kernels(b.ir("scheduled"))
    np.testing.assert_array_equal(a.run(*arrays)[0], b.run(*arrays)[0])


def test_taps_that_read_only_padding_are_skipped_yet_an_infinite_weight_there_gives_eager_s_nan():
    """ResNet9's 4x4 layer: output row 0's taps at kh = 0 read the padding for the whole tile of
    the row, and column 0's at kw = 0 for that row of the tile: neither is computed. With a NaN
    weight at kh = 0 (output channel 7) or an infinite one at kh = 1, kw = 0 (channel 9), eager's
    zero padding makes row 0 or column 0 NaN (0 * NaN, 0 * inf) too: the compiled conv's NaN are
    eager's, from padding_nan's kernels, not from the skipped taps; with finite weights every
    output is the padded copy's bit for bit (the test above)."""
    graph = parse("""
graph @c(%x: f32[2,32,4,4], %w: f32[3,3,32,32]) {
  %0 = permute(%x, axes=(0, 2, 3, 1)) : f32[2,4,4,32]
  %1 = conv(%0, %w, stride=1, padding=1) : f32[2,4,4,32]
  return %1
}""")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 32, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    w[0, :, 5, 7] = np.nan  # kh = 0, input channel 5, output channel 7
    w[1, 0, 5, 9] = np.inf  # kh = 1, kw = 0, output channel 9
    program = compile_graph(graph)
    assert "checked apart" in program.ir("scheduled")
    (out,) = program.run(x, w)
    with np.errstate(invalid="ignore"):
        eager = ndl.ops.conv(ndl.Tensor(x.transpose(0, 2, 3, 1)), ndl.Tensor(w), stride=1, padding=1).numpy()
    assert np.isnan(out[:, :, :, 7]).all() and np.isnan(out[:, :, 0, 9]).all()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(eager))
    assert np.isfinite(np.delete(out, [7, 9], axis=3)).all()


@pytest.mark.parametrize("n,cin,h,cout,k,s,p", [(2, 32, 4, 32, 3, 1, 1), (2, 3, 16, 32, 3, 2, 1), (2, 3, 12, 16, 7, 2, 3),
                                                (1, 4, 1, 8, 3, 1, 3), (2, 16, 2, 16, 3, 2, 1)])
def test_an_infinite_or_nan_weight_over_the_padding_gives_eager_s_nan_forward_and_gradients(n, cin, h, cout, k, s, p):
    """The tiles' padding read in place, the taps that read only padding cropped (live_taps: a 1x1
    image padded by 3), and the gradients' own padded convs: wherever eager's zero padding meets an
    infinite or NaN weight (0·inf), the compiled output and gradients are NaN as eager's are, and
    equal elsewhere."""
    rng = np.random.default_rng(n * h + k)
    x = rng.standard_normal((n, h, h, cin)).astype(np.float32)
    w = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
    w[0, 0, 0, 1], w[k - 1, k // 2, cin - 1, cout - 2] = np.inf, np.nan

    def step(a, b):
        a.requires_grad = b.requires_grad = True
        y = ndl.ops.conv(a, b, stride=s, padding=p)
        (y * ndl.Tensor(np.ones(y.shape, np.float32))).sum().backward()
        return y, a.grad, b.grad
    with np.errstate(invalid="ignore", over="ignore"):
        eager = [t.numpy() for t in step(ndl.Tensor(x), ndl.Tensor(w))]
        compiled = [t.numpy() for t in ndl.compile(step)(ndl.Tensor(x), ndl.Tensor(w))]
    assert np.isnan(eager[0]).any() and not np.isnan(eager[0]).all()
    for e, c, what in zip(eager, compiled, ("output", "input gradient", "weight gradient")):
        np.testing.assert_array_equal(np.isnan(c), np.isnan(e), err_msg=what)
        np.testing.assert_allclose(c, e, rtol=1e-4, atol=1e-4, err_msg=what)


def _reference(x, w, s, p):
    """NCHW conv of `x` with (K, K, Cin, Cout) `w` in float64 numpy."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    k = w.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return np.einsum("nchwij,ijcd->ndhw", windows, w.astype(np.float64))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3), st.integers(1, 12), st.integers(3, 12), st.integers(1, 20), st.sampled_from([1, 3, 5]),
       st.integers(1, 2), st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_compiled_padded_convs_match_numpy_and_finite_differences(n, cin, h, cout, k, s, p, seed):
    """Random shapes, paddings, strides, odd sizes and channel counts: the compiled forward equals
    numpy's, and its input and weight gradients equal central differences of numpy's loss along
    random directions."""
    assume(h + 2 * p >= k)
    rng = np.random.default_rng(seed)
    np.random.seed(seed % 2**32)
    conv = nn.Conv(cin, cout, k, stride=s, padding=p, bias=False)
    x = rng.standard_normal((n, cin, h, h)).astype(np.float32)
    o = (h + 2 * p - k) // s + 1
    c = rng.standard_normal((n, cout, o, o)).astype(np.float32)

    def step(t, c):
        t.requires_grad = True
        y = conv(t)
        (y * c).sum().backward()
        return y, t.grad, conv.weight.grad
    y, dx, dw = (a.numpy() for a in ndl.compile(step, state=[conv])(x, c))
    w = conv.weight.numpy()
    want = _reference(x, w, s, p)
    scale = np.abs(want).max() + 1
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * scale)

    def loss(xv, wv):
        return float((_reference(xv, wv, s, p) * c).sum())
    eps = 1e-3
    for grad, wrt in ((dx, 0), (dw, 1)):
        for _ in range(2):
            d = rng.standard_normal(grad.shape)
            at = [x.astype(np.float64), w.astype(np.float64)]
            plus, minus = list(at), list(at)
            plus[wrt], minus[wrt] = at[wrt] + eps * d, at[wrt] - eps * d
            numeric = (loss(*plus) - loss(*minus)) / (2 * eps)  # exact but for rounding: the loss is linear in each
            analytic = float((grad.astype(np.float64) * d).sum())
            assert abs(analytic - numeric) <= 1e-4 * np.linalg.norm(grad) * np.linalg.norm(d) + 1e-6, (analytic, numeric)
