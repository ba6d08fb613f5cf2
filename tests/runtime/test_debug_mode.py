"""Debug mode (NDLC_DEBUG=1, ndl.compile(..., debug=True)): bounds checks on every load and store
of the generated code. A lowering that addresses memory wrongly, planted here in the planned
kernels, raises BoundsError naming the kernel, the buffer, the graph nodes and the user's line
instead of reading or writing past a buffer."""
import dataclasses
import re

import numpy as np
import pytest

import ndlc as ndl
from ndlc.jit import pipeline
from ndlc.ir.indexing import Affine
from ndlc.runtime.program import BoundsError


def shifted_first_store(plan, shift):
    """pipeline.plan_memory, then the first kernel's first store moved `shift` elements on."""
    def planned(kernels):
        kernels = plan(kernels)
        kernel = kernels.kernels[0]
        phase = kernel.phases[0]
        store = phase.stores[0]
        form = store.access.form
        moved = dataclasses.replace(store, access=dataclasses.replace(
            store.access, form=Affine(form.coeffs, form.const + shift)))
        kernel.phases[0] = dataclasses.replace(phase, stores=[moved] + list(phase.stores[1:]))
        return kernels
    return planned


def test_a_store_out_of_bounds_names_the_kernel_and_the_line(monkeypatch):
    monkeypatch.setenv("NDLC_VERIFY", "0")  # the Kernel IR verifier would refuse the planted bug first
    monkeypatch.setattr(pipeline, "plan_memory", shifted_first_store(pipeline.plan_memory, 3))
    step = ndl.compile(lambda x: ndl.tanh(x) * 2.0, debug=True)
    with pytest.raises(BoundsError) as info:
        step(np.ones((4, 5), np.float32))
    message = str(info.value)
    assert "kernel k0 stores %" in message and "at element 20, outside its 20 elements" in message
    assert re.search(r"%0 tanh \(at \S*test_debug_mode.py:\d+\)", message), message


def test_in_bounds_programs_run_unchanged_in_debug_mode(monkeypatch):
    monkeypatch.setenv("NDLC_DEBUG", "1")
    model = ndl.nn.Sequential(ndl.nn.Linear(6, 8), ndl.nn.BatchNorm1d(8), ndl.nn.ReLU(), ndl.nn.Linear(8, 3))
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    got = ndl.compile(model)(x).numpy()
    np.testing.assert_allclose(got, model(ndl.Tensor(x)).numpy(), rtol=1e-5, atol=1e-6)
