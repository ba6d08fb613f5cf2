"""Matmul through numpy's OpenBLAS: gemm kernels in the dump, operands read in place (transposed,
broadcast batches) or stored first and why, the fused epilogue, and the loop-nest fallback when
BLAS is turned off or missing; each compiled both ways against the interpreter."""
import logging

import numpy as np
import pytest

from ndlc.passes.fusion import fuse
from ndlc.runtime import libraries
from ndlc.jit.compile import compile_graph
from ndlc.ir import TensorType, parse
from test_compiled_ops import assert_matches, single_op_graph


@pytest.fixture(params=["blas", "loops"])
def mode(request, monkeypatch):
    """Runs a test with BLAS on (checking gemm kernels are made) and with NDLC_BLAS=0 (none are)."""
    if request.param == "blas" and not libraries.blas_available():
        pytest.skip("numpy ships no 64-bit-integer OpenBLAS here")
    monkeypatch.setenv("NDLC_BLAS", "1" if request.param == "blas" else "0")
    return request.param


def compiled_matches(graph, inputs, dtype, mode):
    assert_matches(graph, inputs, dtype)
    gemms = [k for k in compile_graph(graph).kernels.kernels if k.gemm]
    assert bool(gemms) == (mode == "blas")


def draw(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(TensorType((), dtype).np_dtype) for s in shapes]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("a,b", [((6, 6, 5, 4), (4, 3)), ((5, 4), (6, 6, 4, 3)), ((2, 1, 3, 4), (5, 4, 2)),
                                 ((64, 33), (33, 17))])
def test_matmul_equals_interpreter(a, b, dtype, mode):
    graph, inputs = single_op_graph("matmul", draw((a, b), dtype), {}, dtype)
    compiled_matches(graph, inputs, dtype, mode)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_transposed_operands_and_fused_bias_relu(dtype, mode):
    graph = parse(f"""
graph @dense(%x: {dtype}[7,5], %w: {dtype}[9,7], %b: {dtype}[9], %v: {dtype}[2,3,9,4]) {{
  %0 = transpose(%x, axes=(0, 1)) : {dtype}[5,7]
  %1 = transpose(%w, axes=(0, 1)) : {dtype}[7,9]
  %2 = matmul(%0, %1) : {dtype}[5,9]
  %3 = broadcast_to(%b, shape=(5, 9)) : {dtype}[5,9]
  %4 = add(%2, %3) : {dtype}[5,9]
  %5 = relu(%4) : {dtype}[5,9]
  %6 = transpose(%v, axes=(2, 3)) : {dtype}[2,3,4,9]
  %7 = transpose(%5, axes=(0, 1)) : {dtype}[9,5]
  %8 = matmul(%6, %7) : {dtype}[2,3,4,5]
  return %5, %8
}}""")
    compiled_matches(graph, draw(((7, 5), (9, 7), (9,), (2, 3, 9, 4)), dtype), dtype, mode)


def test_kernel_dump_shows_the_call_and_its_in_place_epilogue():
    program = fuse(parse("""
graph @dense(%x: f32[3,4], %w: f32[3,2]) {
  %0 = transpose(%x, axes=(0, 1)) : f32[4,3]
  %1 = matmul(%0, %w) : f32[4,2]
  %2 = relu(%1) : f32[4,2]
  return %2
}"""), use_blas=True)
    assert str(program.kernels[0]) == """\
kernel k0 -> %2
  fuses: %0 transpose, %1 matmul, %2 relu
  stored because: %2: graph output
  loops: i0<4 i1<2
  call sgemm(%x^T, %w) -> %2  (4x3 @ 3x2)
  $0 = %2[2*i0 + i1]
  store %2[2*i0 + i1] = max($0, 0)"""


def test_batched_call_offsets_and_operands_stored_first_say_why():
    program = fuse(parse("""
graph @b(%x: f64[2,3,4], %y: f64[4,6], %z: f64[2,4,3]) {
  %0 = exp(%y) : f64[4,6]
  %1 = matmul(%x, %0) : f64[2,3,6]
  %2 = flip(%z, axes=(1,)) : f64[2,4,3]
  %3 = matmul(%x, %2) : f64[2,3,3]
  return %1, %3
}"""), use_blas=True)
    operands, first, second = program.kernels  # both operands stored in one pass over 24 elements
    exp, flipped = operands.stores
    assert exp.why == "matmul hands it to BLAS as a matrix (a computed value)"
    assert "  per i0: call dgemm(%x[12*i0], %0) -> %1  (3x4 @ 4x6)" in str(first)
    assert flipped.why == "matmul hands it to BLAS as a matrix (a view BLAS cannot stride)"
    assert "call dgemm(%x[12*i0], %2[12*i0])" in str(second)


def test_integer_matmul_keeps_the_loop_nest():
    program = fuse(parse("""
graph @i(%a: i32[3,4], %b: i32[4,2]) {
  %0 = matmul(%a, %b) : i32[3,2]
  return %0
}"""), use_blas=True)
    (kernel,) = program.kernels
    assert kernel.gemm is None and [r.combine for r in kernel.reductions] == ["add"]


def test_without_numpys_openblas_matmul_lowers_to_loops_and_says_so_once(monkeypatch, caplog):
    monkeypatch.setattr(libraries, "_blas_paths", lambda: [])
    libraries._blas.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, "ndlc.libraries"):
            assert not libraries.blas_enabled() and not libraries.blas_enabled()
            graph, inputs = single_op_graph("matmul", draw(((3, 4), (4, 2)), "f32"), {}, "f32")
            compiled_matches(graph, inputs, "f32", "loops")
    finally:
        libraries._blas.cache_clear()
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "run as loop nests" in caplog.records[0].message
