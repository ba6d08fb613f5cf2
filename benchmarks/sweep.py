"""Performance sweep: ndlc against PyTorch eager (and torch.compile with --torch-compile) at shapes
nobody tuned for.

Each family the bench has (elementwise chains, BatchNorm1d/2d, LayerNorm, softmax, logsumexp,
SoftmaxLoss, reductions over each axis, matrix products batched, broadcast and skinny, Linear with
an activation, convolutions with odd channels, strides and padding, pooling, Adam and SGD over many
small parameters) runs on a fixed grid of awkward shapes plus --draws shapes drawn from --seed,
forward and forward+backward (benchmarks/suite/grid.py). Every contender's first result is checked
against numpy's (or, where a case has no numpy, PyTorch's in float64) before it is timed; then the
contenders are timed in interleaved blocks in this one process, so that a shift of the shared
machine's load falls on all of them. Writes each case's ratio (ndlc over the fastest peer, the
median over the blocks and its spread), worst first, with the machine, versions and load, to
benchmarks/SWEEP.md (a temporary folder with --quick or --only). Exit status 1 if a result was wrong
or ndlc could not run a case.

    python3 benchmarks/sweep.py                      # minutes: writes benchmarks/SWEEP.md
    python3 benchmarks/sweep.py --only layernorm --draws 4 --output /tmp/ln/SWEEP.md
    python3 benchmarks/sweep.py --quick              # tiny shapes: a smoke test
"""
import argparse
import gc
import os
import statistics
import sys
from dataclasses import dataclass

import numpy as np

import mlp_step
from ndlc.env import cores
from suite import grid
from suite.command import output_path
from suite.contenders import CONTENDERS
from suite.measure import (ATOL, BLOCK_CALLS, RTOL, Cell, _fresh, checked_call, results, threads,
                           timed_cell)
from suite.report import ratio_text, spread_text

PEERS = ("PyTorch", "torch.compile")


@dataclass
class SweepRow:
    """One case: its family, each contender's cell (the median of its block medians) and ndlc's
    time over the fastest peer's in each block."""
    family: str
    name: str
    cells: dict
    ratios: list

    def ratio(self):
        """The median over the blocks of ndlc's time over the fastest peer's, or None."""
        return statistics.median(self.ratios) if self.ratios else None

    def failed(self):
        """Why the case has no ratio, where ndlc or a check failed: the first such note, or ''."""
        return next((f"{name}: {cell.note}" for name, cell in self.cells.items() if cell.bad), "")


def reference(case, arrays):
    """The results every contender is checked against: numpy's where the case writes numpy (the
    bench's reference), else PyTorch eager's on float64 copies of the arrays."""
    try:
        return results(case.numpy(_fresh(arrays))())
    except NotImplementedError:
        wide = {name: a.astype(np.float64) if a.dtype == np.float32 else a.copy() for name, a in arrays.items()}
        return results(case.torch(wide)())


def measure_case(family, case, contenders, args):
    """A SweepRow: each contender built and checked, then the checked ones timed in interleaved
    blocks."""
    arrays = case.arrays(np.random.default_rng(args.seed), args.quick)
    want = reference(case, arrays)
    calls, cells = {}, {}
    for contender in contenders:
        call = checked_call(contender, case, arrays, want, "cpu")
        if isinstance(call, Cell):
            cells[contender.name] = call
        else:
            calls[contender.name] = call
    blocks = mlp_step.interleaved(calls, args.blocks, BLOCK_CALLS, args.block_seconds,
                                   settle_s=0.0 if args.quick else mlp_step.SETTLE_S) if calls else {}
    for name, medians in blocks.items():
        cells[name] = timed_cell(calls[name], statistics.median(medians))
    peers = [name for name in blocks if name != "ndlc" and cells[name].ms is not None]
    ratios = [blocks["ndlc"][b] / min(blocks[p][b] for p in peers) for b in range(args.blocks)] \
        if peers and "ndlc" in blocks else []
    return SweepRow(family, case.name(args.quick), cells, ratios)


def sweep(args):
    """Every chosen case's SweepRow, in grid order, and the 1-minute load average before and after."""
    contenders = [c for c in CONTENDERS if c.name in ("ndlc", "PyTorch") + (("torch.compile",) * args.torch_compile)]
    missing = [(c.name, c.missing()) for c in contenders if c.missing()]
    if missing:
        raise SystemExit(f"sweep: cannot run {missing[0][0]}: {missing[0][1]}")
    chosen = grid.cases(args.seed, args.draws, args.quick, args.only or "")
    load, rows = [os.getloadavg()[0]], []
    with threads(args.threads):
        for number, (family, case) in enumerate(chosen, 1):
            row = measure_case(family, case, contenders, args)
            rows.append(row)
            print(f"[{number}/{len(chosen)}] {row.name}: {ratio_text(row.ratio())} {row.failed()}",
                  file=sys.stderr, flush=True)
            gc.collect()  # each case's compiled programs and arenas go before the next is built
    load.append(os.getloadavg()[0])
    return rows, load, [c.name for c in contenders]


def case_table(rows, names):
    """The cases, worst first (failures first of all): each contender's ms, ndlc over the fastest
    peer (median of the blocks, their spread) and ndlc's kernel count."""
    ordered = sorted(rows, key=lambda r: -np.inf if r.failed() else -(r.ratio() or 0))
    lines = ["| case | family | " + " | ".join(f"{n} ms" for n in names) + " | ndlc/best peer | spread | kernels |",
             "|---|---|" + "---:|" * (len(names) + 3)]
    for row in ordered:
        kernels = row.cells["ndlc"].kernels if "ndlc" in row.cells else None
        lines.append(f"| {row.name} | {row.family} | " + " | ".join(row.cells[n].text() for n in names)
                     + f" | {ratio_text(row.ratio())} | {spread_text(row.ratios)} | {'-' if kernels is None else kernels} |")
    return lines


def family_table(rows):
    """Each family's median ratio, its worst case and how many of its cases are slower than the
    fastest peer, worst family first."""
    families = {}
    for row in rows:
        if row.ratio() is not None:
            families.setdefault(row.family, []).append(row)
    summary = sorted(((statistics.median(r.ratio() for r in rs), family, rs) for family, rs in families.items()),
                     reverse=True)
    lines = ["| family | cases | median ndlc/best peer | slower than the best peer | worst case |",
             "|---|---:|---:|---:|---|"]
    for median, family, rs in summary:
        worst = max(rs, key=SweepRow.ratio)
        slower = sum(r.ratio() > 1 for r in rs)
        lines.append(f"| {family} | {len(rs)} | {ratio_text(median)} | {slower} | "
                     f"{worst.name} ({ratio_text(worst.ratio())}) |")
    return lines


def document(args, rows, load, names):
    """SWEEP.md: how it was made and under what load, the families' summary, then every case."""
    failed = [f"- **{row.name}**: {row.failed()}" for row in rows if row.failed()]
    return "\n".join([
        "# Performance sweep", "",
        "Regenerate with `python3 benchmarks/sweep.py` (`--help` for options). All numbers come from one "
        "process, one run.", "",
        *(["- **--quick**: tiny shapes, a smoke test; the numbers mean nothing"] if args.quick else []),
        *mlp_step.environment(),
        f"- threads: {args.threads} for every contender; shapes: the grid of benchmarks/suite/grid.py and "
        f"{args.draws} drawn per family (seed {args.seed})",
        f"- 1-minute load average: {load[0]:.2f} at the start, {load[1]:.2f} at the end (the run keeps up "
        f"to {args.threads} cores busy; absolute times on a shared machine are not comparable between "
        "runs, the interleaved ratios are)", "",
        f"Each contender's first result is checked against numpy's, or PyTorch's in float64 where a case "
        f"has no numpy (rtol {RTOL}, atol {ATOL} x the largest magnitude), before it is timed. Then "
        f"{args.blocks} interleaved blocks (the contenders in turn, the order rotating), each a warm-up "
        f"call and as many calls as fit in {args.block_seconds} s: a time is the median of a contender's "
        "block medians; the ratio, ndlc's block median over the fastest peer's in the same block, is the "
        "median over the blocks, with the lowest and highest beside it.", "",
        "## Families, worst first", "", *family_table(rows), "",
        *(["## Failures", "", *failed, ""] if failed else []),
        "## Cases, worst first", "", *case_table(rows, names), ""])


def at_least(least):
    """An argparse type: an integer of at least `least`."""
    def number(text):
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, not {text}")
        return value
    return number


def parse(argv):
    intro, how, examples = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(description=f"{intro}\n\n{how}", epilog=examples,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each family's first case at tiny shapes, "
                        "nothing drawn: a smoke test in seconds")
    parser.add_argument("--only", metavar="SUBSTRING", help="only the families whose name contains it "
                        "(case-insensitive: elementwise, batchnorm, layernorm, softmax, logsumexp, "
                        "reductions, matmul, linear, conv2d, pooling, optimizers)")
    parser.add_argument("--draws", type=at_least(0), default=1, help="shapes drawn per family beside the grid "
                        "(default 1)")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed of the drawn shapes and the arrays "
                        "(default 0)")
    parser.add_argument("--blocks", type=at_least(1), default=5, help="interleaved timing blocks per case "
                        "(default 5)")
    parser.add_argument("--block-seconds", type=float, default=0.1, help="timed seconds per contender and block "
                        "(default 0.1; at least 3 calls)")
    parser.add_argument("--threads", type=at_least(1), default=cores(), help="threads for every contender "
                        "(default: the cores this process may use, %(default)s; on a loaded machine 1)")
    parser.add_argument("--torch-compile", action="store_true", help="time torch.compile too (compiles each "
                        "case for seconds)")
    parser.add_argument("--output", metavar="PATH", help="SWEEP.md to write (default: benchmarks/SWEEP.md for a "
                        "full run, a temporary folder with --quick or --only)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    rows, load, names = sweep(args)
    text = document(args, rows, load, names)
    path = os.path.abspath(output_path(args, "SWEEP.md"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {path}")
    return 1 if any(row.failed() for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
