"""Scan bodies compiled once (passes/scans.py, passes/steps.py): the passes see one body whatever
the sequence length, and the compiled steps give the unrolled pipeline's (stage A's) results."""
import shutil

import numpy as np
import pytest

import ndlc as ndl
from ndlc.codegen.kernel_key import Keys, kernel_key
from ndlc.jit.capture import capture
from ndlc.passes import schedule as schedule_pass
from ndlc.passes.schedule import SHORT_STORED_ROW
from ndlc.jit.pipeline import compile_graph

from test_compile_scan import language_model_step
from unrolled import unroll_scans, without_hoisting

RNG = np.random.default_rng(3)
schedule = schedule_pass._schedule


@pytest.fixture(autouse=True)
def loops_as_traced(monkeypatch):
    """Bit for bit against the unrolled pipeline: no products over the steps (scan_hoist)."""
    without_hoisting(monkeypatch)
HIDDEN, BATCH = 6, 3


def gru(h0, xs, ws, us):
    """A GRU cell as a user's own `ndl.scan`: update, reset and candidate gates, each from the
    step's x and the carried h."""
    def step(h, x):
        z = ndl.sigmoid(x @ ws[0] + h @ us[0])
        r = ndl.sigmoid(x @ ws[1] + h @ us[1])
        n = ndl.tanh(x @ ws[2] + (r * h) @ us[2])
        h = (1 - z) * n + z * h
        return h, h
    return ndl.scan(step, h0, xs)


def gru_step(length):
    """An SGD step of a GRU's weights on the loss of its outputs (a forward and a reverse scan),
    and a batch."""
    ws = [ndl.Tensor(RNG.standard_normal((4, HIDDEN)).astype(np.float32) * 0.5, requires_grad=True) for _ in range(3)]
    us = [ndl.Tensor(RNG.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.5, requires_grad=True)
          for _ in range(3)]
    optimizer = ndl.optim.SGD(ws + us, lr=0.1)

    def step(h0, xs):
        optimizer.reset_grad()
        h, hs = gru(h0, xs, ws, us)
        loss = (hs * hs).sum() + h.sum()
        loss.backward()
        optimizer.step()
        return loss
    return step, (RNG.standard_normal((BATCH, HIDDEN)).astype(np.float32),
                  RNG.standard_normal((length, BATCH, 4)).astype(np.float32))


def both(step, batch):
    """The outputs of `step`'s captured graph compiled with its scans' bodies compiled once, and
    unrolled (stage A), and the first program."""
    captured = capture(step, batch)
    arguments = captured.arguments(batch)
    looped = compile_graph(captured.graph, cached=False)
    unrolled = compile_graph(unroll_scans(captured.graph), cached=False)
    return looped.run(*arguments), unrolled.run(*arguments), looped


@pytest.mark.parametrize("length", [1, 5])
def test_a_gru_scan_and_its_gradient_equal_the_unrolled_pipeline_bit_for_bit(length):
    looped, unrolled, program = both(*gru_step(length))
    for got, want in zip(looped, unrolled):
        np.testing.assert_array_equal(got, want)
    steps = [k.step for k in program.kernels.kernels if k.step]
    assert len({s.split(" of ")[1] for s in steps}) == 2  # the forward scans share one, then the reverse


def test_an_lstm_language_model_step_equals_the_unrolled_pipeline_bit_for_bit():
    step, batch, _ = language_model_step(4)
    looped, unrolled, _ = both(step, batch)
    for got, want in zip(looped, unrolled):
        np.testing.assert_array_equal(got, want)


def nested_step():
    """An SGD step through a scan whose body scans too (the inner recurrence restarts from the
    outer carry), and a batch."""
    w = ndl.Tensor(RNG.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.5, requires_grad=True)
    optimizer = ndl.optim.SGD([w], lr=0.1)

    def step(h0, xss):
        optimizer.reset_grad()

        def outer(h, xs):
            def inner(g, x):
                g = ndl.tanh(g @ w + x)
                return g, g
            g, gs = ndl.scan(inner, h, xs)
            return g + h, gs
        h, ys = ndl.scan(outer, h0, xss)
        loss = (ys * ys).sum() + h.sum()
        loss.backward()
        optimizer.step()
        return loss
    return step, (RNG.standard_normal((BATCH, HIDDEN)).astype(np.float32),
                  RNG.standard_normal((4, 3, BATCH, HIDDEN)).astype(np.float32))


def test_a_scan_in_a_scans_body_equals_the_unrolled_pipeline_bit_for_bit():
    looped, unrolled, program = both(*nested_step())
    for got, want in zip(looped, unrolled):
        np.testing.assert_array_equal(got, want)
    assert any(k.step for k in program.kernels.kernels)


def stage_sizes(seq_len):
    """The LSTM step's decomposed graph (bodies included) in lines, its kernels outside the scans,
    and the kernels of one step of each scan."""
    step, batch, _ = language_model_step(seq_len)
    program = compile_graph(capture(step, batch).graph, cached=False)
    kernels = program.kernels.kernels
    per_scan = {}
    for k in kernels:
        if k.step.startswith("1 of "):
            per_scan[k.step] = per_scan.get(k.step, 0) + 1
    return (len(program.ir("decomposed").splitlines()), sum(not k.step for k in kernels),
            sorted(per_scan.values()))


def test_the_passes_see_one_body_whatever_the_sequence_length():
    short, long = stage_sizes(8), stage_sizes(24)
    assert short == long
    assert len(short[2]) == 4  # two layers, each a forward and a reverse scan


def compiler_work(seq_len, monkeypatch):
    """For the LSTM step at `seq_len`: the kernels the schedule decided on, those keyed in full
    (codegen/kernel_key.py: Keys), the program's buffers and its kernels; every step kernel's key
    checked against keying it in full."""
    decided = []
    monkeypatch.setattr(schedule_pass, "_schedule", lambda kernel, *rest: decided.append(kernel) or schedule(kernel, *rest))
    step, batch, _ = language_model_step(seq_len)
    program = compile_graph(capture(step, batch).graph, cached=False)
    keys = Keys()
    for kernel in program.kernels.kernels:
        moved, full = keys(kernel), kernel_key(kernel)
        assert (moved.text, moved.buffers, moved.offsets) == (full.text, full.buffers, full.offsets), kernel
    assert keys.keyed == program.stages["llvm"].keyed
    return len(decided), keys.keyed, len(program.kernels.buffers), len(program.kernels.kernels)


def test_the_compiler_keys_and_schedules_each_body_kernel_whatever_the_sequence_length(monkeypatch):
    short, long = compiler_work(8, monkeypatch), compiler_work(24, monkeypatch)
    assert short[:3] == long[:3]  # decided, keyed, buffers
    assert long[3] > short[3] + 16 * 4  # the plan still runs every step's kernels


def softmax_step(length):
    """A forward scan whose body's softmax keeps its exponentials in per-thread rows (16 rows: a
    row pass merges into a reduction over that many), and a batch. Rows of SHORT_STORED_ROW
    classes: a softmax over shorter rows runs side by side, its rows in no row-local buffer."""
    rows, hidden = 16, SHORT_STORED_ROW
    w = ndl.Tensor(RNG.standard_normal((hidden, hidden)).astype(np.float32))

    def step(h0, xs):
        def cell(h, x):
            z = h @ w + x
            e = ndl.exp(z - z.max((1,)).reshape((rows, 1)).broadcast_to(z.shape))
            h = e / e.sum((1,)).reshape((rows, 1)).broadcast_to(z.shape)
            return h, h
        return ndl.scan(cell, h0, xs)[1].sum()
    return step, (RNG.standard_normal((rows, hidden)).astype(np.float32),
                  RNG.standard_normal((length, rows, hidden)).astype(np.float32))


def test_a_body_temporary_is_one_buffer_for_all_steps_and_may_stay_row_local():
    looped, unrolled, program = both(*softmax_step(5))
    for got, want in zip(looped, unrolled):
        np.testing.assert_array_equal(got, want)
    steps = [k for k in program.kernels.kernels if k.step and k.local]
    assert len(steps) == 5 and len({tuple(k.local) for k in steps}) == 1, program.ir("planned")
    assert all(program.kernels.buffers[name].kind == "local" for name in steps[0].local)


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulation needs g++ (C++20)")
def test_scan_steps_compiled_for_cuda_equal_the_cpu_ones(monkeypatch):
    monkeypatch.setenv("NDLC_CUDA_EMULATE", "1")
    step, batch = gru_step(3)
    captured = capture(step, batch)
    arguments = captured.arguments(batch)
    cpu = compile_graph(captured.graph, cached=False).run(*arguments)
    cuda = compile_graph(captured.graph, device="cuda")
    assert any(k.step for k in cuda.kernels.kernels)
    for got, want in zip(cuda.run(*arguments), cpu):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
