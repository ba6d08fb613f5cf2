"""`ndlc bench`: the whole suite at tiny sizes (--quick) checks and times every case and writes
RESULTS.md and its chart; a device that cannot run here, or a missing suite, is refused clearly."""
import importlib.util
import itertools

import pytest

from ndlc import cli
from ndlc.cli import main


def kernel_table(text):
    """The kernel table of a RESULTS.md: its header and rows, as lists of cells."""
    section = text.split("## Kernels", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header, *rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return header, [row for row in rows if not set(row[0]) <= {"-"}]


def test_quick_run_checks_and_times_every_case(tmp_path, capsys):
    output = tmp_path / "RESULTS.md"
    assert main(["bench", "--quick", "--no-progress", "--output", str(output)]) == 0
    text = output.read_text()
    header, rows = kernel_table(text)
    assert [row[0] for row in rows] == [case.name(True) for case in cli.load_suite().CASES]
    for row in rows:
        for contender in ("ndlc", "numpy"):
            assert float(row[header.index(contender)]) > 0, (row[0], contender)
        assert int(row[header.index("ndlc kernels")]) >= 1, row[0]
    wrong = [(row[0], cell) for row in rows for cell in row if cell.startswith(("MISMATCH", "n/a"))]
    assert not wrong and "**MISMATCH**" not in text
    assert "## MLP training step" in text and "| ndlc compiled (CPU) |" in text
    assert "## Convolutional training steps" in text
    step_rows = [line for line in text.split("## Convolutional training steps")[1].splitlines() if line.startswith("| ")]
    for model, batch, contender in itertools.product(("lenet", "resnet9"), (4, 8), ("ndlc compiled (CPU)", "PyTorch eager")):
        assert any(line.startswith(f"| {model} | {batch} | {contender} | ") for line in step_rows), (model, batch)
    assert not any("MISMATCH" in line or "FALLBACK" in line for line in step_rows)
    ours = [line for line in step_rows if "| ndlc compiled (CPU) |" in line]
    assert ours and all(int(line.strip("| ").rsplit("|", 1)[1]) >= 1 for line in ours)  # its kernel count
    assert "Regenerate with `ndlc bench`" in text and "- threads: " in text and "- sgemm: " in text
    convolutions = [row[0] for row in rows if row[0].startswith("Conv")]
    assert len(convolutions) == 8 and all(f"- {name}: ndlc computes " in text for name in convolutions)
    out = capsys.readouterr().out
    for table in ("| case ", "| implementation | median ms/step", "| model | batch | implementation"):
        assert table in out, table  # the terminal shows every table RESULTS.md gets
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "ratios.png").read_bytes().startswith(b"\x89PNG")


def test_the_hand_written_norms_sit_beside_the_modules():
    names = [case.name(False) for case in cli.load_suite().CASES]
    for norm in ("BatchNorm1d", "LayerNorm1d"):
        for kind in ("fwd", "fwd+bwd"):
            module = names.index(f"{norm}{' train' if norm == 'BatchNorm1d' else ''} 4096x1024 {kind}")
            assert names[module + 2] == f"{norm} by hand 4096x1024 {kind}"


def test_torch_compile_that_ran_eagerly_fails_the_row(tmp_path, monkeypatch, capsys):
    """With dynamo's recompile limit at 0 nothing compiles: the cells say FALLBACK, not a time."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 0)
    output = tmp_path / "RESULTS.md"
    assert main(["bench", "--quick", "--no-progress", "--only", "relu", "--torch-compile", "--output", str(output)]) == 1
    header, rows = kernel_table(output.read_text())
    assert all(row[header.index("torch.compile")].startswith("FALLBACK (dynamo hit its recompile limit") for row in rows)
    assert all(float(row[header.index("PyTorch")]) > 0 for row in rows)
    assert "**FALLBACK**: relu(x*a+b)*c 2^12 fwd, torch.compile" in output.read_text()
    assert "ndlc bench: relu(x*a+b)*c 2^12 fwd: torch.compile: FALLBACK" in capsys.readouterr().err


def test_dynamo_verdicts_compiled_graph_break_and_eager():
    torch = pytest.importorskip("torch")
    cli.load_suite()  # puts benchmarks/ on sys.path
    from suite.torch_runner import compiled
    double = compiled(lambda x: torch.relu(x) * 2)
    assert double(torch.ones(3)).tolist() == [2.0] * 3
    assert double.fallback() is None and double.graph_breaks() == []

    def with_a_break(x):
        y = torch.relu(x)
        print(end="")
        return y * 2
    broken = compiled(with_a_break)
    broken(torch.ones(3))
    assert broken.fallback() is None and broken.graph_breaks()  # the pieces still run compiled
    eager = compiled(lambda x: x)  # nothing to compile: dynamo makes no graph
    eager(torch.ones(3))
    assert eager.fallback() == "dynamo compiled no graph: the function ran eagerly"


def test_chart_labels_stay_clear_of_the_case_names():
    pytest.importorskip("matplotlib")
    cli.load_suite()
    from suite.chart import figure
    from suite.measure import Cell, Row
    rows = [Row("a case with a rather long name " * 2 + str(i), {"ndlc": Cell(ms=ms), "PyTorch": Cell(ms=1.0)})
            for i, ms in enumerate((0.05, 0.9, 1.1, 40.0))]
    fig = figure(rows)
    fig.canvas.draw()
    ax = fig.axes[0]
    frame = ax.get_window_extent()
    names = [label.get_window_extent() for label in ax.get_yticklabels()]
    ratios = [label.get_window_extent() for axis in ax.child_axes for label in axis.get_yticklabels()]
    assert len(names) == len(ratios) == 4
    assert all(box.x1 <= frame.x0 for box in names) and all(box.x0 >= frame.x1 for box in ratios)
    assert all(box.x0 >= 0 and box.x1 <= fig.bbox.x1 for box in names + ratios)  # nothing cut off


def test_cuda_without_pycuda_is_refused_before_anything_runs(capsys, monkeypatch):
    monkeypatch.delenv("NDLC_CUDA_EMULATE", raising=False)
    if importlib.util.find_spec("pycuda"):
        pytest.skip("pycuda is installed: benchmarks/gpu.py runs here")
    assert main(["bench", "--quick", "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ndlc bench: ") and "pycuda" in err


def test_a_missing_suite_says_where_it_lives(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "BENCHMARKS", str(tmp_path))
    assert main(["bench", "--quick"]) == 2
    assert "source tree" in capsys.readouterr().err


def test_a_wrong_result_is_marked_not_timed(tmp_path, monkeypatch, capsys):
    suite = cli.load_suite()
    forward = suite.ReluChain.ndlc
    monkeypatch.setattr(suite.ReluChain, "ndlc", lambda op, a: forward(op, a)._replace(
        forward=lambda t: forward(op, a).forward(t) * 2))
    output = tmp_path / "RESULTS.md"
    assert main(["bench", "--quick", "--no-progress", "--only", "relu", "--output", str(output)]) == 1
    header, rows = kernel_table(output.read_text())
    assert all(row[header.index("ndlc")].startswith("MISMATCH (result 0: off by") for row in rows)
    assert "**MISMATCH**: relu(x*a+b)*c 2^12 fwd, ndlc" in output.read_text()
    assert "ndlc bench: relu(x*a+b)*c 2^12 fwd+bwd: ndlc: MISMATCH" in capsys.readouterr().err


def test_a_training_step_torch_compile_ran_eagerly_is_fallback(monkeypatch):
    torch = pytest.importorskip("torch")
    cli.load_suite()
    import model_steps
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 0)
    monkeypatch.setattr(model_steps, "CONTENDERS", {"PyTorch eager": model_steps.torch_step,
                                                    "torch.compile": lambda model: model_steps.torch_step(model, compile=True)})
    rows = model_steps.run(["lenet"], [4], repeats=1)
    assert [(batch, name, note) for _, batch, name, _, note, _ in rows] == [
        (4, "PyTorch eager", ""), (4, "torch.compile", "FALLBACK (dynamo hit its recompile limit and ran the function eagerly)")]
    assert "| lenet | 4 | torch.compile |" in "\n".join(model_steps.section(rows, 1))


def test_rounds_time_every_contender_again_but_a_lingering_pool_once(monkeypatch):
    """Each round times every contender on every case; a cell is the median of its rounds' medians,
    a contender whose thread pool lingers (JAX) is timed in the last round only, and a round that
    failed fails the cell."""
    cli.load_suite()
    import mlp_step
    from suite import measure, report
    from suite.contenders import Contender
    times = iter([3.0, 9.0, 1.0, 2.0, 2.0, 5.0, 4.0])  # ndlc and numpy in rounds 1-3, then JAX once
    monkeypatch.setattr(mlp_step, "measure", lambda *a, **k: (next(times), []))
    built = []
    case = next(case for case in cli.load_suite().CASES if case.name(True).startswith("relu"))

    def contender(name, **kw):
        def build(case, arrays, device):
            built.append(name)
            return lambda: case.numpy(arrays)()
        return Contender(name, build, **kw)

    class Bar:
        set_description = update = lambda *a: None
    contenders = [contender("ndlc"), contender("numpy"), contender("JAX", lingers=True)]
    (row,) = measure.measure_cases([case], contenders, True, 2, "cpu", Bar(), rounds=3)
    assert built == ["ndlc", "numpy"] * 2 + ["ndlc", "numpy", "JAX"]
    assert (row.cells["ndlc"].ms, row.cells["ndlc"].rounds) == (2.0, (3.0, 1.0, 2.0))
    assert (row.cells["numpy"].ms, row.cells["JAX"].ms, row.cells["JAX"].rounds) == (5.0, 4.0, ())
    # each contender's slowest round over its fastest, numpy's (9, 2, 5) beside ndlc's (3, 1, 2)
    assert report.spread([row]) == [f"- slowest round over fastest, per case (the spread table below): "
                                    f"ndlc median 3.00x, largest 3.00x ({row.name}); "
                                    f"numpy median 4.50x, largest 4.50x ({row.name})"]
    title, _, header, _, line = report.spread_table([row])
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["case", "ndlc", "numpy"]
    assert [cell.strip() for cell in line.strip("|").split("|")] == [row.name, "3.00x", "4.50x"]
    assert report.spread_table([measure.Row("once", {"ndlc": measure.Cell(ms=1.0)})]) == []
    # each round's ratio against the fastest peer of that round, JAX's in the last: 3/9, 1/2, 2/4
    assert row.round_ratios() == pytest.approx((1 / 3, 0.5, 0.5))
    header, *_, line = [[cell.strip() for cell in text.strip("|").split("|")] for text in report.table([row], contenders)]
    assert dict(zip(header, line))["spread"] == "0.33-0.50"
    assert dict(zip(header, line))["ndlc/best peer"] == "0.50x (JAX)"  # the rounds' median ratio
    # paired by round: ndlc 1, 2, 3 ms against numpy's 3, 1, 2 is 1/3, 2, 1.5 (median 1.5), where the
    # cells' medians (2 and 2) would say 1.0
    paired = measure.Row("paired", {"ndlc": measure.Cell(ms=2.0, rounds=(1.0, 2.0, 3.0)),
                                    "numpy": measure.Cell(ms=2.0, rounds=(3.0, 1.0, 2.0))})
    assert (paired.ratio("numpy"), paired.best_ratio()) == (1.0, pytest.approx(1.5))
    failed = measure.Cell(note="MISMATCH (result 0)", bad=True)
    assert measure._over_rounds([measure.Cell(ms=1.0), failed]) is failed


def test_a_round_of_short_calls_lasts_its_least_time(monkeypatch):
    cli.load_suite()
    import mlp_step
    clock = itertools.count()
    monkeypatch.setattr(mlp_step.time, "perf_counter", lambda: next(clock) * 1e-4)  # a call: 0.1 ms
    _, short = mlp_step.measure(lambda: lambda: None, 20, warmup=0, args=(), least_s=0.00995, most=1000)
    _, capped = mlp_step.measure(lambda: lambda: None, 20, warmup=0, args=(), least_s=1.0, most=50)
    _, plain = mlp_step.measure(lambda: lambda: None, 20, warmup=0, args=())
    assert len(short) == 100 and len(capped) == 50 and len(plain) == 20
