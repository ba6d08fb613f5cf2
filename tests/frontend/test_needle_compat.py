"""needle idioms that must run unchanged: its submodules as modules (`import ndlc.nn as nn`),
`.data` assignment replacing the value and the shape, in eager code and between compiled calls,
and a needle program using backend_ndarray run through a `needle` alias package of ndlc."""
import logging
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import ndlc as ndl


def test_submodules_import_as_needles_do():
    script = """
import ndlc as ndl
import ndlc.nn as nn
import ndlc.init as init
import ndlc.optim, ndlc.data, ndlc.ops
from ndlc.nn import Linear, LSTM
from ndlc.data import Corpus, get_batch
from ndlc.ops import gather
assert nn is ndl.nn and Linear is nn.Linear is ndl.nn.Linear and LSTM is ndl.nn.LSTM
assert init.rand is ndl.init.rand and ndlc.optim.SGD is ndl.optim.SGD and gather is ndl.gather
assert ndlc.data.Corpus is Corpus and get_batch is ndl.data.get_batch and ndlc.ops.add is ndl.add
assert not hasattr(nn, "np") and not hasattr(init, "math")  # each exports its own names only
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_data_assignment_replaces_value_and_shape():
    layer = ndl.nn.Linear(3, 5)
    bias = layer.bias
    layer.bias.data = ndl.Tensor(np.arange(5.0))
    assert layer.bias is bias and bias.shape == (5,) and bias.dtype == "float32"
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(layer(ndl.Tensor(x)).numpy(), x @ layer.weight.numpy() + np.arange(5.0),
                               rtol=1e-6)
    with pytest.raises(ndl.NdlcError, match=r"cannot assign f64\[5\] data to a f32\[5\] tensor"):
        layer.bias.data = ndl.Tensor(np.zeros(5), dtype="float64")


def test_a_compiled_step_recompiles_when_its_state_changes_shape(caplog):
    layer = ndl.nn.Linear(3, 5)
    forward = ndl.compile(layer)
    x = np.random.randn(4, 3).astype(np.float32)
    forward(x)
    layer.bias.data = ndl.Tensor(np.random.randn(5))
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        out = forward(x)
    np.testing.assert_allclose(out.numpy(), x @ layer.weight.numpy() + layer.bias.numpy(), rtol=1e-5, atol=1e-6)
    assert "model.bias became f32[5] (compiled for f32[1,5])" in caplog.text
    assert len(forward.specialisations) == 1  # the stale program was replaced


def test_a_traced_step_cannot_change_its_state_shape():
    layer = ndl.nn.Linear(3, 2)

    def reshape_bias(x):
        layer.bias.data = layer.bias.data.reshape((2,))
        return layer(x)
    with pytest.raises(ndl.TraceError, match=r"assigns f32\[2\] data to its f32\[1,2\] state"):
        ndl.compile(reshape_bias)(np.ones((1, 3), np.float32))
    assert layer.bias.shape == (1, 2)


NEEDLE_ALIAS = '''"""`import needle` gives ndlc, and needle's submodules are ndlc's."""
import importlib
import sys

import ndlc

for name in ("nn", "init", "data", "ops", "optim", "backend_ndarray"):
    sys.modules[f"needle.{name}"] = importlib.import_module(f"ndlc.{name}")
sys.modules["needle"] = ndlc
'''

NEEDLE_PROGRAM = '''
import numpy as np
import needle as ndl
import needle.nn as nn
from needle import backend_ndarray as nd

device = ndl.cpu()
assert device.enabled() and isinstance(ndl.cuda().enabled(), bool) and ndl.NDArray is nd.NDArray
A = nd.array(np.arange(12.0).reshape(3, 4), device=device)
B = A.permute((1, 0))
assert B._handle.ptr() == A._handle.ptr() and B.strides == (1, 4)
B[0:2, 1] = 9.0
assert A.numpy()[1, 0:2].tolist() == [9.0, 9.0]
assert (A.sum(axis=1, keepdims=True).numpy() == A.numpy().sum(1, keepdims=True)).all()
x = ndl.Tensor(A / 10.0, device=device)
assert isinstance(x.cached_data, nd.NDArray) and x.device == device
np.random.seed(0)
model = nn.Sequential(nn.Linear(4, 8, device=device), nn.ReLU(), nn.Linear(8, 2, device=device))
opt = ndl.optim.SGD(model.parameters(), lr=0.5)
y = ndl.Tensor(np.array([0, 1, 0]), device=device)
losses = []
for _ in range(20):
    opt.reset_grad()
    loss = nn.SoftmaxLoss()(model(x), y)
    loss.backward()
    opt.step()
    losses.append(loss.numpy().item())
assert losses[-1] < losses[0], losses
print("ok")
'''


def test_a_needle_program_runs_unchanged_through_a_needle_alias(tmp_path):
    (tmp_path / "needle").mkdir()
    (tmp_path / "needle" / "__init__.py").write_text(NEEDLE_ALIAS)
    (tmp_path / "program.py").write_text(NEEDLE_PROGRAM)
    root = pathlib.Path(ndl.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(root)]))
    result = subprocess.run([sys.executable, "program.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
