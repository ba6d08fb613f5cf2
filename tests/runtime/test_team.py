"""The team of threads a program runs on: chosen at run time (one compiled program gives the same
bits on a team of 1 and of 2: reductions, chunked kernels, gemm row splits, training steps), and
per program by timing its calls (runtime/team.py), or pinned to the budget with NDLC_TEAM=budget."""
import glob
import logging
import os
import threading

import numpy as np
import pytest

import ndlc as ndl
from ndlc import env
from ndlc.ir import parse
from ndlc.codegen.llvm_pool import QUIET_MOST
from ndlc.ir.kernel import Strategy
from ndlc.jit.compile import compile_graph
from ndlc.passes.gemm_pieces import FINE_CORES
from ndlc.runtime import libraries, pool, program_cache, team as team_module
from ndlc.runtime.team import EVERY, FIRST_PROBE, PROBE_EVERY, SAMPLES, STALLED, WINDOW, Team

needs_team = pytest.mark.skipif(not libraries.team_runs(), reason="ndlc's thread team does not run here")

SUMS = """
graph @sums(%x: f32[1024,512], %w: f32[512,256]) {
  %0 = summation(%x, axes=(1,)) : f32[1024]
  %1 = summation(%x, axes=(0,)) : f32[512]
  %2 = matmul(%x, %w) : f32[1024,256]
  %3 = exp(%x) : f32[1024,512]
  return %0, %1, %2, %3
}"""


def _bits_at(program, team, arrays):
    """The bytes of each output of `program` run on `team` threads."""
    program.team.current = team
    outputs = [output.tobytes() for output in program.run(*arrays)]
    assert libraries.team() == team
    return outputs


@needs_team
def test_reductions_chunks_and_gemm_row_splits_give_the_same_bits_on_one_and_two_threads(two_threads, monkeypatch):
    monkeypatch.setenv("NDLC_PROFILE", "1")
    program = compile_graph(parse(SUMS))
    split = [k for k in program.kernels.kernels if k.split and k.split.threads == 2]
    assert {k.strategy for k in split} >= {Strategy.POINT, Strategy.CHUNKS}  # row sums and column sums
    assert any(k.gemm for k in split)  # the matmul's rows in pieces
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1024, 512)).astype(np.float32), rng.standard_normal((512, 256)).astype(np.float32)]
    assert _bits_at(program, 1, arrays) == _bits_at(program, 2, arrays) == _bits_at(program, 1, arrays)
    assert "3 kernels, team 1 of 2 threads (fixed)" in program.profile().splitlines()[0]


FINE = """
graph @fine(%x: f32[1000,300], %w: f32[300,520], %g: f32[1000,520]) {
  %0 = matmul(%x, %w) : f32[1000,520]
  %1 = transpose(%x, axes=(0, 1)) : f32[300,1000]
  %2 = matmul(%1, %g) : f32[300,520]
  %3 = transpose(%w, axes=(0, 1)) : f32[520,300]
  %4 = matmul(%g, %3) : f32[1000,300]
  return %0, %2, %4
}"""
# (rows, columns, reduced, transposed operands): ResNet9's gemms at batch 64 that ran as one call while
# every piece had to reach FINE_MACS multiply-adds, on the packed path whole and cut; then one on the
# small-matrix kernels whole and cut
FINE_SHAPES = ((64, 128, 1152, ""), (64, 1152, 128, "w"), (1152, 128, 64, "x"), (288, 32, 1024, "x"),
               (64, 128, 128, "w"), (120, 64, 129, ""))


def _product(dtype, m, n, k, transposed):
    """The graph of an m x k @ k x n product whose operands named in `transposed` ('x', 'w') are given
    transposed, and its operands' shapes."""
    shapes = {"x": (k, m) if "x" in transposed else (m, k), "w": (n, k) if "w" in transposed else (k, n)}
    x, w = (f"{dtype}[{shapes[name][0]},{shapes[name][1]}]" for name in "xw")
    lines = [f"graph @g(%x: {x}, %w: {w}) {{"]
    lines += [f"  %{name}t = transpose(%{name}, axes=(0, 1)) : {dtype}[{shapes[name][1]},{shapes[name][0]}]"
              for name in "xw" if name in transposed]
    operands = ", ".join(f"%{name}t" if name in transposed else f"%{name}" for name in "xw")
    return "\n".join(lines + [f"  %0 = matmul({operands}) : {dtype}[{m},{n}]", "  return %0", "}"]), shapes.values()


@needs_team
@pytest.mark.skipif(libraries.blas_core() not in FINE_CORES, reason="FINE_ROWS are for SkylakeX's kernels")
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_gemm_pieces_on_skylakex_kernels_give_one_calls_bits(dtype, monkeypatch):
    """A gemm cut at multiples of FINE_ROWS (4 float32 rows, 12 float64), every piece on the whole
    call's path (packed or small-matrix; plain and transposed operands) gives the bits of one call:
    a budget of 2 threads those of a budget of 1."""
    rng = np.random.default_rng(0)
    numpy_dtype = np.float32 if dtype == "f32" else np.float64
    programs = [(FINE.replace("f32", dtype), ((1000, 300), (300, 520), (1000, 520)))]
    programs += [_product(dtype, *shape) for shape in FINE_SHAPES]
    splits = []
    for text, shapes in programs:
        arrays = [rng.standard_normal(shape).astype(numpy_dtype) for shape in shapes]
        outputs = {}
        for threads in (1, 2):
            monkeypatch.setenv("NDLC_THREADS", str(threads))
            program = compile_graph(parse(text))
            outputs[threads] = [output.tobytes() for output in program.run(*arrays)]
        splits += [k.split.piece if k.split else None for k in program.kernels.kernels if k.gemm]
        assert outputs[1] == outputs[2], text
    # (float32's 1152x64 @ 64x128 runs in 10 small-matrix calls of 116 rows: gemm_pieces.small_calls)
    assert splits == ([500, 152, 500, 32, 32, 116, 144, 32, 60] if dtype == "f32" else
                      [504, 156, 504, 36, 36, 576, 144, 36, 60])


@needs_team
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemms_of_any_size_give_one_calls_bits_on_two_threads(dtype, monkeypatch):
    """Where a gemm is cut, its pieces sum as one call does (passes/schedule.py TILED_CORES,
    FINE_MACS): on Zen 4's SkylakeX kernels, pieces of 48 rows of these products took OpenBLAS's
    small-matrix kernels and differed from one call in 115 of 127, 5 of 197 and 11 of 299 rows."""
    rng = np.random.default_rng(1)
    for m, k, n in ((127, 129, 65), (197, 453, 422), (299, 130, 343), (1000, 77, 333)):
        text = (f"graph @g(%x: {dtype[0]}{dtype[-2:]}[{m},{k}], %w: {dtype[0]}{dtype[-2:]}[{k},{n}]) {{\n"
                f"  %0 = matmul(%x, %w) : {dtype[0]}{dtype[-2:]}[{m},{n}]\n  return %0\n}}")
        x, w = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
        bits = []
        for threads in (1, 2):
            monkeypatch.setenv("NDLC_THREADS", str(threads))
            monkeypatch.setenv("NDLC_TEAM", "budget")
            bits.append(compile_graph(parse(text)).run(x, w)[0].tobytes())
        assert bits[0] == bits[1], (m, k, n)


def _cpu_ns(field=0):
    """Thread id -> CPU nanoseconds it ran (Linux's schedstat; field 1: nanoseconds it waited, runnable,
    for a core)."""
    return {path.split("/")[-2]: int(open(path).read().split()[field])
            for path in glob.glob("/proc/self/task/*/schedstat")}


@needs_team
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads per-thread CPU times from /proc")
def test_the_team_is_how_many_threads_work(two_threads):
    program = compile_graph(parse("graph @e(%x: f32[2048,1024]) {\n  %0 = exp(%x) : f32[2048,1024]\n  return %0\n}"))
    x = np.ones((2048, 1024), np.float32)
    program_cache.finish()  # the cache entry's writer thread (linking, the imports object) is done
    me = str(threading.get_native_id())
    for team in (1, 2):
        program.team.current = team
        counts = pool.counts()
        before, queued = _cpu_ns(), _cpu_ns(1)
        # CPU times tick by 4 ms on this VM: a long enough run to compare them; a team of two runs
        # past the pool's quiet regions, which earlier tests' crowded regions may have left it in
        runs = 50 if team == 1 else 50 + QUIET_MOST
        for _ in range(runs):
            program.run(x)
        after = _cpu_ns()
        others = max((after[t] - before.get(t, 0) for t in after if t != me), default=0)
        mine = after[me] - before[me]
        opened, joined, crowded = (pool.counts()[name] - counts[name]
                                   for name in ("regions", "joined", "crowded_joins"))
        waited = max((ns - queued.get(t, 0) for t, ns in _cpu_ns(1).items() if t != me), default=0)
        if team == 2 and not joined and (crowded or waited > 1e6):  # the other core was busy: the worker
            # only woke on this one (it gives its pieces back) or waited for a core until the regions closed
            pytest.skip("the other core was busy: nothing to tell of the team here")
        if team == 1:
            assert opened == 0 and others < 0.05 * mine, (mine, others)
        else:  # the worker's share of the work depends on the machine's load: that it works, not how much
            assert opened == runs and joined > 0 and others > 0, (opened, joined, mine, others)


def _step(model, optimizer, shape):
    """A compiled training step of `model` run once on a batch of `shape`; its program and arguments."""
    from ndlc.examples.train_mlp import training_step
    step = ndl.compile(training_step(model, optimizer))
    rng = np.random.default_rng(0)
    batch = rng.random(shape, dtype=np.float32), rng.integers(0, 10, shape[0])
    step(*batch)
    return step.last.program, step.last.captured.arguments(batch)


@needs_team
@pytest.mark.parametrize("network", ["mlp", "lenet"])
def test_a_training_step_gives_the_same_bits_on_one_and_two_threads(two_threads, network):
    from ndlc.examples.lenet import build_lenet
    from ndlc.examples.train_mlp import build_mlp
    np.random.seed(0)
    if network == "mlp":
        model = build_mlp()
        program, arrays = _step(model, ndl.optim.Adam(model.parameters(), lr=1e-3), (256, 784))
    else:
        model = build_lenet()
        program, arrays = _step(model, ndl.optim.SGD(model.parameters(), lr=0.1), (64, 1, 28, 28))
    assert any(k.split and k.split.threads == 2 for k in program.kernels.kernels)
    assert _bits_at(program, 1, arrays) == _bits_at(program, 2, arrays)


class _Clock:
    """time.perf_counter for runtime/team.py, advanced by each call as long as `costs` says for
    the team it runs on."""

    def __init__(self, monkeypatch, costs):
        self.now, self.costs, self.teams = 0.0, costs, []
        monkeypatch.setattr(team_module.time, "perf_counter", lambda: self.now)

    def call(self):
        self.teams.append(libraries.team())
        self.now += self.costs[libraries.team()]

    def run(self, team, calls):
        for _ in range(calls):
            team.run(self.call)

    def steady(self, team, calls):
        """As many steady runs (Team.call, timed once in EVERY calls while settled); how many
        were timed."""
        timed = 0
        for _ in range(calls):
            before = team.untimed
            team.call(self.call)
            timed += not before
        return timed


@pytest.fixture
def adaptive(monkeypatch):
    monkeypatch.delenv("NDLC_TEAM", raising=False)


def test_the_faster_team_is_kept_and_the_other_probed_in_under_five_percent_of_calls(monkeypatch, adaptive, caplog):
    clock = _Clock(monkeypatch, {1: 5e-3, 2: 6.5e-3})
    team = Team("step", 2)
    with caplog.at_level(logging.INFO, logger="ndlc.team"):
        clock.run(team, 3000)
    assert team.current == 1 and str(team) == "team 1 of 2 threads (adaptive)"
    assert "@step: team 2 -> 1 threads (median 1: 5.000 ms, 2: 6.500 ms)" in caplog.text
    first = 2 + FIRST_PROBE  # the untimed warm-up, the first look's call on one thread, then the budget
    assert clock.teams[:first + SAMPLES] == [2, 1] + [2] * FIRST_PROBE + [1] * SAMPLES
    later = clock.teams[first + SAMPLES:]
    assert 0 < later.count(2) < 0.05 * len(later)


def test_a_quiet_machine_runs_the_whole_budget_unless_fewer_threads_win_clearly(monkeypatch, adaptive):
    clock = _Clock(monkeypatch, {1: 5.5e-3, 2: 6e-3})  # one thread 8% faster: within the noise
    team = Team("step", 2)
    clock.run(team, 1000)
    assert team.current == 2 and clock.teams.count(1) < 0.05 * 1000
    assert clock.teams[:2 + FIRST_PROBE] == [2, 1] + [2] * FIRST_PROBE


def test_a_team_several_times_slower_is_dropped_after_one_call(monkeypatch, adaptive):
    clock = _Clock(monkeypatch, {1: 5e-3, 2: 12e-3})  # the second core busy with another job
    team = Team("step", 2)
    clock.run(team, 1000)
    first = 2 + FIRST_PROBE
    assert clock.teams[:first + 2] == [2, 1] + [2] * FIRST_PROBE + [1, 1]  # one call of the probe decides
    probes = [i for i in range(first + 2, 1000) if clock.teams[i] == 2]
    assert probes and all(clock.teams[i + 1] == 1 for i in probes)  # each probe one call long


def test_a_budget_that_waits_for_cores_is_left_at_the_first_look(monkeypatch, adaptive, caplog):
    """Its threads waiting for cores another job holds, the budget's first timed call is STALLED
    times one thread's: the next calls run on one thread, and a later probe finds the budget again
    once the job has left."""
    clock = _Clock(monkeypatch, {1: 0.2e-3, 2: 16e-3})
    team = Team("step", 2)
    with caplog.at_level(logging.INFO, logger="ndlc.team"):
        clock.run(team, 20)
    assert clock.teams[:5] == [2, 1, 2, 2, 1] and team.current == 1
    assert "@step: team 2 -> 1 threads at the first look (16.000 and 16.000 ms, 0.200 ms on 1)" in caplog.text
    clock.costs[2] = 0.1e-3
    clock.run(team, 2 * PROBE_EVERY)
    assert team.current == 2


def test_a_budget_within_stalled_times_one_thread_stays_at_the_first_look(monkeypatch, adaptive):
    clock = _Clock(monkeypatch, {1: 1e-3, 2: (STALLED - 0.5) * 1e-3})  # slower, but by splitting alone
    team = Team("step", 2)
    clock.run(team, 2 + FIRST_PROBE)
    assert clock.teams == [2, 1] + [2] * FIRST_PROBE


def test_one_slow_budget_call_at_the_first_look_is_not_enough(monkeypatch, adaptive):
    """The budget's first call after the one-thread call may wake a thread that went to sleep: a
    single slow call keeps the budget."""
    clock = _Clock(monkeypatch, {1: 1e-3, 2: 0.6e-3})
    team = Team("step", 2)
    clock.run(team, 2)
    clock.costs[2] = 5e-3  # the worker asleep: this call wakes it
    clock.run(team, 1)
    clock.costs[2] = 0.6e-3
    clock.run(team, FIRST_PROBE)
    assert clock.teams == [2, 1, 2] + [2] * FIRST_PROBE and team.current == 2


def test_a_team_that_slows_down_is_replaced_within_a_few_calls(monkeypatch, adaptive):
    clock = _Clock(monkeypatch, {1: 10e-3, 2: 6e-3})
    team = Team("step", 2)
    clock.run(team, 300)
    assert team.current == 2
    clock.costs[2] = 45e-3  # another job took the second core
    clock.run(team, WINDOW + SAMPLES)
    assert team.current == 1
    clock.costs[2] = 6e-3  # and left: a later probe finds it
    clock.run(team, 2 * PROBE_EVERY)
    assert team.current == 2


def test_steady_runs_time_one_call_in_every_few_and_probe_and_switch_as_often(monkeypatch, adaptive):
    """Through Team.call the first look and the probes time every call, a settled team one in
    EVERY; probes come after as many calls as through Team.run (up to EVERY later), and a slowdown
    is left within WINDOW timed calls."""
    clock = _Clock(monkeypatch, {1: 5e-3, 2: 6.5e-3})
    timed = clock.steady(Team("step", 2), 3000)
    assert 3000 / EVERY < timed < 3000 / EVERY + 100
    assert clock.teams[:2 + FIRST_PROBE] == [2, 1] + [2] * FIRST_PROBE  # the first probe within EVERY calls
    assert clock.teams[2:].index(1) + 2 < 2 + FIRST_PROBE + EVERY
    probes = [i for i in range(2 + FIRST_PROBE + SAMPLES, 3000) if clock.teams[i] == 2]
    assert 0 < len(probes) < 0.05 * 3000
    clock = _Clock(monkeypatch, {1: 10e-3, 2: 6e-3})
    team = Team("step", 2)
    clock.steady(team, 300)
    assert team.current == 2
    clock.costs[2] = 45e-3
    clock.steady(team, EVERY * WINDOW + SAMPLES)
    assert team.current == 1


def test_a_probe_must_be_clearly_faster_to_switch(monkeypatch, adaptive):
    clock = _Clock(monkeypatch, {1: 10e-3, 2: 9e-3})
    team = Team("step", 2)
    clock.run(team, 50)
    clock.costs[1] = 8.8e-3  # 2% faster than team 2: within the margin
    clock.run(team, 10 * PROBE_EVERY)
    assert team.current == 2 and 1 in clock.teams[50:]


def test_candidates_are_one_the_budget_and_the_halvings_between(adaptive):
    assert Team("step", 12).candidates == [1, 3, 6, 12]
    assert not Team("step", 1).adaptive  # a program without split kernels has nothing to choose


def test_ndlc_team_budget_pins_the_whole_budget_and_nonsense_is_refused(monkeypatch):
    monkeypatch.setenv("NDLC_TEAM", "budget")
    clock = _Clock(monkeypatch, {1: 1e-3, 2: 9e-3})
    team = Team("step", 2)
    clock.run(team, 300)
    assert set(clock.teams) == {2} and str(team) == "team 2 of 2 threads (fixed)"
    monkeypatch.setenv("NDLC_TEAM", "sometimes")
    with pytest.raises(env.SettingError, match="NDLC_TEAM must be one of adaptive, budget, not 'sometimes'"):
        Team("step", 2)
