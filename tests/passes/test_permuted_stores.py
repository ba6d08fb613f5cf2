"""passes/permuted_stores.py: an elementwise consumer reading a reduction's result in another
order of its axes folds into the reduction's stores (text in, text out), where each element moves
once and the stores stay contiguous along the last loop."""
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


def test_a_consumer_that_would_put_the_stores_in_one_cache_set_stays_apart():
    """An NHWC conv's output permuted to NCHW planes of 4 KiB: along the tile's last loop (the
    channels) its stores would fall in one L1 set, so the permute stays a kernel of its own."""
    text = ROW_CONV.replace("%4: f32[1,4,2,8]", "%4: f32[8,1024]").replace(
        "store %4[16*i0 + 8*i1 + i2]", "store %4[i0 + 4*i1 + 1024*i2]")
    assert fold(text) == text.strip("\n")


def test_a_consumer_whose_stores_fall_four_to_a_cache_set_folds():
    """NCHW planes of 256 elements (1 KiB, a k7 stride-2 conv's 16x16 outputs): a tile's 16
    channels' stores fall four to an L1 set, half its ways (ir/tiles.py FEW_TO_A_SET), and the
    reduction makes them, strided."""
    text = ROW_CONV.replace("%4: f32[1,4,2,8]", "%4: f32[8,256]").replace(
        "store %4[16*i0 + 8*i1 + i2]", "store %4[i0 + 4*i1 + 256*i2]")
    folded = fold(text)
    assert "kernel k1" not in folded and "  %0: " not in folded, folded
    assert folded.endswith("store %4[4*i0 + i1 + 256*i2] = add(acc0, $2)"), folded


def test_a_consumer_whose_strided_stores_spread_over_the_cache_folds():
    """Stores 8 elements (32 bytes) apart along the tile's last loop spread over the L1 sets: the
    reduction makes them, strided."""
    text = ROW_CONV.replace("store %4[16*i0 + 8*i1 + i2]", "store %4[i0 + 4*i1 + 8*i2]")
    assert fold(text) == """
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
    store %4[4*i0 + i1 + 8*i2] = add(acc0, $2)""".strip("\n")


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
