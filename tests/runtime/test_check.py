"""Check mode names the kernel that computes a wrong value, its graph nodes and their source lines."""
import numpy as np

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
