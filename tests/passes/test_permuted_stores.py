"""passes/permuted_stores.py: an elementwise consumer reading a reduction's result in another
order of its axes folds into the reduction's stores (text in, text out), where each element moves
once and the stores stay contiguous along the last loop; a compiled nn.Conv over rows of 16
pixels is then the padding and one tiled kernel writing NCHW, equal to numpy."""
import numpy as np

import ndlc as ndl
from ndlc.ir import parse_kernels
from ndlc.passes.permuted_stores import fold_permuted_consumers

ROW_CONV = """
program @rows(%x, %w, %b) -> (%4)
  %x: f32[1,2,4,10] input
  %w: f32[3,3,2,4] input
  %b: f32[4] input
  %0: f32[1,2,4,8] temp
  %4: f32[1,4,2,8] output

kernel k0 -> %0
  fuses: %0 row_conv
  stored because: %0: read by permute (a reduction result feeds only elementwise epilogues)
  loops: i0<2 i1<4 i2<8 | i3<3 i4<3 i5<2
  $0 = %x[10*i0 + i2 + 10*i3 + i4 + 40*i5]
  $1 = %w[i1 + 24*i3 + 8*i4 + 4*i5]
  phase 0: reduce
    acc0 = add of mul($0, $1)
    store %0[32*i0 + 8*i1 + i2] = acc0

kernel k1 -> %4
  fuses: %2 permute, %1 broadcast_to, %3 add, %4 permute
  stored because: %4: graph output
  not merged into the kernel before: its loops (i0<4 i1<2 i2<8) differ from (i0<2 i1<4 i2<8 | i3<3 i4<3 i5<2)'s loops
  loops: i0<4 i1<2 i2<8
  $0 = %0[8*i0 + 32*i1 + i2]
  $1 = %b[i0]
  store %4[16*i0 + 8*i1 + i2] = add($0, $1)"""


def fold(text):
    return str(fold_permuted_consumers(parse_kernels(text)))


def test_a_permuted_epilogue_becomes_the_reductions_stores():
    """Output rows (N, Ho, Cout, Wo) permuted to NCHW with a bias: one kernel whose store writes
    NCHW along the row, the bias read over the reduction's loops, the temporary gone."""
    assert fold(ROW_CONV) == """
program @rows(%x, %w, %b) -> (%4)
  %x: f32[1,2,4,10] input
  %w: f32[3,3,2,4] input
  %b: f32[4] input
  %4: f32[1,4,2,8] output

kernel k0 -> %4
  fuses: %0 row_conv, %2 permute, %1 broadcast_to, %3 add, %4 permute
  stored because: %4: graph output
  merged: %4 (%2 permute, %1 broadcast_to, %3 add, %4 permute) read %0 in another order: its stores
  loops: i0<2 i1<4 i2<8 | i3<3 i4<3 i5<2
  $0 = %x[10*i0 + i2 + 10*i3 + i4 + 40*i5]
  $1 = %w[i1 + 24*i3 + 8*i4 + 4*i5]
  $2 = %b[i1]
  phase 0: reduce
    acc0 = add of mul($0, $1)
    store %4[8*i0 + 16*i1 + i2] = add(acc0, $2)""".strip("\n")


def test_a_consumer_that_would_scatter_the_stores_stays_apart():
    """An NHWC conv's output permuted to NCHW: along the tile's last loop (the channels) the NCHW
    stores would be a plane apart, so the permute stays a kernel of its own."""
    text = ROW_CONV.replace("store %4[16*i0 + 8*i1 + i2]", "store %4[i0 + 4*i1 + 8*i2]")
    assert fold(text) == text.strip("\n")


def test_a_consumer_that_reads_an_element_twice_or_a_shared_result_stays_apart():
    """A consumer broadcasting the result (each element read twice), and a result another kernel
    reads too, are not folded."""
    twice = ROW_CONV.replace("$0 = %0[8*i0 + 32*i1 + i2]", "$0 = %0[32*i1 + i2]")
    assert fold(twice) == twice.strip("\n")
    shared = ROW_CONV.replace("-> (%4)", "-> (%4, %5)").replace("  %4: f32[1,4,2,8] output", """  %4: f32[1,4,2,8] output
  %5: f32[1,2,4,8] output""") + """

kernel k2 -> %5
  fuses: %5 exp
  stored because: %5: graph output
  loops: i0<64
  $0 = %0[i0]
  store %5[i0] = exp($0)"""
    assert fold(shared) == shared.strip("\n")


def test_a_consumer_reading_what_a_kernel_in_between_writes_stays_apart():
    """The bias computed by a kernel between the reduction and its consumer: folding the consumer
    into the reduction would read it before it is written."""
    text = ROW_CONV.replace("-> (%4)", "-> (%4, %c)").replace("  %4: f32[1,4,2,8] output", """  %4: f32[1,4,2,8] output
  %c: f32[4] output""").replace("\n\nkernel k1 -> %4", """

kernel kc -> %c
  fuses: %c exp
  stored because: %c: graph output
  loops: i0<4
  $0 = %b[i0]
  store %c[i0] = exp($0)

kernel k1 -> %4""").replace("$1 = %b[i0]", "$1 = %c[i0]")
    assert "kernel kc" in text and "$1 = %c[i0]" in text
    assert fold(text) == text.strip("\n")


def test_a_compiled_conv_over_rows_writes_nchw_from_its_tiles():
    """nn.Conv(4, 8, 3) over 16 x 16 images: the input padded channels-first, then one kernel
    (row_conv in tiles of channels x pixels, the bias and nn.Conv's permute in its stores);
    the output equals numpy's."""
    rng = np.random.default_rng(0)
    conv = ndl.nn.Conv(4, 8, 3)
    x = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    step = ndl.compile(lambda t: conv(t), state=[conv])
    out = step(x).numpy()
    w, b = conv.weight.numpy(), conv.bias.numpy()
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    expect = np.einsum("nchwij,ijcd->ndhw", windows, w) + b[:, None, None]
    np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-4)
    fused = step.ir("fused")
    assert fused.count("\nkernel ") == 2 and "read %" in fused and "in another order: its stores" in fused
    assert "blocks of 16 i3 by 4 i2" in step.ir("scheduled")


def test_a_compiled_conv_over_ragged_rows_stores_only_the_row():
    """nn.Conv(16, 8, 3) over 14 x 14 images: rows of 14 in tiles of 8 pixels, the last block
    computing 8 to store 6 from planes padded past the row, the bias and NCHW in its stores;
    forward and gradients equal numpy's (the gradients take the conv rule, not the rows')."""
    rng = np.random.default_rng(1)
    conv = ndl.nn.Conv(16, 8, 3)
    x = rng.standard_normal((2, 16, 14, 14)).astype(np.float32)
    c = rng.standard_normal((2, 8, 14, 14)).astype(np.float32)

    def step(t, c):
        t.requires_grad = True
        y = conv(t)
        (y * c).sum().backward()
        return y, t.grad, conv.weight.grad
    compiled = ndl.compile(step, state=[conv])
    out, dx, dw = (a.numpy() for a in compiled(x, c))
    w, b = conv.weight.numpy(), conv.bias.numpy()
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    np.testing.assert_allclose(out, np.einsum("nchwij,ijcd->ndhw", windows, w) + b[:, None, None], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, np.einsum("nchwij,ndhw->ijcd", windows, c), rtol=1e-4, atol=1e-3)
    flipped = np.lib.stride_tricks.sliding_window_view(np.pad(c, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    np.testing.assert_allclose(dx, np.einsum("ndhwij,ijcd->nchw", flipped, w[::-1, ::-1]), rtol=1e-4, atol=1e-3)
    assert "row_conv(" in compiled.ir("decomposed")
    assert "blocks of 8 i3 by 8 i2 accumulate side by side, the last computing 8 to store 6" in compiled.ir("scheduled")
