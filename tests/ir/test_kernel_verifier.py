"""The Kernel IR verifier names the stage, the kernel and the broken invariant."""
import dataclasses

import pytest

from ndlc.ir import parse, parse_kernels
from ndlc.errors import VerifyError
from ndlc.ir.indexing import Access, Affine
from ndlc.ir.kernel import BufferKind, Combine, PhaseKind, Strategy
from ndlc.ir.kernel_leaves import Acc, Load
from ndlc.ir.kernel_verifier import verify_program
from ndlc.ir.scalar import ScalarExpr
from ndlc.ir.tiles import reordered
from ndlc.passes.fusion import fuse

TEXT = """
graph @g(%x: f32[4,6]) {
  %0 = summation(%x, axes=(1,)) : f32[4]
  %1 = exp(%x) : f32[4,6]
  return %0, %1
}"""


def program():
    return fuse(parse(TEXT))


def test_a_fused_program_verifies():
    verify_program(program(), "fused")


def test_a_load_out_of_bounds():
    p = program()
    kernel = p.kernels[0]
    kernel.loads[0] = dataclasses.replace(kernel.loads[0], access=Access(Affine((6, 2))))
    with pytest.raises(VerifyError, match=r"after fused: kernel k0: \$0 reaches elements 0..28 of %x, which has 24"):
        verify_program(p, "fused")


def test_an_unknown_buffer():
    p = program()
    p.kernels[0].loads[0] = Load("nowhere", "f32", p.kernels[0].loads[0].access)
    with pytest.raises(VerifyError, match="names no buffer %nowhere"):
        verify_program(p)


def test_an_accumulator_its_phase_does_not_compute():
    p = program()
    store = p.kernels[0].phases[0].stores[0]
    p.kernels[0].phases[0].stores[0] = dataclasses.replace(store, value=ScalarExpr("arg", payload=Acc(3)))
    with pytest.raises(VerifyError, match="reads acc3, which its phase does not compute"):
        verify_program(p)


def test_a_temporary_read_before_it_is_written():
    p = program()
    p.kernels.reverse()
    first = p.kernels[0]
    first.loads.append(Load(p.kernels[1].outputs()[0], "f32", Access(Affine((0, 0)))))
    store = first.phases[0].stores[0]
    first.phases[0].stores[0] = dataclasses.replace(store, value=ScalarExpr("arg", payload=len(first.loads) - 1))
    with pytest.raises(VerifyError, match="phase 0 reads %.* before it is written"):
        verify_program(p)


def test_a_store_of_the_wrong_dtype():
    p = program()
    store = p.kernels[0].phases[0].stores[0]
    p.kernels[0].phases[0].stores[0] = dataclasses.replace(store, dtype="f64")
    with pytest.raises(VerifyError, match="stores f64 into %.*, a f32 buffer"):
        verify_program(p)


def test_the_cases_of_the_ir_are_enums_equal_to_their_text():
    p = program()
    kernel, buffer = p.kernels[0], p.buffers["x"]
    kernel.strategy, buffer.kind = "rows", "local"  # strings from code that predates the enums
    assert kernel.strategy is Strategy.ROWS and buffer.kind is BufferKind.LOCAL
    assert kernel.reductions[0].combine is Combine.ADD and kernel.reductions[0].combine == "add"
    assert f"{Strategy.CHUNKS} {PhaseKind.MAP}" == "chunks map over the inner loops"
    with pytest.raises(ValueError, match="'diagonal' is not a valid Strategy"):
        kernel.strategy = "diagonal"


def test_a_case_no_enum_has():
    p = program()
    vars(p.kernels[0].reductions[0])["_combine"] = "mean"  # past the field's check (kernel.Case)
    with pytest.raises(VerifyError, match="phase 0 combines with 'mean', not one of 'add', 'max'"):
        verify_program(p)
    p = program()
    vars(p.buffers["x"])["_kind"] = "scratch"
    with pytest.raises(VerifyError, match="buffer %x is of unknown kind 'scratch'"):
        verify_program(p)


def test_a_strategy_that_does_not_fit_its_kernel():
    p = program()
    p.kernels[0].strategy = Strategy.GEMM
    with pytest.raises(VerifyError, match="strategy 'gemm' for a kernel without a gemm"):
        verify_program(p)


def test_a_register_tile_that_does_not_divide_its_loop():
    p = fuse(parse("""
graph @c(%x: f32[2,6,10,6], %w: f32[5,5,6,16]) {
  %0 = conv(%x, %w, stride=1, padding=0) : f32[2,2,6,16]
  return %0
}"""))
    kernel = p.kernels[0]
    kernel.strategy, kernel.block, kernel.tile = Strategy.ROWS, 16, 4
    with pytest.raises(VerifyError, match="a tile of 4 needs 'rows', two outer loops, the one before the last a multiple"):
        verify_program(p)
    kernel.tile = 3
    verify_program(p)


def test_a_ragged_tile_whose_last_block_reads_past_its_buffer():
    """Rows of 28 in blocks of 16 over planes of 32 columns: the last block of the last image reads
    4 elements past the planes (the schedule gives such a kernel no tile)."""
    def rows(columns):  # the row_conv's kernel, its channels moved next to its pixels
        p = fuse(parse(f"""
graph @r(%x: f32[2,1,32,{columns}], %w: f32[5,5,1,6]) {{
  %0 = row_conv(%x, %w, width=28) : f32[2,6,28,28]
  return %0
}}"""))
        p.kernels[0] = reordered(p.kernels[0], (0, 2, 1, 3, 4, 5))
        return p
    p = rows(32)
    kernel = p.kernels[0]
    kernel.strategy, kernel.block, kernel.tile = Strategy.ROWS, 16, 6
    with pytest.raises(VerifyError, match=r"blocks of 16 do not divide its last loop: .* \$0 reaches elements 0..2051 "
                                          r"of %x, which has 2048"):
        verify_program(p)
    p.buffers["x"].shape = (2, 1, 32, 36)
    kernel.loads = rows(36).kernels[0].loads
    verify_program(p)


GATHER = """program @g(%t, %i, %x) -> (%0)
  %t: f32[10,4] input
  %i: {dtype}[6] input
  %x: f32[6] input
  %0: f32[6,4] output

kernel k0 -> %0
  loops: i0<6 i1<4
  $0 = %i[i0]
  $1 = %t[{access}]
  $2 = %x[i0]
  store %0[4*i0 + i1] = $1"""


@pytest.mark.parametrize("dtype, access, problem", [
    ("i64", "4*$0 + i1 if 0 <= $0 < 10", None),
    ("u8", "4*$0 + 0 if 0 <= $0 < 10 and 0 <= i1 - 1 < 3", None),
    ("i64", "4*$2 + i1 if 0 <= $2 < 10", r"\$1 picks its row by \$2, which is not a plain load of integers"),
    ("i64", "4*$1 + i1 if 0 <= $1 < 10", r"\$1 picks its row by \$1, which is not another load of the kernel"),
    ("i64", "4*$0 + i1 if 0 <= $0 < 11", r"\$1 reaches elements 0..43 of %t, which has 40"),
    ("i64", "0*$0 + i1 if 0 <= $0 < 10", r"\$1 picks one of 10 rows 0 elements apart"),
    ("f32", "4*$0 + i1 if 0 <= $0 < 10", r"\$1 picks its row by \$0, which is not a plain load of integers"),
])
def test_an_indirect_load_picks_its_row_by_a_load_of_integers_inside_its_table(dtype, access, problem):
    text = GATHER.format(dtype=dtype, access=access)
    if problem is None:
        assert str(parse_kernels(text)) == text
        return
    with pytest.raises(VerifyError, match=problem):
        parse_kernels(text)


def test_a_cuda_launch_of_float4_points_reads_no_indirect_load():
    text = GATHER.format(dtype="i64", access="4*$0 + i1 if 0 <= $0 < 10").replace(
        "  loops: i0<6 i1<4\n", "  loops: i0<6 i1<4\n  cuda: 1 blocks of 8x1 threads, 4 points a thread (elementwise)\n")
    with pytest.raises(VerifyError, match="a CUDA launch of 4 points a thread over indirect loads"):
        parse_kernels(text)
    assert "cuda: 1 blocks of 8x1 threads (elementwise)" in str(parse_kernels(text.replace(", 4 points a thread", "")))
