"""Kernel IR as text: parse_kernels reads every kernel stage (fused, scheduled, planned; CPU and CUDA
schedules) of the MLP, LeNet-BN, LSTM and Transformer training steps back into the same program,
field for field; malformed text is an IRParseError naming the line; under NDLC_VERIFY the pipeline
checks the round trip of every kernel stage."""
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

import ndlc as ndl
from ndlc.errors import IRParseError, VerifyError
from ndlc.ir import parse, parse_kernels
from ndlc.ir.checks import maybe_verify_kernels
from ndlc.ir.indexing import Affine
from ndlc.ir.kernel import Buffer
from ndlc.ir.scalar import ScalarExpr, transform
from ndlc.ir.types import TensorType
from ndlc.jit import pipeline
from ndlc.passes.decompose import decompose
from ndlc.passes.fusion import fuse
from ndlc.passes.memory import plan_memory
from ndlc.passes.schedule import schedule
from ndlc.passes.simplify import simplify
import training_cases

sys.path.insert(0, str(Path(__file__).parents[1] / "jit"))
from test_compile_sequence import LanguageModel, lstm_setup, text_batches  # noqa: E402


def structure(x):
    """Every field of a kernel program (not the constants' values, nor what is no part of its value:
    a step kernel's origin), expressions as trees."""
    if isinstance(x, ScalarExpr):
        return transform(x, lambda e, args: (e.prim, tuple(args), type(e.payload).__name__, structure(e.payload)))
    if isinstance(x, Affine):
        return ("affine", x.coeffs, x.const)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (type(x).__name__,) + tuple((f.name, structure(getattr(x, f.name)))
                                            for f in dataclasses.fields(x) if f.name != "constants" and f.compare)
    if isinstance(x, (list, tuple)):
        return tuple(map(structure, x))
    if isinstance(x, dict):
        return tuple((k, structure(v)) for k, v in x.items())
    return ("str", str(x)) if isinstance(x, str) else (type(x).__name__, x)


def assert_round_trip(program):
    text = str(program)
    again = parse_kernels(text)
    assert str(again) == text
    assert structure(again) == structure(program)


def mlp():
    _, _, step = training_cases.setup("adam")
    return step, training_cases.batches(1)[0]


def lenet_bn():
    from ndlc.examples.lenet import build_lenet
    from ndlc.examples.train_mlp import training_step
    np.random.seed(0)
    model = build_lenet()
    rng = np.random.default_rng(0)
    return training_step(model, ndl.optim.SGD(model.parameters(), lr=0.5)), \
        (rng.random((8, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 8))


def lstm():
    _, step = lstm_setup(11, 4, 3, 5)
    (x, y), = text_batches(11, 4, 3, 1)
    h = np.zeros((2, 3, 5), np.float32)
    return step, (x.numpy(), y.numpy(), h, h)


def transformer():
    np.random.seed(3)
    model = LanguageModel(13, 8, 16, 2, "transformer")
    opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    loss_fn = ndl.nn.SoftmaxLoss()

    def train_step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x)[0], y)
        loss.backward()
        opt.step()
        return loss
    (x, y), = text_batches(13, 6, 2, 1)
    return train_step, (x.numpy(), y.numpy())


def kernel_stages(make):
    """(stage, text, structure) of each kernel stage of a training step's compilation, as the
    pipeline makes them: fused, scheduled (2 threads) and planned for the CPU, then for CUDA
    (the emulation's schedule). Passes change their input in place: each is recorded at once."""
    step, args = make()
    compiled = ndl.compile(step)
    compiled._find_state()
    captured = compiled._capture(tuple(TensorType.of(np.asarray(a)) for a in args))
    found = []
    original = pipeline.Stages.kernels

    def record(self, stage, program, work):
        found.append((f"{self.name} {stage}", str(program), structure(program)))
        return original(self, stage, program, work)
    pipeline.Stages.kernels = record
    try:
        stages = pipeline.Stages("cpu")
        graph = pipeline._graph_stages(stages, captured.graph, captured.forward)
        program = stages.kernels("fused", fuse(graph, use_blas=True), "fusion")
        plan_memory(stages.kernels("scheduled", schedule(program, 2), "schedule"))
        pipeline.cuda_kernels(pipeline.Stages("cuda"), captured.graph, captured.forward,
                              pipeline.executor_target(None))
    finally:
        pipeline.Stages.kernels = original
    return found


@pytest.mark.parametrize("make", [mlp, lenet_bn, lstm, transformer])
def test_every_kernel_stage_of_a_training_step_reads_back(make):
    found = kernel_stages(make)
    assert [stage for stage, _, _ in found] == ["cpu fused", "cpu scheduled", "cuda fused", "cuda scheduled",
                                                "cuda planned"]
    for stage, text, fields in found:
        again = parse_kernels(text)
        assert str(again) == text, stage
        assert structure(again) == fields, stage
    planned = plan_memory(parse_kernels(found[1][1]))
    assert_round_trip(planned)
    for feature in ("new %", "call sgemm(", "cuda: ", "is written in place of"):
        assert feature in str(planned) + found[-1][1], feature


def test_conv_guards_chunks_rows_and_local_rows_read_back(avx2_tiles):
    graph = parse("""
graph @g(%x: f32[2,6,6,3], %w: f32[3,3,3,4], %t: f32[4096,8], %r: f32[64,70], %y: f32[2,19,19,6], %v: f32[5,5,6,16]) {
  %0 = conv(%x, %w, stride=2, padding=1) : f32[2,3,3,4]
  %1 = summation(%t, axes=(0,)) : f32[8]
  %2 = summation(%r, axes=(0,)) : f32[70]
  %3 = logsoftmax(%r, axis=1) : f32[64,70]
  %4 = conv(%y, %v, stride=2, padding=0) : f32[2,8,8,16]
  return %0, %1, %2, %3, %4
}""")
    program = plan_memory(schedule(fuse(simplify(decompose(graph))), 2))
    text = str(program)
    for feature in (" if 0 <= ", "strategy: chunks", "strategy: rows", "is local: one row of", "by 4 i2 accumulate"):
        assert feature in text, feature
    assert_round_trip(program)


def test_constants_random_numbers_and_casts_read_back():
    graph = parse("""
graph @g(%x: f32[5], %m: bool[5], %seed: i64[]) {
  %0 = full(shape=(5,), value=-inf, dtype=f32) : f32[5]
  %1 = maximum(%x, %0) : f32[5]
  %2 = where(%m, %1, %x) : f32[5]
  %3 = cast(%2, dtype=f64) : f64[5]
  %4 = mul_scalar(%3, scalar=1e-30) : f64[5]
  %5 = greater(%x, %1) : bool[5]
  %6 = random_uniform(%seed, shape=(5,), dtype=f32, stream=0) : f32[5]
  %7 = add(%6, %x) : f32[5]
  return %4, %5, %7
}""")
    program = fuse(graph)
    for literal in ("-inf", "1e-30", "cast(", "index[", "xor(", "shr("):
        assert literal in str(program), literal
    assert_round_trip(program)


BROKEN = [
    ("program g() -> ()", 1, "expected 'program @name"),
    ("program @g(%x) -> (%x)\n  %x: f32[2] scratch", 2, "unknown buffer kind 'scratch'"),
    ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n  loops: i0<2\n"
     "  $0 = %z[i0]\n  store %y[i0] = $0", 7, "%z is not a buffer of the program"),
    ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n  loops: i0<2\n"
     "  $0 = %x[i0]\n  store %y[i0] = frob($0)", 8, "unknown primitive 'frob'"),
    ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n  loops: i0<2\n"
     "  $0 = %x[i0]\n  store %y[i0] = add($0)", 8, "add takes 2 operands, not 1"),
    ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n  loops: i0<2\n"
     "  $0 = %x[i1]\n  store %y[i0] = $0", 7, "index term 'i1'"),
    ("program @g(%x) -> (%y)\n  %x: f32[2,3] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n  loops: i0<2 | i1<3\n"
     "  $0 = %x[3*i0 + i1]\n  phase 0: reduce\n    acc0 = mean of $0\n    store %y[i0] = acc0", 9,
     "unknown combine 'mean'"),
    ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n  loops: j<2", 6,
     "loop 'j<2'"),
    ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %x, %y\n  loops: i0<2\n"
     "  $0 = %x[i0]\n  store %y[i0] = $0", 5, "kernel k0 writes %y, not what its first line says"),
    ("program @g(%x) -> (new %x = %y, %y)", 1, "plain outputs come first"),
    ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n  loops: i0<2\n"
     "  $0 = %x[i0]\n  phase one: reduce", 8, "expected 'phase N: kind' or 'store"),
    ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n  loops: i0<2\n"
     "  $0 = %x[i0]\n  store %y = $0", 8, "expected 'phase N: kind' or 'store"),
    ("program @g(%x) -> (%y)\n  %x: f16[2] input", 2, "unknown dtype 'f16'"),
    ("program @g(%x) -> (%y)\n  %x: f32[2,3] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n  loops: i0<2 | i1<3\n"
     "  phase 0: reduce\n    acc0 = add of 1.0\n    store %y[i0] = mul(acc0, 2.0)", 9, "the dtype of acc0"),
    ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n  lops: i0<2", 6,
     "expected 'loops: ...'"),
    ("program @g(%x, %i) -> (%y)\n  %x: f32[4] input\n  %i: i64[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n"
     "  loops: i0<2\n  $0 = %i[i0]\n  $1 = %x[1*$0 + 0 if 0 <= $1 < 4]\n  store %y[i0] = $1", 9,
     "$1 adds row $0 but checks $1"),
]


@pytest.mark.parametrize("text, line, message", BROKEN)
def test_malformed_text_names_the_line(text, line, message):
    with pytest.raises(IRParseError) as error:
        parse_kernels(text)
    assert error.value.line == line and message in str(error.value), str(error.value)


def test_negative_zero_and_zero_stay_apart():
    text = ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n"
            "  loops: i0<2\n  $0 = %x[i0]\n  store %y[i0] = add(mul($0, -0.0), 0.0)")
    assert str(parse_kernels("\n" + text + "\n\n")) == text


def test_text_that_parses_but_does_not_verify_is_a_verify_error():
    text = ("program @g(%x) -> (%y)\n  %x: f32[2] input\n  %y: f32[2] output\n\nkernel k0 -> %y\n"
            "  loops: i0<2\n  $0 = %x[i0 + 1]\n  store %y[i0] = $0")
    with pytest.raises(VerifyError, match=r"\$0 reaches elements 1..2 of %x, which has 2"):
        parse_kernels(text)
    assert str(parse_kernels(text, verify=False)) == text


def test_the_pipeline_checks_that_kernel_text_round_trips(monkeypatch):
    program = fuse(parse("graph @g(%x: f32[3]) {\n  %0 = exp(%x) : f32[3]\n  return %0\n}"))
    assert maybe_verify_kernels(program, "fused") is program
    monkeypatch.setattr(Buffer, "__str__", lambda b: f"%{b.name}: {b.dtype}[{','.join(map(str, b.shape))}]")
    with pytest.raises(VerifyError, match="after fused: the text form does not parse back: line 2"):
        maybe_verify_kernels(program, "fused")
