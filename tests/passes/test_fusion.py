"""Kernel IR as text: what fuses into one kernel, why a value is stored, how views become index
maps; plus the index arithmetic and error paths."""
import pytest

from ndlc.errors import UnsupportedError
from ndlc.passes.fusion import fuse
from ndlc.ir.indexing import Access, Affine, contiguous
from ndlc.ir import Builder, Graph, TensorType, parse, registry
from ndlc.ir.registry import AxisIndex, OpDef


def kernels(text):
    return fuse(parse(text))


def test_elementwise_chain_with_broadcast_is_one_kernel():
    program = kernels("""
graph @chain(%x: f32[4,5], %b: f32[5]) {
  %0 = broadcast_to(%b, shape=(4, 5)) : f32[4,5]
  %1 = multiply(%x, %0) : f32[4,5]
  %2 = add_scalar(%1, scalar=1.0) : f32[4,5]
  %3 = exp(%2) : f32[4,5]
  %4 = tanh(%3) : f32[4,5]
  return %4
}""")
    assert str(program) == """\
program @chain(%x, %b) -> (%4)
  %x: f32[4,5] input
  %b: f32[5] input
  %4: f32[4,5] output

kernel k0 -> %4
  fuses: %0 broadcast_to, %1 multiply, %2 add_scalar, %3 exp, %4 tanh
  stored because: %4: graph output
  loops: i0<4 i1<5
  $0 = %x[5*i0 + i1]
  $1 = %b[i1]
  store %4[5*i0 + i1] = tanh(exp(add(mul($0, $1), 1.0)))"""


def test_reduction_takes_prologue_and_epilogue_and_a_row_of_phases_shares_one_kernel():
    program = kernels("""
graph @lse(%x: f32[3,4]) {
  %0 = max(%x, axes=(1,)) : f32[3]
  %1 = reshape(%0, shape=(3, 1)) : f32[3,1]
  %2 = broadcast_to(%1, shape=(3, 4)) : f32[3,4]
  %3 = negate(%2) : f32[3,4]
  %4 = add(%x, %3) : f32[3,4]
  %5 = exp(%4) : f32[3,4]
  %6 = summation(%5, axes=(1,)) : f32[3]
  %7 = log(%6) : f32[3]
  %8 = add(%7, %0) : f32[3]
  return %8
}""")
    (kernel,) = program.kernels
    assert str(kernel) == """\
kernel k0 -> %0, %8
  fuses: %0 max, %1 reshape, %2 broadcast_to, %3 negate, %4 add, %5 exp, %6 summation, %7 log, %8 add
  stored because: %0: used by 2 nodes; %8: graph output
  merged: %8 (a later phase of the same loops)
  loops: i0<3 | i1<4
  $0 = %x[4*i0 + i1]
  $1 = %0[i0]
  phase 0: reduce
    acc0 = max of $0
    store %0[i0] = acc0
  phase 1: reduce
    acc0 = add of exp(add($0, neg($1)))
    store %8[i0] = add(log(acc0), $1)"""


def test_padded_conv_reads_through_a_guarded_load():
    program = kernels("""
graph @conv(%x: f32[2,4,4,2], %w: f32[3,3,2,5]) {
  %0 = conv(%x, %w, stride=2, padding=1) : f32[2,2,2,5]
  return %0
}""")
    text = str(program)
    assert "loops: i0<2 i1<2 i2<2 i3<5 | i4<3 i5<3 i6<2" in text
    assert "$0 = %x[32*i0 + 16*i1 + 4*i2 + 8*i4 + 2*i5 + i6 - 10 if 0 <= 2*i1 + i4 - 1 < 4 and " \
           "0 <= 2*i2 + i5 - 1 < 4]" in text


def test_padding_a_loop_nest_reads_repeatedly_is_stored_and_read_unguarded():
    program = kernels("""
graph @conv(%x: f32[2,4,6,3], %w: f32[3,3,3,8]) {
  %0 = pad(%x, widths=((0, 0), (1, 1), (1, 1), (0, 0))) : f32[2,6,8,3]
  %1 = conv(%0, %w, stride=1, padding=0) : f32[2,4,6,8]
  return %1
}""")
    pad, conv = program.kernels
    assert pad.stores[0].why == "conv reads its zero-filled elements repeatedly: filled once, not checked at every read"
    assert str(conv.loads[0]) == "%0[144*i0 + 24*i1 + 3*i2 + 24*i4 + 3*i5 + i6]"


def test_a_computed_operand_a_loop_nest_reads_repeatedly_is_computed_once():
    program = kernels("""
graph @conv(%x: f32[2,6,8,3], %m: f32[2,6,8,3], %w: f32[3,3,3,8]) {
  %0 = multiply(%x, %m) : f32[2,6,8,3]
  %1 = conv(%0, %w, stride=1, padding=0) : f32[2,4,6,8]
  return %1
}""")
    product, conv = program.kernels  # each element of %0 read 3*3*8 * (2*4*6)/(2*6*8) = 36 times
    assert product.stores[0].why == ("conv reads each element 36 times: computed once, not at every read "
                                     "(1 operations x 35 >= 8)")
    assert str(conv.loads[0]) == "%0[144*i0 + 24*i1 + 3*i2 + 24*i4 + 3*i5 + i6]"


def test_a_computed_operand_a_loop_nest_reads_a_few_times_is_recomputed():
    program = kernels("""
graph @pool(%x: f32[2,3,9,9]) {
  %0 = negate(%x) : f32[2,3,9,9]
  %1 = max_pool2d(%0, kernel=3, stride=2) : f32[2,3,4,4]
  return %1
}""")
    (pool,) = program.kernels  # each element of %0 read 2*3*4*4*9 / (2*3*9*9) = 1.8 times on average
    assert "neg($0)" in str(pool)


def test_a_transposed_weight_a_loop_nest_reads_across_its_rows_is_copied_contiguous():
    program = kernels("""
graph @conv(%x: f32[2,6,10,3], %w: f32[3,3,8,3]) {
  %0 = permute(%w, axes=(0, 1, 3, 2)) : f32[3,3,3,8]
  %1 = conv(%x, %0, stride=1, padding=0) : f32[2,4,8,8]
  return %1
}""")
    copy, conv = program.kernels
    assert copy.stores[0].why == ("conv reads it across its rows, along the loop its outputs lie along: "
                                  "copied once, contiguous")
    assert str(conv.loads[1]) == "%0[i3 + 72*i4 + 24*i5 + 8*i6]"


def test_a_view_of_a_value_stored_after_the_view_was_defined_is_a_blas_operand_as_it_is():
    """%1 is defined while %0 is still recomputed where read; %0 is then stored for the first
    product, so the second reads it transposed."""
    program = fuse(parse("""
graph @hot(%a: f32[6,5], %b: f32[6,5], %w: f32[5,4], %g: f32[6,4]) {
  %0 = add(%a, %b) : f32[6,5]
  %1 = transpose(%0, axes=(0, 1)) : f32[5,6]
  %2 = matmul(%0, %w) : f32[6,4]
  %3 = matmul(%1, %g) : f32[5,4]
  return %2, %3
}"""), use_blas=True)
    add, product, gradient = program.kernels
    assert add.outputs() == ["0"] and product.fused == ("%2 matmul",)
    assert "  call sgemm(%0^T, %g) -> %3  (5x6 @ 6x4)" in str(gradient)


def test_the_computed_operand_of_a_transpose_blas_reads_is_stored_in_its_own_order():
    """%0 is stored row by row (not its transpose written across its rows), and BLAS reads it
    transposed in place."""
    program = fuse(parse("""
graph @t(%a: f32[6,5], %g: f32[6,4]) {
  %0 = exp(%a) : f32[6,5]
  %1 = transpose(%0, axes=(0, 1)) : f32[5,6]
  %2 = matmul(%1, %g) : f32[5,4]
  return %2
}"""), use_blas=True)
    exp, product = program.kernels
    assert exp.outputs() == ["0"] and str(exp.stores[0]) == "%0[5*i0 + i1] = exp($0)"
    assert exp.stores[0].why == "its transpose is handed to BLAS, which reads it transposed in place"
    assert "  call sgemm(%0^T, %g) -> %2  (5x6 @ 6x4)" in str(product)


def test_reshape_of_a_transposed_view_is_read_in_the_order_of_its_copy():
    program = kernels("""
graph @t(%x: f32[2,3]) {
  %0 = transpose(%x, axes=(0, 1)) : f32[3,2]
  %1 = reshape(%0, shape=(6,)) : f32[6]
  %2 = exp(%1) : f32[6]
  return %2
}""")
    (kernel,) = program.kernels  # exp over (6,) regrouped to the copy's (3, 2): the copy is not stored
    assert str(kernel.loads[0]) == "%x[i0 + 3*i1]" and str(kernel.stores[0]) == "%2[2*i0 + i1] = exp($0)"
    assert "%0 recomputed in registers, not stored" in kernel.merged


def test_output_that_is_an_input_is_copied():
    program = kernels("""
graph @same(%x: f32[2]) {
  return %x, %x
}""")
    (copy,) = program.kernels
    assert copy.stores[0].why == "graph output (a copy of an input)" and program.outputs[0] == program.outputs[1]


def test_access_reshape_merges_only_evenly_strided_axes():
    transposed = Access(Affine((1, 3)))  # a (3, 2) view of a row-major (2, 3) buffer
    assert transposed.reshape((3, 2), (6,)) is None
    assert str(contiguous((2, 3)).reshape((2, 3), (3, 2)).form) == "2*i0 + i1"
    assert str(contiguous((4, 6)).reshape((4, 6), (2, 2, 3, 2)).form) == "12*i0 + 6*i1 + 2*i2 + i3"


def test_access_through_dilation_divides_exactly():
    access = contiguous((3,)).through((AxisIndex(((0, 1),), 0, 2, True),), (3,), 1)
    assert str(access) == "(i0)/2 if 0 <= (i0)/2 < 3"
    assert access.specialised((6,)).guards  # odd positions read zeros: the guard stays


def test_op_without_a_lowering_names_op_and_node(monkeypatch):
    mystery = OpDef("mystery", 1, lambda types: types[0], lambda x: x, kind="layout")
    monkeypatch.setitem(registry._REGISTRY, "mystery", mystery)
    g = Graph("g")
    x = g.add_input(TensorType((2,)), name="x")
    g.outputs = [Builder(g).emit("mystery", x)]
    with pytest.raises(UnsupportedError, match="cannot lower %0 mystery"):
        fuse(g)


def test_bit_primitives_and_positions_evaluate_in_numpy():
    import numpy as np
    from ndlc.ir import scalar as S
    x = np.array([-1, 8], np.int64)
    expr = S.xor(S.shr(S.arg(0), 60), S.index())
    np.testing.assert_array_equal(S.evaluate(expr, [x], "i64", shape=(2,)), [15 ^ 0, 0 ^ 1])


def test_state_updates_are_the_last_outputs():
    program = fuse(parse("""
graph @step(%x: f32[2], %w: f32[2] state) {
  %0 = add(%x, %w) : f32[2]
  %1 = add_scalar(%w, scalar=1.0) : f32[2]
  return %0, new %w = %1
}"""))
    assert program.updates == 1 and len(program.outputs) == 2
    (kernel,) = program.kernels
    assert kernel.fused == ("%0 add", "%1 add_scalar") and kernel.outputs() == program.outputs


def test_a_5000_op_chain_compiles_in_kernels_of_bounded_size():
    """No recursion anywhere along the pipeline, and definitions past LARGE operations are stored,
    so no kernel grows too big for LLVM to optimise quickly."""
    import numpy as np

    import ndlc as ndl
    from ndlc.passes.merge import KERNEL_LARGE, LARGE

    def chain(x):
        for _ in range(5000):
            x = x + 1.0
        return x
    step = ndl.compile(chain)
    np.testing.assert_allclose(step(np.zeros(8, np.float32)).numpy(), 5000.0)
    fused = step.ir("fused")
    assert f"its definition grew past {LARGE} operations" in fused
    assert f"together they would pass {KERNEL_LARGE} operations" in fused


def test_random_numbers_read_through_a_reshape_compile():
    """A scalar operand (the seed) is read at one element whatever the result's axes."""
    import numpy as np

    from ndlc.jit.compile import compile_graph
    from ndlc.ir import interpret
    graph = parse("""
graph @r(%seed: i64[]) {
  %0 = random_uniform(%seed, shape=(2, 3, 4), dtype=f32, stream=0) : f32[2,3,4]
  %1 = reshape(%0, shape=(6, 4)) : f32[6,4]
  %2 = exp(%1) : f32[6,4]
  return %2
}""")
    seed = np.int64(7)
    np.testing.assert_allclose(compile_graph(graph).run(seed)[0], interpret(graph, seed)[0], rtol=1e-6)


@pytest.mark.parametrize("batch", [2, 256])
def test_a_copy_is_not_reordered_into_a_reduction_where_its_stores_would_stride_past_a_page(batch):
    """A transposing copy beside a sum of the same input: reordered to the sum's loops (C | N, H, W)
    its stores stride 32 elements along the innermost loop at batch 2 (merged), 4096 at batch 256
    (16 KB: a page per element, so it keeps its own loops and the dump says why)."""
    program = kernels(f"""
graph @copy(%x: f32[{batch},16,10,10]) {{
  %0 = permute(%x, axes=(2, 3, 0, 1)) : f32[10,10,{batch},16]
  %1 = summation(%x, axes=(0, 2, 3)) : f32[16]
  return %0, %1
}}""")
    text = str(program)
    if batch == 2:
        assert len(program.kernels) == 1 and "store %0[i0 + 16*i1 + 320*i2 + 32*i3] = $0" in text, text
    else:
        assert [k.boundary for k in program.kernels] == [
            "", "its loops reordered to fit would store %0 163840 bytes apart along the innermost loop (more than a page)"]
        assert "store %0[40960*i0 + 4096*i1 + 16*i2 + i3] = $0" in text, text
