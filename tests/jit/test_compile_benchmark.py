"""benchmarks/compile_time.py: time to the first step in fresh processes, on a new machine, cold
then warm, written as a table with each stage's time; the warm run finds every kernel in the disk
cache, the cold one the per-machine objects."""
import importlib.util
import os

import pytest

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "compile_time.py")


def load_benchmark():
    spec = importlib.util.spec_from_file_location("compile_time", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mlp_cold_and_warm_are_measured_and_written(tmp_path, capsys):
    out = tmp_path / "COMPILE.md"
    assert load_benchmark().main(["--models", "mlp", "--rounds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("mlp: new machine ") and printed.count("mlp: new machine ") == 2, "one line a round"
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| MLP 784-512-BN-256-BN-10"))
    cells = [cell.strip() for cell in row.strip("|").split("|")[1:]]
    new, cold, cold_range, cpu, path, warm, warm_range, step, kernels, modules = cells
    assert float(new) > 0 and float(cold) > 0 and float(warm) > 0 and float(step) > 0 and int(kernels) > 0
    assert 0 < float(cpu) < 8 * float(cold), "the CPU seconds of the cold first step, its builders' included"
    serial, share = (float(part) for part in path.split(" + "))
    assert 0 < serial and 0 < share and serial + share <= float(cpu) + 0.02, \
        "the critical path: the compiling thread outside its LLVM share, then the costliest builder's share"
    for median, (low, high) in ((cold, cold_range.split("-")), (warm, warm_range.split("-"))):
        assert float(low) <= float(median) <= float(high), "the median round lies within the rounds' range"
    new_modules, cold_modules, warm_modules = (int(count) for count in modules.split("/"))
    assert new_modules > cold_modules >= 1 and warm_modules == 0, \
        "a new machine also compiles the runner; the warm process compiles nothing"
    header = next(line for line in text.splitlines() if line.startswith("| model | trace |"))
    assert all(f" {stage} |" in header for stage in ("autodiff", "fusion", "merge", "LLVM optimise", "load"))
    assert "Load average while measured: 1/5/15 min" in text and "| mlp | " in text


def test_unknown_models_are_refused(capsys):
    with pytest.raises(SystemExit):
        load_benchmark().main(["--models", "mlp,resnet"])
    assert "unknown model(s) resnet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_benchmark().main(["--models", "mlp", "--rounds", "0"])
    assert "--rounds must be at least 1, not 0" in capsys.readouterr().err


def test_the_kernel_costs_list_every_distinct_kernel_and_the_costliest_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    lines = load_benchmark().kernel_costs("mlp", passes=3).splitlines()
    count = int(lines[0].split(": ")[1].split()[0])
    assert lines[0].startswith("mlp: ") and "LLVM CPU" in lines[0] and lines[1].split()[:4] == ["opt", "s", "mc", "s"]
    kernels = lines[2:-1]
    assert len(kernels) == count > 1 and len({line.split()[4] for line in kernels}) == count
    costs = [float(line.split()[0]) + float(line.split()[1]) for line in kernels]
    assert all(a >= b - 0.002 for a, b in zip(costs, costs[1:])), "costliest first (up to the printed rounding)"
    passes = lines[-1].removeprefix("optimiser passes (CPU s): ").split(", ")
    assert len(passes) == 3 and "Total" not in lines[-1] and any(p.startswith("InstCombinePass ") for p in passes)
