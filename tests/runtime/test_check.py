"""Check mode names the kernel that computes a wrong value, its graph nodes and their source lines."""
import re

import numpy as np
import pytest

from ndlc.ir import get_op, parse
from ndlc.ir import scalar as S
from ndlc.frontend.compile import compile_graph

GRAPH = """
graph @mlp(%x: f32[8,4], %w: f32[4,3], %b: f32[3]) {
  %0 = matmul(%x, %w) : f32[8,3]
  %1 = broadcast_to(%b, shape=(8, 3)) : f32[8,3]
  %2 = add(%0, %1) : f32[8,3]
  %3 = tanh(%2) : f32[8,3]
  %4 = summation(%3, axes=(1,)) : f32[8]
  %5 = exp(%4) : f32[8]
  return %5, %3
}"""


def inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32) for s in [(8, 4), (4, 3), (3,)]]


def test_a_correct_program_reports_nothing_and_its_results_are_unchanged():
    program = compile_graph(parse(GRAPH))
    before = [r.copy() for r in program.run(*inputs())]
    assert program.check(*inputs()) is None
    for got, want in zip(program.run(*inputs()), before):
        np.testing.assert_array_equal(got, want)


def test_a_planted_wrong_lowering_is_named(monkeypatch):
    monkeypatch.setattr(get_op("tanh"), "scalar", lambda x: S.tanh(x) * 1.5)
    program = compile_graph(parse(GRAPH))
    divergence = program.check(*inputs())
    assert divergence is not None and divergence.buffer == "3"
    report = str(divergence)
    assert report.startswith(f"kernel {divergence.kernel.name} computes %3 wrong")
    assert "%3 tanh" in report and "store %3[" in report


def test_check_mode_names_the_wrong_kernel_of_a_training_step_and_the_users_line(monkeypatch):
    import ndlc as ndl
    from ndlc.examples.train_mlp import build_mlp, training_step
    np.random.seed(0)
    model = build_mlp(6, (8,), 3)
    step = ndl.compile(training_step(model, ndl.optim.SGD(model.parameters(), lr=0.1)), check=True)
    x, y = np.random.rand(16, 6).astype(np.float32), np.random.randint(0, 3, 16)
    step(x, y)  # no fault: nothing reported, training proceeds
    monkeypatch.setattr(get_op("relu"), "scalar", lambda v: S.maximum(v, 0.0) * 1.25)
    step = ndl.compile(training_step(model, ndl.optim.SGD(model.parameters(), lr=0.1)), check=True)
    with pytest.raises(ndl.CheckError, match=r"kernel k\d+ computes %\d+ wrong") as error:
        step(x, y)
    assert re.search(r"%\d+ relu \(at .*test_check.py:\d+\)", str(error.value)), str(error.value)
