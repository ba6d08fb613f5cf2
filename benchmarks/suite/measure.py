"""Measuring: every contender on every case, checked against numpy's result before it is timed,
and the machine's own yardsticks (stream bandwidth, sgemm GFLOP/s) under the same threads."""
import contextlib
import importlib
import os
import statistics
from dataclasses import dataclass

import numpy as np

import mlp_step
import ndlc as ndl
from suite.contenders import short_reason, why_missing

RTOL, ATOL = 1e-3, 1e-3        # atol is relative to numpy's largest magnitude
WARMUP = 1                     # calls after the (checked) first one, before timing
BUDGET_S = 2.0                 # timed seconds per contender and case after which fewer calls count
BLOCK_CALLS = 200              # at most this many calls in one interleaved block (the sweep's)
ROUND_S = 0.05                 # a round's calls add up to this at least (up to ROUND_CALLS): 20 calls of
ROUND_CALLS = 1000             # a 0.05 ms case span 1 ms, less than a scheduler tick, and their median
# moved 1.25-1.90x from round to round where 400 calls moved 1.07-1.30x (load ~9, every contender alike)


@dataclass
class Cell:
    """One contender on one case: its median ms (and a remark, such as graph breaks), or why there
    is none; `bad`: the run fails for it (MISMATCH, FALLBACK, or ndlc or numpy could not run);
    `rounds`: each round's median, where there were several."""
    ms: float = None
    note: str = ""
    bad: bool = False
    kernels: int = None
    rounds: tuple = ()

    def text(self):
        """The cell as the table shows it."""
        return f"{self.ms:.3f}" if self.ms is not None else self.note


@dataclass
class Row:
    """One case's cells by contender; ndlc's bandwidth where the case is memory-bound, and its
    GFLOP/s where the case counts its floating-point work (convolutions, matmul)."""
    name: str
    cells: dict
    gbps: float = None
    gflops: float = None

    def ratio(self, peer):
        """ndlc's time over `peer`'s, where both have one."""
        ndlc, other = self.cells["ndlc"].ms, self.cells.get(peer, Cell()).ms
        return ndlc / other if ndlc is not None and other is not None else None

    def round_ratios(self):
        """ndlc's median over the fastest peer's in each round (a peer timed in the last round only,
        whose pool lingers, counts in that one): the run-to-run spread of the ratio; () with one round."""
        rounds = self.cells["ndlc"].rounds
        ratios = []
        for number, ms in enumerate(rounds):
            peers = [cell.rounds[number] if cell.rounds else cell.ms for name, cell in self.cells.items()
                     if name != "ndlc" and cell.ms is not None and (cell.rounds or number == len(rounds) - 1)]
            if peers:
                ratios.append(ms / min(peers))
        return tuple(ratios)

    def best_ratio(self):
        """ndlc over the fastest peer: the median of the rounds' ratios where there were several (each
        round's two medians were timed minutes apart at most, so the machine's drift over a run cancels,
        as in the sweep's blocks), else ndlc's time over the best peer's; None without a peer."""
        ratios = self.round_ratios()
        return statistics.median(ratios) if ratios else self.ratio(self.best_peer())

    def best_peer(self):
        """The fastest other contender with a (correct) time, or None."""
        timed = [(cell.ms, name) for name, cell in self.cells.items()
                 if name != "ndlc" and cell.ms is not None]
        return min(timed)[1] if timed else None


def results(value):
    """A contender's result as a tuple of float64 numpy arrays (copies: state moves on)."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    return tuple(np.array(_as_numpy(item), dtype=np.float64) for item in items)


def _as_numpy(value):
    """A PyTorch tensor, ndlc Tensor, JAX or numpy array as a numpy array."""
    if isinstance(value, ndl.Tensor):
        return value.numpy()
    if hasattr(value, "detach"):
        return value.detach().numpy()
    return np.asarray(value)


def mismatch(got, want):
    """Why results `got` differ from numpy's `want` beyond float32 tolerance, or None if they agree."""
    if len(got) != len(want):
        return f"{len(got)} results, numpy has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return f"result {i}: shape {g.shape}, numpy's {w.shape}"
        scale = float(np.abs(w).max()) if w.size else 0.0
        if not np.allclose(g, w, rtol=RTOL, atol=ATOL * scale):
            error = float(np.nanmax(np.abs(g - w))) / (scale or 1.0)
            return f"result {i}: off by {error:.1e} of numpy's largest magnitude"
    return None


def measure_cases(cases, contenders, quick, repeats, device, bar, rounds=1):
    """The rows: every contender's median ms on every case, each checked against numpy's result
    (from the same fresh state) on its first call, which also compiles. Contender by contender, in
    CONTENDERS' order: a framework's thread pool only starts once those before it are timed (JAX's
    idle workers, left running, slowed ndlc's sub-millisecond kernels up to fivefold); all of them
    `rounds` times over, but a lingering pool's only in the last, so that a drift of the machine's
    speed within the run (this 2-core VM's: up to 30% over minutes) falls on every contender."""
    inputs = {id(case): case.arrays(np.random.default_rng(0), quick) for case in cases}
    references = {id(case): results(case.numpy(_fresh(inputs[id(case)]))()) for case in cases}
    cells = {(id(case), contender.name): [] for case in cases for contender in contenders}
    for number in range(rounds):
        for contender in contenders:
            if contender.lingers and number < rounds - 1:
                continue
            for case in cases:
                bar.set_description(f"{contender.name}: {case.name(quick)}")
                cells[id(case), contender.name].append(
                    measure_contender(contender, case, inputs[id(case)], references[id(case)], repeats, device, quick))
                bar.update()
    rows = []
    for case in cases:
        row = Row(case.name(quick), {contender.name: _over_rounds(cells[id(case), contender.name])
                                     for contender in contenders})
        traffic = case.traffic(inputs[id(case)])
        flops = case.flops(inputs[id(case)])
        if row.cells["ndlc"].ms is not None:
            row.gbps = traffic / row.cells["ndlc"].ms / 1e6 if traffic else None
            row.gflops = flops / row.cells["ndlc"].ms / 1e6 if flops else None
        rows.append(row)
    return rows


def measure_contender(contender, case, arrays, reference, repeats, device, quick=False):
    """`contender` on `case`: checked on its first call, then timed (mlp_step.measure), or why not.
    A torch.compile contender that dynamo ran eagerly is FALLBACK, a wrong result MISMATCH: both
    fail the run. Graph breaks (the pieces still compiled) are noted beside the time."""
    call = checked_call(contender, case, arrays, reference, device)
    if isinstance(call, Cell):
        return call
    try:
        median, _ = mlp_step.measure(lambda: call, repeats, warmup=WARMUP, args=(), budget_s=BUDGET_S,
                                     least_s=0.0 if quick else ROUND_S, most=ROUND_CALLS,
                                     settle_s=0.0 if quick else mlp_step.SETTLE_S)
    except Exception as e:  # a contender that cannot run a case is reported, not fatal
        return _failed(contender, e)
    return timed_cell(call, median)


def checked_call(contender, case, arrays, reference, device):
    """`contender`'s callable for `case`, built from fresh copies of `arrays`, its first result
    (which also compiles) checked against `reference`; or a Cell saying why there is none."""
    try:
        call = contender.build(case, _fresh(arrays), device)
        wrong = mismatch(results(call()), reference)
    except Exception as e:  # a contender that cannot run a case is reported, not fatal
        return _failed(contender, e)
    return Cell(note=f"MISMATCH ({wrong})", bad=True) if wrong else call


def timed_cell(call, median):
    """The cell of a checked, timed callable: its median ms, or FALLBACK where torch.compile ran it
    eagerly; graph breaks noted, ndlc's kernels counted."""
    fallback = call.fallback() if hasattr(call, "fallback") else None
    if fallback:
        return Cell(note=f"FALLBACK ({fallback})", bad=True)
    breaks = call.graph_breaks() if hasattr(call, "graph_breaks") else []
    return Cell(ms=median, note=f"{len(breaks)} graph break(s): {'; '.join(breaks)}" if breaks else "",
                kernels=call.kernels() if hasattr(call, "kernels") else None)


def _failed(contender, error):
    """The cell of a contender that raised: n/a with the reason; a failure of the run for ndlc and
    numpy, which must run every case."""
    return Cell(note=f"n/a ({short_reason(error)})", bad=contender.name in ("ndlc", "numpy"))


def _over_rounds(cells):
    """One contender's cell on one case from its rounds' cells: the first failure if any round
    failed, else the median of the rounds' medians."""
    failed = [cell for cell in cells if cell.ms is None]
    if failed:
        return failed[0]
    medians = tuple(cell.ms for cell in cells)
    return Cell(ms=statistics.median(medians), note=cells[0].note, kernels=cells[0].kernels,
                rounds=medians if len(medians) > 1 else ())


def _fresh(arrays):
    """Copies of the case's arrays, so that each contender starts from the same state."""
    return {name: array.copy() for name, array in arrays.items()}


def stream_bandwidth(quick):
    """The machine's memory bandwidth in GB/s and how it was measured: the fastest of 10 calls of a
    numpy copy and (where PyTorch imports) of torch.add(a, b, out=c) on the run's threads, over
    128 MiB arrays (1 MiB with --quick: a cache's speed)."""
    n = 1 << (18 if quick else 25)
    a, b, c = (np.ones(n, np.float32) for _ in range(3))
    ways = {"numpy copy": (lambda: np.copyto(c, a), 2 * a.nbytes)}
    if why_missing("torch") is None:
        import torch
        ta, tb, tc = (torch.from_numpy(v) for v in (a, b, c))
        ways["torch.add(a, b, out=c)"] = (lambda: torch.add(ta, tb, out=tc), 3 * a.nbytes)
    speeds = {name: size / min(mlp_step.measure(lambda fn=fn: fn, 10, warmup=2, args=())[1]) / 1e6
              for name, (fn, size) in ways.items()}
    best = max(speeds, key=speeds.get)
    return speeds[best], best


def sgemm_rate(quick):
    """The machine's float32 matrix-product speed in GFLOP/s on the run's threads, the yardstick of
    the convolutions: the fastest of 5 numpy (OpenBLAS sgemm) products of 1024x1024 matrices
    (256x256 with --quick)."""
    n = 256 if quick else 1024
    a = np.ones((n, n), np.float32)
    best = min(mlp_step.measure(lambda: lambda: a @ a, 5, warmup=1, args=())[1])
    return 2 * n ** 3 / best / 1e6, f"numpy {n}x{n}x{n} float32 matmul"


@contextlib.contextmanager
def threads(count):
    """Every contender on `count` threads: NDLC_THREADS (read when ndlc compiles), PyTorch's pool,
    and OpenBLAS/OpenMP through threadpoolctl where it is installed; all restored afterwards."""
    saved_env = os.environ.get("NDLC_THREADS")
    os.environ["NDLC_THREADS"] = str(count)
    torch = importlib.import_module("torch") if why_missing("torch") is None else None
    saved_torch = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(count)
    with contextlib.ExitStack() as stack:
        if why_missing("threadpoolctl") is None:
            from threadpoolctl import threadpool_limits
            stack.enter_context(threadpool_limits(count))
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(saved_torch)
            if saved_env is None:
                del os.environ["NDLC_THREADS"]
            else:
                os.environ["NDLC_THREADS"] = saved_env
