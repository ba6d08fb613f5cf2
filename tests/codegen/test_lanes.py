"""Codegen's own vectors (codegen/llvm_lanes.py): which kernels' innermost loops it emits as
`<W x T>` operations, that those kernels compute bit for bit what the scalar loops LLVM vectorises
compute (maths polynomials, casts, bools, random numbers, 'chunks' partials, gemm epilogues, each
with a scalar remainder), and that they are compiled without LLVM's vectorisers."""
import re

import llvmlite.binding as llvm_binding
import numpy as np
import pytest

from ndlc.codegen import llvm, llvm_program
from ndlc.codegen.llvm_lanes import Lanes, lane_loop
from ndlc.ir import parse
from ndlc.ir.kernel import Strategy
from ndlc.jit.compile import compile_graph
from ndlc.runtime import native

MATH = """graph @m(%x: f32[3,100], %y: f32[3,100]) {
  %0 = sigmoid(%x) : f32[3,100]
  %1 = tanh(%x) : f32[3,100]
  %2 = log(%y) : f32[3,100]
  %3 = sin(%x) : f32[3,100]
  %4 = cos(%x) : f32[3,100]
  %5 = power(%y, %x) : f32[3,100]
  %6 = sqrt(%y) : f32[3,100]
  %7 = divide(%6, %y) : f32[3,100]
  %8 = multiply(%7, %5) : f32[3,100]
  %9 = add(%8, %4) : f32[3,100]
  %10 = add(%9, %3) : f32[3,100]
  %11 = add(%10, %2) : f32[3,100]
  %12 = add(%11, %1) : f32[3,100]
  %13 = add(%12, %0) : f32[3,100]
  return %13
}"""
MIXED = """graph @g(%x: f32[37], %m: bool[37], %seed: i64[]) {
  %0 = full(shape=(37,), value=-inf, dtype=f32) : f32[37]
  %1 = maximum(%x, %0) : f32[37]
  %2 = where(%m, %1, %x) : f32[37]
  %3 = cast(%2, dtype=f64) : f64[37]
  %4 = mul_scalar(%3, scalar=1e-30) : f64[37]
  %5 = greater(%x, %1) : bool[37]
  %6 = random_uniform(%seed, shape=(37,), dtype=f32, stream=0) : f32[37]
  %7 = add(%6, %x) : f32[37]
  return %4, %5, %7
}"""
CHUNKS = """graph @stats(%x: f32[512,100]) {
  %0 = summation(%x, axes=(0,)) : f32[100]
  %1 = divide_scalar(%0, scalar=512.0) : f32[100]
  %2 = reshape(%1, shape=(1, 100)) : f32[1,100]
  %3 = broadcast_to(%2, shape=(512, 100)) : f32[512,100]
  %4 = negate(%3) : f32[512,100]
  %5 = add(%x, %4) : f32[512,100]
  %6 = power_scalar(%5, scalar=2) : f32[512,100]
  %7 = summation(%6, axes=(0,)) : f32[100]
  %8 = sqrt(%7) : f32[100]
  %9 = reshape(%8, shape=(1, 100)) : f32[1,100]
  %10 = broadcast_to(%9, shape=(512, 100)) : f32[512,100]
  %11 = divide(%5, %10) : f32[512,100]
  return %1, %7, %11
}"""
GEMM = """graph @g(%x: f32[64,40], %w: f32[40,36], %b: f32[36]) {
  %0 = matmul(%x, %w) : f32[64,36]
  %1 = reshape(%b, shape=(1, 36)) : f32[1,36]
  %2 = broadcast_to(%1, shape=(64, 36)) : f32[64,36]
  %3 = add(%0, %2) : f32[64,36]
  %4 = tanh(%3) : f32[64,36]
  return %4
}"""
# 'rows': a ragged register tile (rows of 28 in blocks of 16 by 6 channels, the last block storing
# 12), and blocks of whole columns (3 x 45 merged into one loop of 135, passes/canonical.py: sixteen
# vectors and a rest of 4, 2 and 1) summed and maxed
ROW_CONV = """graph @r(%x: f32[2,1,32,36], %w: f32[5,5,1,6]) {
  %0 = row_conv(%x, %w, width=28) : f32[2,6,28,28]
  return %0
}"""
COLUMNS = """graph @c(%x: f32[200,3,45], %y: f32[200,3,45]) {
  %0 = multiply(%x, %y) : f32[200,3,45]
  %1 = summation(%0, axes=(0,)) : f32[3,45]
  %2 = max(%x, axes=(0,)) : f32[3,45]
  %3 = exp(%1) : f32[3,45]
  return %3, %2
}"""


def _rows_graph(n, body):
    """A graph over rows of `n` reducing along them (`body`: its nodes, N standing for n)."""
    return (f"graph @r(%x: f32[6,{n}], %y: f32[6,{n}], %z: f32[6,{n}], %w: f32[6,{n}], %b: f32[6,1], "
            f"%c: f32[6,1]) {{\n  " + body.replace("N", str(n)) + "\n}")


# 'point' reductions along the row, as LLVM's vectoriser sums them (llvm_lanes.py LIVE): a max, then
# a sum of the row less it (a softmax's phases); two sums of 4 operations on 4 loads (a LayerNorm's statistics); one sum of 8 operations on
# 6 loads (a LayerNorm's gradient)
SUMS = {
    "max_then_sum": """%0 = max(%x, axes=(1,)) : f32[6]
  %1 = reshape(%0, shape=(6, 1)) : f32[6,1]
  %2 = broadcast_to(%1, shape=(6, N)) : f32[6,N]
  %3 = negate(%2) : f32[6,N]
  %4 = add(%x, %3) : f32[6,N]
  %5 = summation(%4, axes=(1,)) : f32[6]
  return %5, %4""",
    "two_sums": """%b1 = broadcast_to(%b, shape=(6, N)) : f32[6,N]
  %n = negate(%b1) : f32[6,N]
  %1 = add(%x, %y) : f32[6,N]
  %2 = add(%1, %n) : f32[6,N]
  %3 = multiply(%2, %2) : f32[6,N]
  %0 = summation(%2, axes=(1,)) : f32[6]
  %4 = summation(%3, axes=(1,)) : f32[6]
  return %0, %4""",
    "long_sum": """%b1 = broadcast_to(%b, shape=(6, N)) : f32[6,N]
  %c1 = broadcast_to(%c, shape=(6, N)) : f32[6,N]
  %1 = add(%z, %w) : f32[6,N]
  %n1 = negate(%b1) : f32[6,N]
  %2 = add(%1, %n1) : f32[6,N]
  %3 = multiply(%y, %2) : f32[6,N]
  %4 = multiply(%3, %c1) : f32[6,N]
  %5 = multiply(%x, %4) : f32[6,N]
  %6 = multiply(%5, %c1) : f32[6,N]
  %7 = negate(%6) : f32[6,N]
  %0 = summation(%7, axes=(1,)) : f32[6]
  return %0""",
}
# rows of 64 and 128 (whole steps of 4 vectors), 100 (a rest of 4: LLVM's epilogue of half vectors),
# 68 and 200 (a rest of 4 and of 8)
# the order codegen reproduces was read off LLVM's cost model for AMD's Zen cores (llvm_lanes.py): on
# another CPU LLVM's vectoriser may interleave otherwise, and codegen's sums, deterministic still,
# need not equal its bits
ORDER_READ_HERE = pytest.mark.skipif(not llvm_binding.get_host_cpu_name().startswith("znver"),
                                     reason="LLVM's reduction order was read on Zen cores only")
REDUCTIONS = [pytest.param(_rows_graph(n, body), marks=ORDER_READ_HERE)
              for body in SUMS.values() for n in (64, 68, 100, 128, 200)]

SPLIT = """graph @s(%x: f32[262147], %m: bool[262147]) {
  %0 = exp(%x) : f32[262147]
  %1 = where(%m, %0, %x) : f32[262147]
  %2 = greater(%1, %x) : bool[262147]
  return %1, %2
}"""


def _inputs(text):
    rng = np.random.default_rng(7)
    if text is MIXED:
        return [rng.standard_normal(37).astype(np.float32), rng.random(37) < 0.5, np.array(3, np.int64)]
    if text is SPLIT:  # pieces of the split loop a thread takes: a variable rest, masked
        return [rng.standard_normal(262147).astype(np.float32), rng.random(262147) < 0.5]
    graph = parse(text)
    return [(rng.standard_normal(i.type.shape) * 2 + (3 if n == 1 and text is MATH else 0)).astype(np.float32)
            for n, i in enumerate(graph.inputs)]


def _scalar(kernel, debug=None):
    return None


@pytest.mark.parametrize("text", [MATH, MIXED, CHUNKS, GEMM, SPLIT, ROW_CONV, COLUMNS, *REDUCTIONS],
                         ids=["math", "mixed", "chunks", "gemm", "split", "row_conv", "columns",
                              *(f"{name}{n}" for name in SUMS for n in (64, 68, 100, 128, 200))])
def test_codegens_vectors_compute_what_llvms_vectorised_scalar_loops_compute(text, monkeypatch, tmp_path, two_threads):
    inputs = _inputs(text)
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / "lanes"))
    lanes = compile_graph(parse(text), cached=False)
    assert any(lane_loop(k) is not None for k in lanes.kernels.kernels)
    assert re.search(r"load <\d+ x \w+>", lanes.ir("llvm"))
    assert ("llvm.masked.store" in lanes.ir("llvm")) == (text in (CHUNKS, SPLIT))  # a variable rest
    expected = lanes.run(*inputs)
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / "scalar"))
    monkeypatch.setattr(llvm, "lane_loop", _scalar)
    monkeypatch.setattr(llvm_program, "lane_loop", _scalar)
    scalar = compile_graph(parse(text), cached=False)
    assert not re.search(r"load <\d+ x \w+>", scalar.ir("llvm"))
    for got, want in zip(scalar.run(*inputs), expected):
        np.testing.assert_array_equal(got, want)


def _kernels(text):
    return compile_graph(parse(text)).kernels.kernels


def test_maps_run_their_last_loop_as_vectors_and_chunks_kernels_their_columns():
    (map_kernel,) = _kernels(GEMM.replace("matmul(%x, %w)", "add(%x, %x)").replace("[40,36]", "[64,36]")
                             .replace("%x: f32[64,40]", "%x: f32[64,36]"))
    assert lane_loop(map_kernel) == len(map_kernel.extents) - 1
    chunks = [k for k in _kernels(CHUNKS) if k.strategy == Strategy.CHUNKS]
    assert chunks and all(lane_loop(k) == 0 for k in chunks)
    assert all(lane_loop(k, debug=(0, {})) is None for k in chunks)  # bounds checks: scalar
    (conv,) = _kernels(ROW_CONV)
    assert conv.strategy == Strategy.ROWS and conv.tile and lane_loop(conv) == conv.outer - 1  # along the block


def test_a_register_tiles_accumulators_stay_in_registers():
    """The tile's blocks run straight, their accumulators at constant offsets, which LLVM keeps in
    vector registers across the taps (each tap a fused multiply-add into a promoted accumulator): no
    accumulator is loaded or stored inside the reduced loops."""
    optimised = compile_graph(parse(ROW_CONV), cached=False).ir("llvm_opt")
    phis = set(re.findall(r"(%\S+) = phi <\d+ x float>", optimised))
    added = re.findall(r"@llvm\.fma\.v\d+f32\(.*, <\d+ x float> (%[^\s,)]+)\)", optimised)
    assert added and all(value in phis for value in added), "each tap adds into a phi, not a loaded value"


@pytest.mark.parametrize("text", [
    # a float64 sum along the row: codegen's partials are float32 vectors
    """graph @d(%x: f64[6,40]) {
  %0 = summation(%x, axes=(1,)) : f64[6]
  return %0
}""",
], ids=["f64_sum"])
def test_kernels_that_codegen_leaves_to_llvms_vectoriser(text):
    assert [lane_loop(k) for k in _kernels(text)] == [None]


def test_vectorised_kernels_are_compiled_without_llvms_vectorisers(monkeypatch, tmp_path, fresh_machine):
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    translated, pipelines = native._translated, []

    def recording(text, vectorise):
        pipelines.append(("ndlc.runner" in text, "splat" in text, vectorise))
        return translated(text, vectorise)
    monkeypatch.setattr(native, "_translated", recording)
    compile_graph(parse("""graph @m(%x: f32[16,64], %w: f32[64,48]) {
  %0 = matmul(%x, %w) : f32[16,48]
  %1 = tanh(%0) : f32[16,48]
  %2 = summation(%1, axes=(1,)) : f32[16]
  return %1, %2
}"""), cached=False)
    # (runner, codegen's vectors, vectorised by LLVM): the gemm's tanh epilogue and the sum (rows of
    # 48, in codegen's own order) both codegen's, in one module without LLVM's vectorisers
    assert sorted(pipelines) == [(False, True, False), (True, False, False)], pipelines


def _softmax_graph(n, rows=64):
    return f"""graph @softmax(%x: f32[{rows},{n}]) {{
  %0 = max(%x, axes=(1,)) : f32[{rows}]
  %1 = reshape(%0, shape=({rows}, 1)) : f32[{rows},1]
  %2 = broadcast_to(%1, shape=({rows}, {n})) : f32[{rows},{n}]
  %3 = negate(%2) : f32[{rows},{n}]
  %4 = add(%x, %3) : f32[{rows},{n}]
  %5 = exp(%4) : f32[{rows},{n}]
  %6 = summation(%5, axes=(1,)) : f32[{rows}]
  %7 = reshape(%6, shape=({rows}, 1)) : f32[{rows},1]
  %8 = broadcast_to(%7, shape=({rows}, {n})) : f32[{rows},{n}]
  %9 = divide(%5, %8) : f32[{rows},{n}]
  return %9
}}"""


@pytest.mark.parametrize("n", [45, 77, 91])
def test_a_row_local_temporarys_rest_is_stored_and_loaded_whole(n, monkeypatch, tmp_path):
    """A softmax's exponentials, a row on the stack, are written by a rest of 13 or 11 lanes and
    summed back (llvm_lanes.py LOCAL_SPARE): as whole vectors into the row's spare bytes, no masked
    store, with the bits of masked ones (the spare lanes are never summed)."""
    text = _softmax_graph(n)
    x = (np.random.default_rng(n).standard_normal((64, n)) * 3).astype(np.float32)
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / "whole"))
    whole = compile_graph(parse(text), cached=False)
    (kernel,) = whole.kernels.kernels
    assert kernel.local and lane_loop(kernel) is not None
    assert "llvm.masked.store" not in whole.ir("llvm")
    (got,) = whole.run(x)
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / "masked"))
    get, put = Lanes._get, Lanes._put
    monkeypatch.setattr(Lanes, "_get", lambda self, pointer, ty, along=True, padded=False: get(self, pointer, ty, along))
    monkeypatch.setattr(Lanes, "_put", lambda self, value, pointer, padded=False: put(self, value, pointer))
    masked = compile_graph(parse(text), cached=False)
    assert "llvm.masked.store" in masked.ir("llvm")
    (want,) = masked.run(x)
    np.testing.assert_array_equal(got, want)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(1, keepdims=True), rtol=1e-5)
