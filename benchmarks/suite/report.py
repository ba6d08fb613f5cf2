"""RESULTS.md and the terminal's tables: the run's conditions, the kernel table with its notes
(bandwidth, GFLOP/s against sgemm, contenders left out, MISMATCH and FALLBACK), the MLP step and
the convolutional models' steps."""
import statistics

import mlp_step
from suite.contenders import why_missing
from suite.measure import ATOL, BUDGET_S, ROUND_CALLS, ROUND_S, RTOL, WARMUP

PEERS_FOR_RATIOS = ("numpy", "PyTorch")


def table(rows, contenders):
    """The kernel table in markdown, padded to line up in a terminal too; the last column is how
    many kernels ndlc compiled the case to (fusion should not depend on how a case is spelled)."""
    header = ["case", *(c.name for c in contenders), *(f"ndlc/{p}" for p in PEERS_FOR_RATIOS),
              "ndlc/best peer", "spread", "ndlc kernels"]
    body = []
    for row in rows:
        best = row.best_peer()
        ratios = [ratio_text(row.ratio(peer)) for peer in PEERS_FOR_RATIOS]
        best_text = f"{ratio_text(row.best_ratio())} ({best})" if row.best_ratio() else "-"
        kernels = row.cells["ndlc"].kernels
        body.append([row.name, *(row.cells[c.name].text() for c in contenders), *ratios, best_text,
                     spread_text(row.round_ratios()), "-" if kernels is None else str(kernels)])
    return markdown(header, body)


def markdown(header, body):
    """A markdown table, padded to line up in a terminal too: the first column left-aligned, the
    others right-aligned."""
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    rule = ["-" * w if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    return ["| " + " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                              for i, (cell, w) in enumerate(zip(line, widths))) + " |"
            for line in [header, rule] + body]


def ratio_text(ratio):
    """A ratio as the table shows it, with two or three significant digits."""
    if ratio is None:
        return "-"
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def spread_text(ratios):
    """The lowest and highest of a case's ratios over rounds or blocks ('-' without several)."""
    return f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else "-"


def notes(rows, not_run, machine):
    """Lines under the table: bandwidth reached, each product's GFLOP/s against the run's sgemm,
    contenders left out, graph breaks, and loudly, wrong results and eager fallbacks."""
    bandwidth, sgemm = machine["bandwidth"], machine["sgemm"]
    lines = [f"- {row.name}: ndlc moves {row.gbps:.1f} GB/s, {100 * row.gbps / bandwidth[0]:.0f}% of "
             "the stream bandwidth" for row in rows if row.gbps]
    lines += [f"- {row.name}: ndlc computes {row.gflops:.1f} GFLOP/s, {100 * row.gflops / sgemm[0]:.0f}% of "
              "the sgemm's" for row in rows if row.gflops]
    lines += spread(rows)
    lines += [f"- not run: {name} ({why})" for name, why in not_run.items()]
    lines += [f"- {row.name}, {name}: {cell.note}" for row in rows
              for name, cell in row.cells.items() if cell.ms is not None and cell.note]
    lines += [f"- **{cell.note.split()[0]}**: {row.name}, {name}: {cell.note}" for row in rows
              for name, cell in row.cells.items() if cell.note.startswith(("MISMATCH", "FALLBACK"))]
    return lines


def spread(rows):
    """A line on how far apart each contender's round medians fell (slowest round over fastest),
    where there were several rounds: the run-to-run spread its medians carry. The peers', timed in
    the same rounds, show how much of ndlc's is the host's noise."""
    parts = []
    for name in _spread_contenders(rows):
        spreads = sorted((_spread(row.cells[name]), row.name) for row in rows if _spread(row.cells.get(name)))
        middle, (largest, case) = statistics.median(s for s, _ in spreads), spreads[-1]
        parts.append(f"{name} median {middle:.2f}x, largest {largest:.2f}x ({case})")
    if not parts:
        return []
    return ["- slowest round over fastest, per case (the spread table below): " + "; ".join(parts)]


def spread_table(rows):
    """Each case's slowest round over its fastest, per contender timed in several rounds (ndlc's
    spread beside the peers' of the same rounds); none with one round."""
    names = _spread_contenders(rows)
    if not names:
        return []
    body = [[row.name, *(f"{_spread(row.cells.get(name)):.2f}x" if _spread(row.cells.get(name)) else "-"
                         for name in names)] for row in rows]
    return ["### Run-to-run spread (each contender's slowest round median over its fastest)", "",
            *markdown(["case", *names], body)]


def _spread_contenders(rows):
    """The contenders (in the table's order) with several rounds in some row."""
    return list(dict.fromkeys(name for row in rows for name, cell in row.cells.items() if _spread(cell)))


def _spread(cell):
    """A cell's slowest round median over its fastest, or None without several rounds."""
    return max(cell.rounds) / min(cell.rounds) if cell is not None and cell.rounds else None


def document(args, machine, kernels, mlp_lines, step_lines):
    """The whole RESULTS.md: the run's conditions, the kernel section, the MLP step's and the
    convolutional models' steps (each a list of lines, empty where not run)."""
    return "\n".join(header(args, machine) + kernels + mlp_lines + step_lines)


def header(args, machine):
    """RESULTS.md's title, how to regenerate it, and when, where and how the numbers were taken."""
    quick = ["- **--quick**: tiny sizes and 2 calls, a smoke test; the numbers mean nothing", ""]
    pools = "threadpoolctl" if why_missing("threadpoolctl") is None else "no threadpoolctl: OpenBLAS as it was"
    (bandwidth, how), (sgemm, sgemm_how), load = machine["bandwidth"], machine["sgemm"], machine["load"]
    return [
        "# Benchmarks", "",
        "Regenerate with `ndlc bench` (`ndlc bench --help` for options; `--quick` for a smoke test). "
        "All numbers come from one process, one run.", "",
        *(quick if args.quick else []), *mlp_step.environment(),
        f"- threads: {args.threads} for every contender (NDLC_THREADS, torch.set_num_threads, {pools}; "
        "JAX uses its own pool)",
        f"- stream bandwidth: {bandwidth:.1f} GB/s ({how})",
        f"- sgemm: {sgemm:.1f} GFLOP/s ({sgemm_how}, the fastest of 5): the yardstick of the products' "
        "GFLOP/s under the kernel table",
        f"- 1-minute load average: {load[0]:.2f} at the start, {load[1]:.2f} at the end (this run keeps "
        f"up to {args.threads} cores busy; more means other processes competed for them, and the "
        "threaded contenders suffer most)", ""]


def kernel_section(args, table_lines, note_lines, plotted, spread_lines=()):
    """RESULTS.md's kernel table, how it was measured, its notes, the spread table and the chart."""
    chart = ["![ndlc time / best peer's time per case](ratios.png)", ""] if plotted else []
    return [
        "## Kernels (float32, median ms per call)", "",
        f"Each contender's first result is checked against numpy's (rtol {RTOL}, atol {ATOL} x the "
        "largest numpy magnitude) before it is timed; a wrong one shows MISMATCH instead of a time. "
        "torch.compile compiles each case afresh (`torch._dynamo.reset()`); where dynamo ran it eagerly "
        "anyway (its recompile limit hit, or no graph compiled) the cell shows FALLBACK. "
        f"Medians of {args.repeats} calls after {WARMUP + 1} untimed ones (the first compiles), or of as "
        f"many as fit in {BUDGET_S:.0f} s (at least 3)"
        + ("" if args.quick else f", or of more (up to {ROUND_CALLS}) where {args.repeats} take under "
           f"{ROUND_S * 1e3:.0f} ms") + f", in each of {args.rounds} round(s): every contender "
        "times every case, contender after contender, once a round (JAX, whose pool lingers, in the last "
        "only), and a cell is the median of its rounds' medians. Ratios are ndlc's time over the peer's: below 1, "
        "ndlc is faster; `ndlc/best peer` is the median of the rounds' ratios (ndlc's median over the fastest "
        "peer's in the same round, so that the machine's drift during the run cancels) and `spread` their "
        "lowest and highest, as the sweep's are of its blocks'; the last column counts the kernels ndlc "
        "compiled the case to. GFLOP/s count a convolution's forward products, and for fwd+bwd also its two "
        "gradient products of as many operations each.", "",
        *table_lines, "", *note_lines, "", *(list(spread_lines) + [""] if spread_lines else []), *chart]
