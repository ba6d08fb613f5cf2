"""benchmarks/sweep.py: each family at tiny shapes is checked and timed interleaved, written worst
first; a wrong result fails the run; the strided convolution's numpy gradients agree with PyTorch."""
import numpy as np
import pytest

from ndlc import cli


@pytest.fixture
def sweep():
    cli.load_suite()  # puts benchmarks/ on sys.path
    import sweep
    return sweep


def case_rows(text):
    """The case table's rows of a SWEEP.md, as lists of cells."""
    section = text.split("## Cases, worst first", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_quick_sweep_checks_times_and_sorts_every_family(sweep, tmp_path, capsys):
    output = tmp_path / "SWEEP.md"
    assert sweep.main(["--quick", "--blocks", "2", "--threads", "1", "--output", str(output)]) == 0
    text = output.read_text()
    rows = case_rows(text)
    families = {row[1] for row in rows}
    assert families == {family.name for family in sweep.grid.FAMILIES} | {"optimizers"}
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows), rows
    ratios = [float(row[4].rstrip("x")) for row in rows]
    assert ratios == sorted(ratios, reverse=True)
    low, high = map(float, rows[0][5].split("-"))
    assert low <= ratios[0] <= high
    assert "## Families, worst first" in text and "1-minute load average" in text and "- versions: " in text
    assert "## Failures" not in text and "wrote " in capsys.readouterr().out


def test_a_wrong_ndlc_result_fails_the_sweep(sweep, tmp_path, monkeypatch):
    from suite.cases.base import NdlcModel
    from suite.cases.sweep_ops import Softmax
    monkeypatch.setattr(Softmax, "ndlc", lambda self, a: NdlcModel(lambda t: t["x"] * 2.0))
    output = tmp_path / "SWEEP.md"
    assert sweep.main(["--quick", "--only", "softmax", "--blocks", "1", "--output", str(output)]) == 1
    text = output.read_text()
    failures = text.split("## Failures", 1)[1].split("##", 1)[0]
    assert "- **softmax 8x10 fwd**: ndlc: MISMATCH (result 0: off by" in failures
    assert case_rows(text)[0][0] == "softmax 8x10 fwd"  # failures head the table


def test_a_drawn_grid_is_the_same_for_a_seed_and_differs_between_seeds(sweep):
    names = [[case.name(False) for _, case in sweep.grid.cases(seed, 2, False)] for seed in (3, 3, 4)]
    assert names[0] == names[1] and names[0] != names[2]
    grid_only = sweep.grid.cases(3, 0, False)
    assert len(names[0]) == len(grid_only) + 2 * 2 * len(sweep.grid.FAMILIES)


@pytest.mark.parametrize("shape, padding, stride", [((2, 3, 4, 9, 3), None, 2), ((2, 2, 3, 10, 3), 0, 3),
                                                    ((1, 2, 3, 8, 5), 1, 2)])
def test_strided_convolution_numpy_gradients_match_pytorch(sweep, shape, padding, stride):
    from suite.cases.base import OpCase
    from suite.cases.conv import Conv
    from suite.measure import mismatch, results
    case = OpCase(Conv(shape, shape, padding=padding, stride=stride), backward=True)
    a = case.arrays(np.random.default_rng(0), False)
    assert mismatch(results(case.numpy(dict(a))()), results(case.torch(dict(a))())) is None
