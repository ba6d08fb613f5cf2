"""`ndlc bench`: the whole suite at tiny sizes (--quick) checks and times every case and writes
RESULTS.md and its chart; a device that cannot run here, or a missing suite, is refused clearly."""
import importlib.util

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
    wrong = [(row[0], cell) for row in rows for cell in row if cell.startswith(("MISMATCH", "n/a"))]
    assert not wrong and "**MISMATCH**" not in text
    assert "## MLP training step" in text and "| ndlc compiled (CPU) |" in text
    assert "## Convolutional training steps" in text and "| resnet9 | PyTorch eager |" in text
    step_rows = [line for line in text.split("## Convolutional training steps")[1].splitlines() if line.startswith("| ")]
    assert len(step_rows) >= 5 and not any("MISMATCH" in line for line in step_rows)
    assert "Regenerate with `ndlc bench`" in text and "- threads: " in text
    assert "| case " in capsys.readouterr().out
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "ratios.png").read_bytes().startswith(b"\x89PNG")


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
