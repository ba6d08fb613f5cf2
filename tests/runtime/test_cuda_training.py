"""Training steps compiled for device='cuda', run under the host emulation of CUDA
(NDLC_CUDA_EMULATE=1): equal to the CPU compiled steps, state resident in the program's device
memory and read back on demand; clear errors where the CUDA backend cannot run."""
import re
import shutil

import numpy as np
import pytest

import ndlc as ndl
from ndlc.examples.lenet import build_lenet
from ndlc.examples.train_mlp import training_step
from ndlc.frontend.tensor import resident_in
from ndlc.runtime.cuda import CudaUnavailable
from training_cases import batches, setup

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulation needs g++ (C++20)")
nn = ndl.nn


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setenv("NDLC_CUDA_EMULATE", "1")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mlp_steps_on_cuda_equal_cpu_compiled_steps(emulated, optimizer):
    data = batches(6)
    cpu_model, cpu_opt, cpu_step = setup(optimizer)
    cpu = ndl.compile(cpu_step)
    cpu_losses = [float(cpu(x, y).numpy()) for x, y in data]

    model, opt, train_step = setup(optimizer)
    step = ndl.compile(train_step, device=ndl.cuda())
    losses = [float(step(x, y).numpy()) for x, y in data]
    np.testing.assert_allclose(losses, cpu_losses, rtol=1e-4)
    weight = model.parameters()[0]
    assert resident_in(weight._value) is not None  # between steps the parameters live on the device
    for name, value in cpu_model.state_dict().items():  # read back on demand
        np.testing.assert_allclose(model.state_dict()[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    assert resident_in(weight._value) is None
    assert "__global__" in step.ir("cuda")


def test_state_changed_on_the_host_is_uploaded_before_the_next_step(emulated):
    (x, y), = batches(1)
    model, opt, train_step = setup("sgd")
    step = ndl.compile(train_step, device="cuda")
    step(x, y)
    for p in model.parameters():
        p.data = ndl.Tensor(np.zeros(p.shape, np.float32))
    reference_model, _, reference_step = setup("sgd")
    for p in reference_model.parameters():
        p.data = ndl.Tensor(np.zeros(p.shape, np.float32))
    reference_model.load_state_dict({k: v for k, v in model.state_dict().items()})
    want = float(ndl.compile(reference_step)(x, y).numpy())
    assert float(step(x, y).numpy()) == pytest.approx(want, rel=1e-5)


def test_lenet_step_on_cuda_equals_cpu(emulated):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    results = []
    for device in ("cpu", "cuda"):
        np.random.seed(0)
        model = build_lenet()
        opt = ndl.optim.SGD(model.parameters(), lr=0.1)
        step = ndl.compile(training_step(model, opt), device=device)
        results.append([float(step(x, y).numpy()) for _ in range(2)])
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4)


def test_cuda_without_pycuda_or_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NDLC_CUDA_EMULATE", raising=False)
    try:
        import pycuda.driver  # noqa: F401
        pytest.skip("pycuda is installed here")
    except ImportError:
        pass
    with pytest.raises(CudaUnavailable, match="pycuda"):
        ndl.compile(lambda x: x + 1, device="cuda")


def test_check_mode_on_cuda_is_refused(emulated):
    step = ndl.compile(lambda x: x * 2, device="cuda", check=True)
    with pytest.raises(ndl.NdlcError, match="device='cpu'"):
        step(np.ones(3, np.float32))


def test_ndlc_train_on_cuda_prints_the_cpu_run_losses(emulated, tmp_path, capsys):
    from ndlc.cli import main
    from test_cli import _fashion_like
    _fashion_like(tmp_path, 64)
    lines = {}
    for device in ("cpu", "cuda"):
        assert main(["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress", "--device", device]) == 0
        (lines[device],) = capsys.readouterr().out.strip().splitlines()
    numbers = {device: [float(n) for n in re.findall(r"(?:loss|accuracy) ([0-9.]+)", line)] for device, line in lines.items()}
    assert len(numbers["cpu"]) == 2
    np.testing.assert_allclose(numbers["cuda"], numbers["cpu"], atol=2e-4)  # loss and test accuracy


def test_a_cuda_step_draws_its_kernel_stage_as_dot(emulated):
    step = ndl.compile(lambda x: (x * 2).sum(), device="cuda")
    step(np.ones((4, 3), np.float32))
    dot = step.ir("planned", format="dot")
    assert dot.startswith("digraph") and "cluster" in dot
