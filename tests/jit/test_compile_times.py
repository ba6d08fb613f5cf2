"""NDLC_LOG=compile: each compilation logs its trace and each pass's time, and the program keeps them."""
import logging

import numpy as np

import ndlc as ndl

PASSES = ("simplify", "decompose", "fusion", "merge", "schedule", "memory", "codegen", "LLVM optimise",
          "machine code", "load")


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
