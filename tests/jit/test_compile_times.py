"""NDLC_LOG=compile: each compilation logs its trace and each pass's time, and the program keeps them."""
import logging

import numpy as np
import pytest

import ndlc as ndl

PASSES = ("simplify", "decompose", "fusion", "merge", "schedule", "memory", "import", "codegen", "LLVM IR",
          "LLVM optimise", "machine code", "load")


def test_compile_log_names_every_stage_with_its_time(caplog):
    np.random.seed(0)
    model = ndl.nn.Linear(4, 3)
    optimizer = ndl.optim.SGD(model.parameters(), lr=0.1)

    def step(x):
        optimizer.reset_grad()
        loss = model(x).sum()
        loss.backward()
        optimizer.step()
        return loss
    compiled = ndl.compile(step)
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        compiled(np.ones((2, 4), np.float32))
    traced, = [r.getMessage() for r in caplog.records if "traced in" in r.getMessage()]
    assert traced.startswith("@step: traced in ") and "trace " in traced and "autodiff " in traced
    line, = [r.getMessage() for r in caplog.records if "compiled in" in r.getMessage()]
    assert all(f" {work} " in line for work in PASSES), line
    seconds = compiled.last.program.stage_seconds
    assert list(seconds)[-len(PASSES):] == list(PASSES) and all(t >= 0 for t in seconds.values())
    assert compiled.last.captured.seconds["autodiff"] > 0


def test_kernel_stages_print_as_they_were_after_their_pass():
    """Kernel stages are printed on first use, from copies of what later passes change in place."""
    from ndlc.examples.lenet import build_lenet
    from ndlc.examples.train_mlp import training_step
    from ndlc.jit.capture import capture
    from ndlc.ir.types import TensorType
    from ndlc.jit.pipeline import Stages, _graph_stages
    from ndlc.passes.canonical import merged_outer_loops
    from ndlc.passes.fusion import fuse
    from ndlc.passes.memory import plan_memory
    from ndlc.passes.schedule import schedule
    from ndlc.runtime import libraries
    np.random.seed(0)
    model = build_lenet()
    step = training_step(model, ndl.optim.SGD(model.parameters(), lr=0.1))
    captured = capture(step, (TensorType((8, 1, 28, 28), "f32"), TensorType((8,), "i64")))
    graph = _graph_stages(Stages("lenet"), captured.graph, captured.forward)
    eager = []
    program = fuse(graph, use_blas=libraries.blas_enabled())
    eager.append(str(program))
    program = schedule(merged_outer_loops(program), libraries.threads(), libraries.blas_core())
    eager.append(str(program))
    eager.append(str(plan_memory(program)))
    compiled = ndl.compile(step)
    compiled(np.zeros((8, 1, 28, 28), np.float32), np.zeros(8, np.int64))
    assert [compiled.ir(stage) for stage in ("fused", "scheduled", "planned")] == eager
    assert eager[0] != eager[1] != eager[2]


def test_a_compilation_leaves_older_objects_to_the_collector_and_unfreezes_them(monkeypatch, tmp_path):
    """Objects older than a CPU compilation are frozen while it runs (no full collection walks
    them) and unfrozen after it, also when it fails."""
    import gc
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))  # nothing from the program cache: the passes run

    from ndlc.errors import NdlcError
    from ndlc.jit import pipeline
    frozen = []
    passes = pipeline._graph_passes

    def recording(*args, **kwargs):
        frozen.append(gc.get_freeze_count())
        return passes(*args, **kwargs)
    monkeypatch.setattr(pipeline, "_graph_passes", recording)
    before = gc.get_freeze_count()
    compiled = ndl.compile(lambda x: (x * 2.0).exp())
    compiled(np.ones((3, 5), np.float32))
    assert frozen and frozen[0] > before and gc.get_freeze_count() == before

    def failing(*args, **kwargs):
        raise NdlcError("a pass failed")
    monkeypatch.setattr(pipeline, "_graph_passes", failing)
    with pytest.raises(NdlcError, match="a pass failed"):
        ndl.compile(lambda x: (x * 3.0).exp())(np.ones((4, 5), np.float32))
    assert gc.get_freeze_count() == before


def test_objects_the_caller_froze_stay_frozen_after_a_compilation(monkeypatch, tmp_path):
    import gc
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    gc.freeze()
    try:
        ndl.compile(lambda x: (x * 4.0).exp())(np.ones((2, 5), np.float32))
        assert gc.get_freeze_count() > 0, "the compilation unfroze the caller's objects"
    finally:
        gc.unfreeze()
