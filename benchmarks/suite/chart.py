"""ratios.png: ndlc's time over the best peer's per case, as a log-scale bar chart. The case names
are the left axis's labels and each ratio with its peer the right axis's, so that neither can run
into the other or into the bars, however long a name or short a bar."""
from suite.report import ratio_text


def plot(rows, path):
    """The chart of `rows` at `path`; False (and a line saying so) where matplotlib is missing."""
    try:
        fig = figure(rows)
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -e '.[bench]')")
        return False
    fig.savefig(path, dpi=110)
    return True


def figure(rows):
    """The chart as a matplotlib Figure: one bar per case with a best peer, from 1 to the ratio,
    green where ndlc is faster, the first case at the top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    best = {row.name: row.best_peer() for row in rows}
    ratios = {name: r for name, r in ((row.name, row.best_ratio()) for row in rows if best[row.name])
              if r is not None}
    peers = [name for name in rows[0].cells if name != "ndlc"]
    fig = Figure(figsize=(12, 1.5 + 0.35 * len(ratios)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    names, values = list(ratios), list(ratios.values())
    positions = range(len(names) - 1, -1, -1)
    ax.barh(list(positions), [v - 1 for v in values], left=1,
            color=["tab:green" if v <= 1 else "tab:red" for v in values])
    ax.set_yticks(list(positions), names)
    right = ax.secondary_yaxis("right")
    right.set_yticks(list(positions), [f"{ratio_text(v)} ({best[name]})" for name, v in ratios.items()])
    right.tick_params(length=0, labelsize=8)
    ax.set_xscale("log")
    low, high = min(values + [1.0]), max(values + [1.0])
    ax.set_xlim(low / 1.5, high * 1.5)
    ticks = [t for t in (0.001, 0.01, 0.1, 0.25, 0.5, 1, 2, 4, 10, 100, 1000) if low / 1.5 <= t <= high * 1.5]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xlabel("ndlc time / best peer's time (log scale; below 1: ndlc is faster)")
    ax.set_title(f"ndlc against the fastest of {', '.join(peers)}", fontsize=10)
    fig.tight_layout()
    return fig
