"""canonical_loops as text: kernels lowered from a graph go in, the same kernels over their loops of
more than one iteration come out; then what that lets merging do, and the results it computes."""
import numpy as np

from ndlc.ir import interpret, parse
from ndlc.jit.pipeline import compile_graph
from ndlc.passes.canonical import canonical_loops, merged_outer_loops
from ndlc.passes.fusion import fuse, lower

KEEPDIMS = """
graph @bn(%x: f32[8,4], %eps: f32[]) {
  %0 = summation(%x, axes=(0,)) : f32[4]
  %1 = reshape(%0, shape=(1, 4)) : f32[1,4]
  %2 = broadcast_to(%eps, shape=(1, 4)) : f32[1,4]
  %3 = add(%1, %2) : f32[1,4]
  %4 = power_scalar(%3, scalar=-0.5) : f32[1,4]
  %5 = broadcast_to(%4, shape=(8, 4)) : f32[8,4]
  %6 = multiply(%x, %5) : f32[8,4]
  return %6
}"""

UNIT_AXES = """
graph @r(%x: f32[1,4,1], %y: f32[1,1]) {
  %0 = summation(%x, axes=(2,)) : f32[1,4]
  %1 = exp(%y) : f32[1,1]
  %2 = summation(%x, axes=(0, 1, 2)) : f32[]
  return %0, %1, %2
}"""


def canonical_kernels(text):
    before = lower(parse(text))
    return [str(k) for k in before.kernels], [str(k) for k in canonical_loops(before).kernels]


def test_a_keepdims_statistic_loses_its_unit_loop_and_nothing_else_changes():
    before, after = canonical_kernels(KEEPDIMS)
    assert before[1] == """\
kernel k1 -> %4
  fuses: %1 reshape, %2 broadcast_to, %3 add, %4 power_scalar
  stored because: %4: broadcast_to reads elements repeatedly
  loops: i0<1 i1<4
  $0 = %0[i1]
  $1 = %eps[0]
  store %4[4*i0 + i1] = div(1, sqrt(add($0, $1)))"""
    assert after[1] == """\
kernel k1 -> %4
  fuses: %1 reshape, %2 broadcast_to, %3 add, %4 power_scalar
  stored because: %4: broadcast_to reads elements repeatedly
  loops: i0<4
  $0 = %0[i0]
  $1 = %eps[0]
  store %4[i0] = div(1, sqrt(add($0, $1)))"""
    assert (before[0], before[2]) == (after[0], after[2])  # no unit loops there


def test_a_reduction_keeps_one_inner_loop_and_unit_shapes_become_scalar_loops():
    _, after = canonical_kernels(UNIT_AXES)
    assert "\n".join(after) == """\
kernel k0 -> %0
  fuses: %0 summation
  stored because: %0: graph output
  loops: i0<4 | i1<1
  $0 = %x[i0]
  phase 0: reduce
    acc0 = add of $0
    store %0[i0] = acc0
kernel k1 -> %1
  fuses: %1 exp
  stored because: %1: graph output
  loops: (scalar)
  $0 = %y[0]
  store %1[0] = exp($0)
kernel k2 -> %2
  fuses: %2 summation
  stored because: %2: graph output
  loops: (scalar) | i0<4
  $0 = %x[i0]
  phase 0: reduce
    acc0 = add of $0
    store %2[0] = acc0"""


def test_the_keepdims_statistic_then_joins_the_reduction_it_reads():
    (statistics, _) = fuse(parse(KEEPDIMS)).kernels
    assert str(statistics) == """\
kernel k0 -> %4
  fuses: %0 summation, %1 reshape, %2 broadcast_to, %3 add, %4 power_scalar
  stored because: %4: broadcast_to reads elements repeatedly
  merged: %4 (in the pass of phase 0, once per outer point)
  merged: %0 recomputed in registers, not stored
  loops: i0<4 | i1<8
  $0 = %x[i0 + 4*i1]
  $1 = %eps[0]
  phase 0: reduce
    acc0 = add of $0
    store %4[i0] = div(1, sqrt(add(acc0, $1)))"""


def test_kernels_without_unit_loops_compute_what_the_interpreter_does():
    rng = np.random.default_rng(0)
    for text, shapes in ((KEEPDIMS, [(8, 4), ()]), (UNIT_AXES, [(1, 4, 1), (1, 1)])):
        graph = parse(text)
        args = [rng.random(s).astype(np.float32) for s in shapes]
        for got, want in zip(compile_graph(graph).run(*args), interpret(graph, *args)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-6)


FIRST_AXIS = """
graph @s(%x: f32[4,5,3]) {
  %0 = summation(%x, axes=(0,)) : f32[5,3]
  return %0
}"""

TRANSPOSING = """
graph @t(%x: f32[4,5,3]) {
  %0 = permute(%x, axes=(0, 2, 1)) : f32[4,3,5]
  %1 = summation(%0, axes=(0,)) : f32[3,5]
  return %1
}"""


def merged_kernels(text):
    fused = fuse(parse(text))
    before = [str(k) for k in fused.kernels]
    return before, [str(k) for k in merged_outer_loops(fused).kernels]


def test_outer_loops_that_memory_runs_on_across_merge_into_one():
    before, after = merged_kernels(FIRST_AXIS)
    assert before == ["""\
kernel k0 -> %0
  fuses: %0 summation
  stored because: %0: graph output
  loops: i0<5 i1<3 | i2<4
  $0 = %x[3*i0 + i1 + 15*i2]
  phase 0: reduce
    acc0 = add of $0
    store %0[3*i0 + i1] = acc0"""]
    assert after == ["""\
kernel k0 -> %0
  fuses: %0 summation
  stored because: %0: graph output
  loops: i0<15 | i1<4
  $0 = %x[i0 + 15*i1]
  phase 0: reduce
    acc0 = add of $0
    store %0[i0] = acc0"""]


def test_outer_loops_a_load_strides_across_stay_apart():
    before, after = merged_kernels(TRANSPOSING)
    assert "loops: i0<3 i1<5 | i2<4" in before[0]
    assert after == before


def test_merged_loops_sum_each_output_in_the_same_order():
    """Over 4 rows the schedule keeps 'rows' (each output summed row after row, as numpy sums
    along a first axis), so the sums equal numpy's bit for bit; a max over a merged 4-D nest too."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    for text in (FIRST_AXIS, TRANSPOSING):
        graph = parse(text)
        (got,) = compile_graph(graph).run(x)
        (want,) = interpret(graph, x)
        assert np.array_equal(got, want)
    graph = parse("""
graph @m(%x: f32[6,3,7,5]) {
  %0 = max(%x, axes=(0,)) : f32[3,7,5]
  return %0
}""")
    kernels = compile_graph(graph).ir("scheduled")
    assert "loops: i0<105 | i1<6" in kernels
    y = rng.standard_normal((6, 3, 7, 5)).astype(np.float32)
    assert np.array_equal(compile_graph(graph).run(y)[0], y.max(axis=0))


PLANES = """
graph @p(%x: f32[2,3,4,5]) {
  %0 = summation(%x, axes=(0, 2, 3)) : f32[3]
  %1 = max(%x, axes=(2, 3)) : f32[2,3]
  return %0, %1
}"""


def test_inner_loops_that_memory_runs_on_across_merge_into_one():
    """A sum over (0, 2, 3) of NCHW (BatchNorm2d's statistics) reads each image's plane as rows of
    W: one reduced loop over H*W instead, whose vectors run along a whole plane; the loop over
    images stays apart (the channel lies between)."""
    before, after = merged_kernels(PLANES)
    assert "loops: i0<3 | i1<2 i2<4 i3<5" in before[0] and "loops: i0<2 i1<3 | i2<4 i3<5" in before[1]
    assert after == ["""\
kernel k0 -> %0
  fuses: %0 summation
  stored because: %0: graph output
  loops: i0<3 | i1<2 i2<20
  $0 = %x[20*i0 + 60*i1 + i2]
  phase 0: reduce
    acc0 = add of $0
    store %0[i0] = acc0""", """\
kernel k1 -> %1
  fuses: %1 max
  stored because: %1: graph output
  not merged into the kernel before: its loops (i0<2 i1<3 | i2<4 i3<5) differ from (i0<3 | i1<2 i2<4 i3<5)'s loops
  loops: i0<6 | i1<20
  $0 = %x[20*i0 + i1]
  phase 0: reduce
    acc0 = max of $0
    store %1[i0] = acc0"""]


def test_inner_loops_merged_compute_what_the_interpreter_does():
    """Each output reads the same elements in the same order: a max is numpy's bit for bit, a sum
    (its vector partials grouped along the merged loop) within rounding."""
    graph = parse(PLANES)
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5)).astype(np.float32)
    total, most = compile_graph(graph).run(x)
    assert np.array_equal(most, x.max(axis=(2, 3)))
    np.testing.assert_allclose(total, interpret(graph, x)[0], rtol=1e-5)


REVERSED = """
graph @v(%x: f32[6,5,7]) {
  %0 = permute(%x, axes=(2, 1, 0)) : f32[7,5,6]
  %1 = summation(%0, axes=(1,)) : f32[7,6]
  return %1
}"""

SWAPPED = """
graph @u(%x: f32[6,5,7]) {
  %0 = permute(%x, axes=(0, 2, 1)) : f32[6,7,5]
  %1 = summation(%0, axes=(1, 2)) : f32[6]
  return %1
}"""


def test_a_contiguous_outer_loop_moves_last_so_the_rows_blocks_read_memory_in_order():
    """x.permute((2, 1, 0)).sum((1,)): the last outer loop strides 35 elements, the first 1; swapped,
    each 'rows' block of outputs reads a row of x, and each output sums in its order: bit for bit."""
    before, after = merged_kernels(REVERSED)
    assert "loops: i0<7 i1<6 | i2<5\n  $0 = %x[i0 + 35*i1 + 7*i2]" in before[0]
    assert after == ["""\
kernel k0 -> %1
  fuses: %0 permute, %1 summation
  stored because: %1: graph output
  loops: i0<6 i1<7 | i2<5
  $0 = %x[35*i0 + i1 + 7*i2]
  phase 0: reduce
    acc0 = add of $0
    store %1[i0 + 6*i1] = acc0"""]
    graph = parse(REVERSED)
    x = np.random.default_rng(3).standard_normal((6, 5, 7)).astype(np.float32)
    program = compile_graph(graph)
    assert "strategy: rows" in program.ir("scheduled")
    assert np.array_equal(program.run(x)[0], interpret(graph, x)[0])


def test_a_contiguous_inner_loop_moves_innermost_and_merges():
    """x.permute((0, 2, 1)).sum((1, 2)) read each row of x down its columns; swapped, the reduced
    loops run along memory and merge into one over the image (a sum's partials regroup: rounding)."""
    before, after = merged_kernels(SWAPPED)
    assert "loops: i0<6 | i1<7 i2<5\n  $0 = %x[35*i0 + i1 + 7*i2]" in before[0]
    assert "loops: i0<6 | i1<35\n  $0 = %x[35*i0 + i1]" in after[0]
    graph = parse(SWAPPED)
    x = np.random.default_rng(4).standard_normal((6, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(compile_graph(graph).run(x)[0], interpret(graph, x)[0], rtol=1e-5)


def test_a_max_over_reordered_loops_is_numpys_bit_for_bit():
    graph = parse(SWAPPED.replace("summation", "max"))
    x = np.random.default_rng(5).standard_normal((6, 5, 7)).astype(np.float32)
    assert np.array_equal(compile_graph(graph).run(x)[0], x.max(axis=(1, 2)))


TRANSPOSE_ADD = """
graph @t(%x: f32[48,64], %y: f32[64,48]) {
  %0 = transpose(%x, axes=(0, 1)) : f32[64,48]
  %1 = add(%0, %y) : f32[64,48]
  return %1
}"""


def test_a_transposing_load_reads_a_cache_line_at_a_time():
    """x.T + y stores along its last loop and reads x across it: the loop that steps x by one
    element is cut into blocks of 16 (a cache line of float32), the block innermost."""
    before, after = merged_kernels(TRANSPOSE_ADD)
    assert "loops: i0<64 i1<48\n  $0 = %x[i0 + 64*i1]\n  $1 = %y[48*i0 + i1]" in before[0]
    assert "loops: i0<4 i1<48 i2<16\n  $0 = %x[16*i0 + 64*i1 + i2]\n  $1 = %y[768*i0 + i1 + 48*i2]\n" \
           "  store %1[768*i0 + i1 + 48*i2] = add($0, $1)" in after[0]


def test_blocked_transposes_compute_numpys_bits_and_others_stay_as_they_are():
    """float32 and float64 (blocks of 8), a permute of three axes, a last loop too short to block,
    and rows of 4 KiB (16 rows' lines in one L1 set: blocks of 8) and 2 KiB (two sets: 16)."""
    rng = np.random.default_rng(6)
    for dtype, shape, axes, loops in [("f32", (48, 64), (1, 0), "i0<4 i1<48 i2<16"),
                                      ("f32", (1024, 32), (1, 0), "i0<4 i1<1024 i2<8"),
                                      ("f32", (512, 32), (1, 0), "i0<2 i1<512 i2<16"),
                                      ("f64", (24, 40), (1, 0), "i0<5 i1<24 i2<8"),
                                      ("f32", (3, 32, 20), (0, 2, 1), "i0<3 i1<20 i2<32"),  # 20: no whole line
                                      ("f32", (8, 64), (1, 0), "i0<64 i1<8")]:  # rows of 8: short
        out = tuple(shape[a] for a in axes)
        text = (f"graph @p(%x: {dtype}[{','.join(map(str, shape))}]) {{\n"
                f"  %0 = permute(%x, axes={axes}) : {dtype}[{','.join(map(str, out))}]\n"
                f"  %1 = negate(%0) : {dtype}[{','.join(map(str, out))}]\n  return %1\n}}")
        _, after = merged_kernels(text)
        assert f"loops: {loops}\n" in after[0]
        x = rng.standard_normal(shape).astype(np.float32 if dtype == "f32" else np.float64)
        assert np.array_equal(compile_graph(parse(text)).run(x)[0], interpret(parse(text), x)[0])
