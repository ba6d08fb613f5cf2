"""needle idioms that must run unchanged: its submodules as modules (`import ndlc.nn as nn`), and
`.data` assignment replacing the value and the shape, in eager code and between compiled calls."""
import logging
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
