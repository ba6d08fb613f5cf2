"""The CUDA backend without a GPU: every registry op's forward and gradient kernels, and the
training steps, compile with `nvcc -arch=sm_90 -cubin` (ptxas: no register spills), and run under
the host emulation of CUDA's execution model (runtime/cuda_emulation.h) equal to the interpreter."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from ndlc.errors import NdlcError, UnsupportedError

from ndlc.codegen.cuda import lower_to_cuda
from ndlc.ir import interpret, parse
from ndlc.passes.schedule import GpuTarget
from ndlc.jit.pipeline import Stages, cuda_kernels
from ndlc.runtime.cuda import CudaProgram
from ndlc.runtime.cuda_emulation import EmulatedExecutor, emulation_mode
from ndlc.runtime.cuda_build import compile_emulation
from cuda_cases import OPS, TOLERANCE

NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit) is not installed")
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulation needs g++ (C++20)")
H200 = GpuTarget()  # the schedule nvcc's code is compiled for
EMULATED = GpuTarget(multiprocessors=2, block_threads=64, blocks_per_multiprocessor=2, chunk_elements=16)


def kernels_for(graph, target, forward=None):
    stages = Stages(graph.name)
    return cuda_kernels(stages, graph, forward, target), stages




def nvcc_compile(source, tmp_path):
    """ptxas's report for `source` compiled to a cubin for sm_90 (fails the test if nvcc does)."""
    path = tmp_path / "program.cu"
    path.write_text(source)
    result = subprocess.run([NVCC, "-arch=sm_90", "-cubin", "-O3", "-Xptxas", "-v", "-o",
                             str(tmp_path / "program.cubin"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def spills(report) -> dict:
    """Function -> spill bytes (stores + loads) from ptxas -v."""
    found, current = {}, None
    for line in report.splitlines():
        match = re.search(r"Function properties for (\S+)", line)
        if match:
            current = match.group(1)
        match = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if match and current:
            found[current] = int(match.group(1)) + int(match.group(2))
    return found


@needs_nvcc
def test_every_op_forward_and_gradient_compiles_with_nvcc(tmp_path):
    sources = [lower_to_cuda(kernels_for(graph, H200)[0], prefix=f"p{n}_").source
               for n, (_, graph, _) in enumerate(OPS)]
    sources.append(lower_to_cuda(kernels_for(parse(TALL), EMULATED)[0], prefix="tall_").source)  # in chunks
    report = nvcc_compile("\n".join(sources), tmp_path)
    assert spills(report) and not any(spills(report).values())


@pytest.fixture(scope="module")
def emulated_ops():
    """Every op graph's program for the emulation, all in one library (one g++ run)."""
    built = []
    for n, (name, graph, inputs) in enumerate(OPS):
        kernels, stages = kernels_for(graph, EMULATED)
        built.append((name, stages.source, kernels, lower_to_cuda(kernels, prefix=f"p{n}_"), inputs))
    library = compile_emulation("\n".join(module.source for *_, module, _ in built), stress=emulation_mode() == "stress")
    return {name: (source, CudaProgram(kernels, module, {}, executor=EmulatedExecutor(library)), inputs)
            for name, source, kernels, module, inputs in built}


@needs_gxx
@pytest.mark.parametrize("name", [name for name, _, _ in OPS])
def test_op_under_emulation_equals_interpreter(emulated_ops, name):
    graph, program, inputs = emulated_ops[name]
    inputs = [np.asarray(x, dtype=v.type.np_dtype) for x, v in zip(inputs, graph.inputs)]
    want = interpret(graph, *inputs)
    got = program.run(*inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        if w.dtype.kind == "f":
            atol, rtol = TOLERANCE if w.dtype == np.float32 else (1e-10, 1e-9)
            np.testing.assert_allclose(g, w, atol=atol * max(1.0, np.abs(w).max()), rtol=rtol)
        else:
            np.testing.assert_array_equal(g, w)


ROW_AND_COLUMN = """
graph @norms(%x: f32[9,70], %w: f32[70]) {
  %0 = max(%x, axes=(1,)) : f32[9]
  %1 = reshape(%0, shape=(9,1)) : f32[9,1]
  %2 = broadcast_to(%1, shape=(9,70)) : f32[9,70]
  %3 = add(%x, %2) : f32[9,70]
  %4 = exp(%3) : f32[9,70]
  %5 = summation(%4, axes=(1,)) : f32[9]
  %6 = summation(%x, axes=(0,)) : f32[70]
  %7 = multiply(%6, %w) : f32[70]
  %8 = logsumexp(%x, axes=(1,)) : f32[9]
  return %5, %7, %8
}"""


@needs_gxx
@pytest.mark.parametrize("threads", [32, 64, 128])
def test_row_and_column_reductions_at_every_block_size(threads):
    """Rows of 70 over 32..128 lanes (one warp, several warps), columns over tiles, grid-stride."""
    graph = parse(ROW_AND_COLUMN)
    kernels, stages = kernels_for(graph, GpuTarget(multiprocessors=1, block_threads=threads, blocks_per_multiprocessor=1))
    assert {k.gpu.lanes_fastest for k in kernels.kernels if k.reductions} == {True, False}
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((9, 70)).astype(np.float32), rng.standard_normal(70).astype(np.float32)
    program = CudaProgram(kernels, lower_to_cuda(kernels), {}, executor=EmulatedExecutor())
    for got, want in zip(program.run(x, w), interpret(graph, x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def step_graphs():
    """(name, graph, forward) of the MLP, LeNet-BN and ResNet9 training steps, as ndl.compile traces them."""
    import ndlc as ndl
    from ndlc.examples.lenet import build_lenet
    from ndlc.examples.resnet9 import build_resnet9
    from ndlc.examples.train_mlp import build_mlp, training_step
    rng = np.random.default_rng(0)
    found = []
    for name, model, shape, optimizer in [
            ("mlp", build_mlp(), (16, 784), ndl.optim.Adam),
            ("lenet", build_lenet(), (4, 1, 28, 28), ndl.optim.SGD),
            ("resnet9", build_resnet9(), (2, 3, 32, 32), ndl.optim.SGD)]:
        step = ndl.compile(training_step(model, optimizer(model.parameters(), lr=0.01)))
        step(rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, shape[0]))
        captured = step.last.captured
        found.append((name, captured.graph, captured.forward))
    return found


@needs_nvcc
def test_training_steps_compile_with_nvcc_without_spills(tmp_path):
    for name, graph, forward in step_graphs():
        kernels, _ = kernels_for(graph, H200, forward)
        report = nvcc_compile(lower_to_cuda(kernels).source, tmp_path)
        found = spills(report)
        assert len(found) >= len([k for k in kernels.kernels if not k.gemm]), name
        assert not any(found.values()), f"{name}: register spills in {[f for f, n in found.items() if n]}"


@needs_gxx
def test_aligned_elementwise_kernels_move_float4_and_others_stay_scalar():
    graph = parse("""
graph @t(%x: f32[6,16], %y: f32[16], %z: f32[6,15]) {
  %0 = broadcast_to(%y, shape=(6,16)) : f32[6,16]
  %1 = multiply(%x, %0) : f32[6,16]
  %2 = exp(%1) : f32[6,16]
  %3 = tanh(%z) : f32[6,15]
  return %2, %3
}""")
    kernels, _ = kernels_for(graph, EMULATED)
    assert sorted(k.gpu.vector for k in kernels.kernels) == [1, 4]
    module = lower_to_cuda(kernels)
    assert "float4" in module.source
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs]
    program = CudaProgram(kernels, module, {}, executor=EmulatedExecutor())
    for got, want in zip(program.run(*inputs), interpret(graph, *inputs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


TALL = """
graph @tall(%x: f32[300,6], %g: f32[6]) {
  %0 = summation(%x, axes=(0,)) : f32[6]
  %1 = divide_scalar(%0, scalar=300.0) : f32[6]
  %2 = broadcast_to(%1, shape=(300,6)) : f32[300,6]
  %3 = negate(%2) : f32[300,6]
  %4 = add(%x, %3) : f32[300,6]
  %5 = multiply(%4, %x) : f32[300,6]
  %6 = summation(%5, axes=(0,)) : f32[6]
  %7 = broadcast_to(%6, shape=(300,6)) : f32[300,6]
  %8 = divide(%4, %7) : f32[300,6]
  %9 = broadcast_to(%g, shape=(300,6)) : f32[300,6]
  %10 = multiply(%8, %9) : f32[300,6]
  %11 = summation(%x, axes=(0, 1)) : f32[]
  return %10, %6, %11
}"""  # Σ(x - mean)·x, not Σ(x - mean)²: that would be one pass (passes/statistics.py), not two phases


@needs_gxx
def test_reductions_with_few_points_are_cut_into_chunks_combined_in_order():
    """BatchNorm-like statistics of 6 columns over 300 rows and a full sum: the reduced loops in
    chunks (partials, then their combination, then the elementwise output), equal to the interpreter."""
    graph = parse(TALL)
    kernels, _ = kernels_for(graph, EMULATED)
    assert any(k.gpu.chunks > 1 and len(k.phases) > 1 for k in kernels.kernels)
    assert any(k.gpu.chunks > 1 and k.outer == 0 for k in kernels.kernels)
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal((300, 6)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    program = CudaProgram(kernels, lower_to_cuda(kernels), {}, executor=EmulatedExecutor())
    for got, want in zip(program.run(x, g), interpret(graph, x, g)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_nvcc
def test_cubins_are_cached_on_disk_and_a_corrupt_entry_is_rebuilt(tmp_path, monkeypatch):
    from ndlc.runtime import cache
    from ndlc.runtime.cuda_build import compile_cuda
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    kernels, _ = kernels_for(parse(ROW_AND_COLUMN), H200)
    source = lower_to_cuda(kernels).source
    calls = []
    real_store = cache.store
    monkeypatch.setattr(cache, "store", lambda *a: calls.append(a[0]) or real_store(*a))
    cubin = compile_cuda(source, "sm_90")
    assert cubin[:4] == b"\x7fELF" and len(calls) == 1
    assert compile_cuda(source, "sm_90") == cubin and len(calls) == 1  # from the cache
    (entry,) = [p for p in tmp_path.rglob("*.obj")]
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    assert compile_cuda(source, "sm_90") == cubin and len(calls) == 2  # rebuilt


ELEMENTWISE = """
graph @scale(%x: f32[8,64], %y: f32[8,64]) {
  %0 = multiply(%x, %y) : f32[8,64]
  %1 = relu(%0) : f32[8,64]
  return %1
}"""


def stress_program(text, plant=lambda source: source):
    """`text`'s program under the stress emulation, its CUDA C first changed by `plant`."""
    kernels, _ = kernels_for(parse(text), EMULATED)
    module = lower_to_cuda(kernels)
    module.source = plant(module.source)
    return CudaProgram(kernels, module, {}, executor=EmulatedExecutor(stress=True))


@needs_gxx
def test_the_stress_emulation_passes_correct_kernels():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((9, 70)).astype(np.float32), rng.standard_normal(70).astype(np.float32)
    for got, want in zip(stress_program(ROW_AND_COLUMN).run(x, w), interpret(parse(ROW_AND_COLUMN), x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    a, b = rng.standard_normal((2, 8, 64)).astype(np.float32)
    assert "ndlc_vec4(" in stress_program(ELEMENTWISE).module.source
    np.testing.assert_array_equal(stress_program(ELEMENTWISE).run(a, b)[0], np.maximum(a * b, 0))


@needs_gxx
def test_the_stress_emulation_catches_a_planted_misaligned_float4():
    program = stress_program(ELEMENTWISE, lambda source: source.replace("ndlc_vec4(&", "ndlc_vec4(1 + &"))
    with pytest.raises(NdlcError, match="misaligned float4 access"):
        program.run(*np.ones((2, 8, 64), np.float32))


@needs_gxx
def test_the_stress_emulation_catches_a_planted_race():
    """Without its barriers a shared-memory reduction reads slots before other threads write them:
    the shuffled thread order of the stress emulation makes that a wrong result."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((9, 70)).astype(np.float32), rng.standard_normal(70).astype(np.float32)
    racy = stress_program(ROW_AND_COLUMN, lambda source: source.replace("__syncthreads();", ""))
    assert "__syncthreads" not in racy.module.source
    want = interpret(parse(ROW_AND_COLUMN), x, w)
    assert not all(np.allclose(g, v, rtol=1e-5, atol=1e-5) for g, v in zip(racy.run(x, w), want))


def test_block_sizes_that_are_not_a_power_of_two_are_refused():
    for threads in (16, 96, 192, 2048):
        with pytest.raises(UnsupportedError, match=f"block_threads={threads}"):
            GpuTarget(block_threads=threads)


BATCH_NORM = """
graph @bn(%x: f32[{n},1024], %g: f32[1024], %b: f32[1024]) {{
  %0 = summation(%x, axes=(0,)) : f32[1024]
  %1 = divide_scalar(%0, scalar={n}.0) : f32[1024]
  %2 = reshape(%1, shape=(1, 1024)) : f32[1,1024]
  %3 = broadcast_to(%2, shape=({n}, 1024)) : f32[{n},1024]
  %19 = negate(%3) : f32[{n},1024]
  %4 = add(%x, %19) : f32[{n},1024]
  %5 = multiply(%4, %4) : f32[{n},1024]
  %6 = summation(%5, axes=(0,)) : f32[1024]
  %7 = divide_scalar(%6, scalar={n}.0) : f32[1024]
  %8 = add_scalar(%7, scalar=1e-05) : f32[1024]
  %9 = power_scalar(%8, scalar=-0.5) : f32[1024]
  %10 = reshape(%9, shape=(1, 1024)) : f32[1,1024]
  %11 = broadcast_to(%10, shape=({n}, 1024)) : f32[{n},1024]
  %12 = multiply(%4, %11) : f32[{n},1024]
  %13 = reshape(%g, shape=(1, 1024)) : f32[1,1024]
  %14 = broadcast_to(%13, shape=({n}, 1024)) : f32[{n},1024]
  %15 = multiply(%12, %14) : f32[{n},1024]
  %16 = reshape(%b, shape=(1, 1024)) : f32[1,1024]
  %17 = broadcast_to(%16, shape=({n}, 1024)) : f32[{n},1024]
  %18 = add(%15, %17) : f32[{n},1024]
  return %18
}}"""


@pytest.mark.parametrize("n", [4096, 65536])
def test_batch_norm_columns_read_whole_lines_and_map_launches_run_in_memory_order(n):
    kernels, stages = kernels_for(parse(BATCH_NORM.format(n=n)), H200)
    columns = [k for k in kernels.kernels if k.reductions]
    assert columns and all(k.gpu.tile >= 32 for k in columns), str(stages.texts["scheduled"])
    source = lower_to_cuda(kernels).source
    maps = re.findall(r"void __launch_bounds__\(\d+, 1\) (\w+_map\d+)\(.*?\n(.*?)\n}", source, re.S)
    assert (n == 65536) == bool(maps)  # chunked (so map launches) only where the columns alone are too few
    for name, body in maps:
        decoded = re.findall(r"const (?:int|long long) i(\d+) = \((o)\) % 1024;", body)
        assert decoded == [("0", "o")], (name, body)  # the feature loop (stride 1 in memory) is fastest
    assert ("map launches whose points go in memory order" in str(stages.texts["scheduled"])) == (n == 65536)


def lenet_gemm_calls(batch):
    """cuBLAS calls one LeNet-BN training step makes on the GPU schedule (one per strided run)."""
    import ndlc as ndl
    from ndlc.codegen.cuda_steps import GemmCall
    from ndlc.examples.lenet import build_lenet
    from ndlc.examples.train_mlp import training_step
    model = build_lenet()
    step = ndl.compile(training_step(model, ndl.optim.SGD(model.parameters(), lr=0.01)))
    rng = np.random.default_rng(0)
    step(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, batch))
    kernels, _ = kernels_for(step.last.captured.graph, H200, step.last.captured.forward)
    calls = [call for call in lower_to_cuda(kernels).steps if isinstance(call, GemmCall)]
    return sum(len(call.runs()) for call in calls), sum(len(call.batches()) for call in calls)


def test_lenet_step_makes_at_most_twenty_cublas_calls():
    """LeNet's convolutions and their gradients are direct loop nests (conv1 over wide rows, conv2
    in register tiles), no per-image products: the calls left make one product each."""
    calls, products = lenet_gemm_calls(256)
    assert calls <= 20 and products == calls, (calls, products)
