"""Convolutions whose output channels fit no register tile but fill 3/4 of whole vectors (12 of
16) run the conv nest in tiles over the channels rounded up, zero weights in the spare ones, which
a slice crops (ir/ops/conv.py _widened), where a packing and a gemm of few columns ran: equal to
numpy's forward and gradients, and the same bits on one and two threads."""
import numpy as np
import pytest

from gradcheck import compiled_conv_step
from ndlc import nn
from ndlc.ir import parse
from ndlc.jit.compile import compile_graph


def _graph(n, cin, h, cout, k, s, p):
    o = (h + 2 * p - k) // s + 1
    return parse(f"""
graph @c(%x: f32[{n},{cin},{h},{h}], %w: f32[{k},{k},{cin},{cout}]) {{
  %0 = permute(%x, axes=(0, 2, 3, 1)) : f32[{n},{h},{h},{cin}]
  %1 = conv(%0, %w, stride={s}, padding={p}) : f32[{n},{o},{o},{cout}]
  return %1
}}""")


def test_twelve_channels_run_in_tiles_of_sixteen(monkeypatch, avx2_tiles):
    """The sweep's 64x5x9x9 -> 12 k5 stride 2 layer (shrunk in the batch): the weight padded to
    16 channels, the nest in tiles of 5 pixels x 16 channels reading its padding in place, the
    spare channels cropped."""
    monkeypatch.setenv("NDLC_THREADS", "2")
    scheduled = compile_graph(_graph(4, 5, 9, 12, 5, 2, 2)).ir("scheduled")
    # the weight padded (with padding_nan's test of its taps), padding_nan's three small kernels, the nest, the crop
    assert scheduled.count("\nkernel ") == 6 and "matmul" not in scheduled, scheduled
    assert "$0 = %w[60*i0 + i1 + 12*i2 if 0 <= i1 < 12]" in scheduled, scheduled
    start = scheduled.index("kernel k4")
    assert scheduled[start:scheduled.index("kernel k5")] == """\
kernel k4 -> %17
  fuses: %15 broadcast_to, %16 full, %0 permute, %2 conv, %17 where
  lowered: conv 5->12 k5 s2 p2 on 4x9x9: loop nest in register tiles over Cout 12 widened to 16 (fills 0.75 >= \
WIDENED_FILL 0.75), the spare outputs cropped: no register tile for Wo 5 x Cout 12; then conv 5->16 k5 s2 p2 on 4x9x9: \
loop nest in register tiles of 5 of Wo 5 x 16 of Cout 16: 25 output pixels >= TILED_PIXELS 16; stride 2; im2col packs \
0.05 MB for a gemm; its padding read in place; then NaN where the padding meets an infinite or NaN weight, as eagerly \
(padding_nan)
  lowered: conv 5->12 k5 s2 p2 on 4x9x9: loop nest in register tiles over Cout 12 widened to 16 (fills 0.75 >= \
WIDENED_FILL 0.75), the spare outputs cropped: no register tile for Wo 5 x Cout 12; then conv 5->16 k5 s2 p2 on 4x9x9: \
loop nest in register tiles of 5 of Wo 5 x 16 of Cout 16: 25 output pixels >= TILED_PIXELS 16; stride 2; im2col packs \
0.05 MB for a gemm; its padding read in place
  stored because: %17: read by slice (a reduction result feeds only elementwise epilogues)
  not merged into the kernel before: its loops (i0<4 i1<5 i2<5 i3<16 | i4<5 i5<5 i6<5) differ from \
(i0<5 i1<5 i2<16 | i3<5 i4<5)'s loops
  loops: i0<4 i1<5 i2<5 i3<16 | i4<5 i5<5 i6<5
  strategy: rows (blocks of 16 i3 by 5 i2 accumulate side by side; the reductions read strided along i6; \
the taps that cross the padding checked apart)
  parallel over i0 in 4 pieces of 1, taken in turn (2 threads)
  $0 = %x[405*i0 + 18*i1 + 2*i2 + 9*i4 + i5 + 81*i6 - 20 if 0 <= 2*i1 + i4 - 2 < 9 and 0 <= 2*i2 + i5 - 2 < 9]
  $1 = %1[i3 + 400*i4 + 80*i5 + 16*i6]
  $2 = %14[80*i1 + 16*i2 + i3]
  phase 0: reduce
    acc0 = add of mul($0, $1)
    store %17[400*i0 + 80*i1 + 16*i2 + i3] = select($2, cast(nan, f32), acc0)

""", scheduled


def test_channels_that_fill_too_little_of_a_vector_keep_the_gemm():
    """5 channels fill 5/8 of a vector: the packing and the batch-folded gemm, no widened weight."""
    scheduled = compile_graph(_graph(4, 5, 9, 5, 5, 2, 2)).ir("scheduled")
    assert "sgemm" in scheduled and "f32[5,5,5,8]" not in scheduled, scheduled


def _reference(x, w, s, p):
    """NCHW conv of `x` with (K, K, Cin, Cout) `w` in float64 numpy."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    k = w.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return np.einsum("nchwij,ijcd->ndhw", windows, w.astype(np.float64))


# (N, Cin, H, Cout, K, stride, padding, the widened weights): the sweep's 12-channel layer (and its
# input gradient's phases, 4 x 5 = 20 channels); 6 -> 8 channels over images too small for NCHW rows;
# 28 -> 32 over 4x4 images; the sweep's k7 stride-2 layer, whose input gradient's phases are 4 x 3 = 12
@pytest.mark.parametrize("n,cin,h,cout,k,s,p,widened", [
    (6, 5, 9, 12, 5, 2, 2, ("f32[5,5,5,16]", "f32[3,3,12,24]")), (5, 3, 5, 6, 3, 1, 1, ("f32[3,3,3,8]",)),
    (4, 7, 4, 28, 3, 1, 1, ("f32[3,3,7,32]",)), (2, 3, 32, 32, 7, 2, 3, ("f32[4,4,32,16]",))])
def test_widened_convs_match_numpy_with_one_threads_bits_on_two(n, cin, h, cout, k, s, p, widened, monkeypatch):
    rng = np.random.default_rng(h)
    x = rng.standard_normal((n, cin, h, h)).astype(np.float32)
    o = (h + 2 * p - k) // s + 1
    c = rng.standard_normal((n, cout, o, o)).astype(np.float32)
    results = {}
    for threads in (1, 2):
        monkeypatch.setenv("NDLC_THREADS", str(threads))
        monkeypatch.setenv("NDLC_TEAM", "budget")
        np.random.seed(0)
        conv = nn.Conv(cin, cout, k, stride=s, padding=p, bias=False)
        compiled = compiled_conv_step(conv, output=True)
        results[threads] = [a.numpy() for a in compiled(x, c)]
        pads = [line for line in compiled.ir("decomposed").splitlines() if " pad(" in line]
        assert all(any(line.endswith(f": {t}") for line in pads) for t in widened), pads
    assert all(a.tobytes() == b.tobytes() for a, b in zip(results[1], results[2]))
    y, dx, dw = results[1]
    w = conv.weight.numpy().astype(np.float64)
    want = _reference(x, w, s, p)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * (np.abs(want).max() + 1))
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p))),
                                                       (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :o, :o]
    want_dw = np.einsum("nchwij,ndhw->ijcd", windows, c.astype(np.float64))
    np.testing.assert_allclose(dw, want_dw, rtol=1e-4, atol=1e-4 * (np.abs(want_dw).max() + 1))
    xp = np.zeros((n, cin, h + 2 * p + k, h + 2 * p + k))
    for i in range(k):
        for j in range(k):
            xp[:, :, i:i + s * o:s, j:j + s * o:s] += np.einsum("ndhw,cd->nchw", c.astype(np.float64), w[i, j])
    want_dx = xp[:, :, p:p + h, p:p + h]
    np.testing.assert_allclose(dx, want_dx, rtol=1e-4, atol=1e-4 * (np.abs(want_dx).max() + 1))
