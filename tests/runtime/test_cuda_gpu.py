"""The CUDA backend on a real GPU (marked `cuda`; skipped where pycuda or a GPU is missing):
every op's kernels equal the interpreter, and 50 compiled MLP training steps on the GPU equal
the CPU compiled steps (TF32 off). `python benchmarks/gpu.py` runs these with the benchmarks."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc.codegen.cuda import lower_to_cuda
from ndlc.ir import interpret
from ndlc.passes.schedule import GpuTarget
from ndlc.jit.pipeline import Stages, cuda_kernels
from ndlc.runtime.cuda import CudaProgram, CudaUnavailable, GpuDevice, GpuExecutor
from cuda_cases import OPS, TOLERANCE
from training_cases import batches, setup


def _gpu():
    try:
        return GpuDevice.shared()
    except CudaUnavailable as e:
        return str(e)


GPU = _gpu()
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(isinstance(GPU, str), reason=f"no GPU for the CUDA backend: {GPU}")]


def test_every_op_on_the_gpu_equals_interpreter():
    target = GpuTarget(multiprocessors=GPU.multiprocessors)
    for name, graph, inputs in OPS:
        stages = Stages(graph.name)
        kernels = cuda_kernels(stages, graph, None, target)
        program = CudaProgram(kernels, lower_to_cuda(kernels), {}, executor=GpuExecutor())
        inputs = [np.asarray(x, dtype=v.type.np_dtype) for x, v in zip(inputs, stages.source.inputs)]
        for got, want in zip(program.run(*inputs), interpret(stages.source, *inputs)):
            if want.dtype.kind == "f":
                atol, rtol = TOLERANCE if want.dtype == np.float32 else (1e-10, 1e-9)
                np.testing.assert_allclose(got, want, atol=atol * max(1.0, np.abs(want).max()), rtol=rtol, err_msg=name)
            else:
                np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fifty_mlp_steps_on_the_gpu_equal_cpu_compiled_steps(optimizer, monkeypatch):
    monkeypatch.delenv("NDLC_TF32", raising=False)
    data = batches(50)
    cpu_model, _, cpu_step = setup(optimizer)
    cpu = ndl.compile(cpu_step)
    cpu_losses = [float(cpu(x, y).numpy()) for x, y in data]
    model, _, gpu_step = setup(optimizer)
    gpu = ndl.compile(gpu_step, device="cuda")
    losses = [float(gpu(x, y).numpy()) for x, y in data]
    np.testing.assert_allclose(losses, cpu_losses, rtol=1e-4)
    for name, value in cpu_model.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
