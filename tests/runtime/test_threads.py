"""The one thread budget: NDLC_THREADS defaults to the cores this process may use (affinity mask,
cgroup quota), numpy's OpenBLAS is held to it, the team's idle threads sleep soon, and `ndlc train`
gives the same bits at every budget; benchmarks/contention.py runs its scenarios and judges them."""
import gzip
import importlib.util
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import ndlc as ndl
from ndlc import env
from ndlc.runtime import libraries

needs_blas = pytest.mark.skipif(not libraries.blas_available(), reason="numpy ships no 64-bit-integer OpenBLAS here")


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _affinity(monkeypatch, count):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(count)))


def test_cores_are_the_affinity_mask_capped_by_the_cgroup_v2_quota_of_any_ancestor(tmp_path, monkeypatch):
    _affinity(monkeypatch, 8)
    _write(tmp_path / "proc/self/cgroup", "0::/job/step\n")
    assert env.cores(str(tmp_path)) == 8  # no cpu.max anywhere: no quota
    _write(tmp_path / "sys/fs/cgroup/job/step/cpu.max", "max 100000\n")
    _write(tmp_path / "sys/fs/cgroup/job/cpu.max", "250000 100000\n")
    assert env.cores(str(tmp_path)) == 3  # the parent's 2.5 cores, rounded up
    _affinity(monkeypatch, 2)
    assert env.cores(str(tmp_path)) == 2


def test_cores_read_the_cgroup_v1_quota_where_the_container_mounts_its_own_cgroup(tmp_path, monkeypatch):
    _affinity(monkeypatch, 16)
    _write(tmp_path / "proc/self/cgroup", "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n")
    _write(tmp_path / "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "50000\n")
    _write(tmp_path / "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert env.cores(str(tmp_path)) == 1
    _write(tmp_path / "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    assert env.cores(str(tmp_path)) == 16


def test_vector_registers_are_avx512s_32_where_the_cpu_has_its_256_bit_encodings(tmp_path):
    """(env.vector_registers is cached by root: each case a folder of its own.)"""
    assert env.vector_registers(str(tmp_path / "none")) == 16  # no /proc/cpuinfo: AVX2's
    for name, flags, count in (("f", "avx512f", 16), ("vl", "avx512f avx512vl", 32)):  # F alone: no ymm16-31
        _write(tmp_path / name / "proc/cpuinfo", f"processor\t: 0\nflags\t\t: fpu avx2 fma {flags}\n")
        assert env.vector_registers(str(tmp_path / name)) == count


def test_the_budget_defaults_to_the_cores_and_refuses_nonsense(monkeypatch):
    monkeypatch.delenv("NDLC_THREADS", raising=False)
    assert env.thread_budget() == env.cores()
    monkeypatch.setenv("NDLC_THREADS", "3")
    assert env.thread_budget() == 3
    monkeypatch.setenv("NDLC_THREADS", "0")
    with pytest.raises(env.ThreadsError, match="NDLC_THREADS must be a positive integer, not '0'"):
        env.thread_budget()


@needs_blas
def test_openblas_is_held_to_the_budget_once_not_on_every_read(monkeypatch):
    monkeypatch.setenv("NDLC_THREADS", "1")
    try:
        libraries.threads()
        assert libraries.blas_threads() == 1
        libraries._blas()[3](2)  # the user's own later setting survives another read of the same budget
        libraries.threads()
        assert libraries.blas_threads() == min(2, libraries._blas_default())
    finally:
        monkeypatch.delenv("NDLC_THREADS")
        libraries.threads()
    assert libraries.blas_threads() == min(env.cores(), libraries._blas_default())


ONE_THREAD_SCRIPT = """
import glob, os
import numpy as np
import ndlc as ndl
from ndlc.examples.train_mlp import build_mlp, training_step
from ndlc.runtime import program_cache

def cpu_ticks():  # thread id -> user + system clock ticks
    ticks = {}
    for stat in glob.glob("/proc/self/task/*/stat"):
        fields = open(stat).read().rsplit(")", 1)[1].split()
        ticks[stat.split("/")[-2]] = int(fields[11]) + int(fields[12])
    return ticks

np.random.seed(0)
model = build_mlp()
step = ndl.compile(training_step(model, ndl.optim.Adam(model.parameters(), lr=1e-3)))
x, y = np.random.default_rng(0).random((256, 784), dtype=np.float32), np.arange(256) % 10
step(x, y)
program_cache.finish()  # the cache entry's writer thread (linking the library) is done
before = cpu_ticks()
for _ in range(30):
    step(x, y)
after = cpu_ticks()
print(*sorted((after[t] - before.get(t, 0) for t in after), reverse=True))
"""


@needs_blas
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads per-thread CPU times from /proc")
def test_at_one_thread_exactly_one_thread_works():
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("NDLC_", "OPENBLAS_", "OMP_"))}
    done = subprocess.run([sys.executable, "-c", ONE_THREAD_SCRIPT], env=dict(environment, NDLC_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    busiest, *others = [int(ticks) for ticks in done.stdout.split()]
    assert busiest > 0 and sum(others) <= 0.05 * busiest, done.stdout  # OpenBLAS's workers stay asleep


def _write_idx(path, array):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.mark.skipif(not libraries.team_runs(), reason="ndlc's thread team does not run here")
def test_ndlc_train_gives_the_same_bits_at_one_and_two_threads(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 384)
    images = (labels[:, None, None] * 25 + rng.integers(0, 20, (384, 28, 28))).clip(0, 255)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    weights = {}
    for threads in ("1", "2"):
        folder = tmp_path / f"threads{threads}"
        environment = {k: v for k, v in os.environ.items()
                       if not k.startswith(("NDLC_", "OPENBLAS_", "OMP_", "GOMP_"))}
        environment.update(NDLC_THREADS=threads, NDLC_CACHE_DIR=str(tmp_path / "cache"))
        done = subprocess.run([sys.executable, "-m", "ndlc.cli", "train", "--data", str(tmp_path), "--batch-size",
                               "128", "--no-progress", "--checkpoint", str(folder)],
                              env=environment, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        saved = ndl.load(folder / "last.npz")
        weights[threads] = [_bits(saved["model"]), _bits(saved["optimizer"])]
    assert weights["1"] == weights["2"]


def _bits(tree):
    """Every array (or Tensor) of a loaded checkpoint's nested dicts and lists, as bytes."""
    if isinstance(tree, dict):
        return {key: _bits(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_bits(value) for value in tree]
    return np.asarray(tree.numpy() if hasattr(tree, "numpy") else tree).tobytes()


def _contention():
    """benchmarks/contention.py, loaded from the repository (benchmarks/ is not a package)."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "contention.py")
    spec = importlib.util.spec_from_file_location("contention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_contention_targets_are_judged_per_copy():
    contention = _contention()
    results = {("mlp", "ndlc", 1, "alone"): [(10.0, 11.0)],
               ("mlp", "ndlc", 1, "two copies"): [(12.0, 20.0), (14.0, 15.0)],
               ("mlp", "ndlc", 2, "alone"): [(6.0, 7.0)],
               ("mlp", "ndlc", 2, "two copies"): [(13.0, 30.0), (12.0, 40.0)],
               ("mlp", "ndlc", 2, "beside busy"): [(9.0, 10.0)]}
    assert contention.targets(results, [1, 2]) == [
        "- met: 1 thread, two copies: median 1.20x alone (<= 1.3x), p90 1.67x median (<= 2x)",
        "- MISSED: 1 thread, two copies: median 1.40x alone (<= 1.3x), p90 1.07x median (<= 2x)",
        "- met: 2 threads, two copies: median 2.17x alone (<= 2.2x), p90 2.31x median (<= 3x)",
        "- MISSED: 2 threads, two copies: median 2.00x alone (<= 2.2x), p90 3.33x median (<= 3x)",
        "- met: 2 threads, beside busy: median 1.50x alone (<= 2.2x), p90 1.11x median (<= 3x)"]


def test_the_contention_benchmark_runs_each_scenario_in_processes_of_its_own(tmp_path, capsys):
    output = tmp_path / "CONTENTION.md"
    assert _contention().main(["--steps", "mlp", "--frameworks", "ndlc", "--threads", "1", "--seconds", "0.2",
                               "--output", str(output)]) == 0
    text = output.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| MLP | ndlc compiled | 1 |"))
    alone, copies, busy = [cell.strip() for cell in row.strip("|").split("|")][3:]
    assert alone.count("(") == 1 and copies.count("(") == 2 and busy.count("(") == 1
    assert copies.endswith("x") and busy.endswith("x") and "load average" in text
    assert text.count("- met: ") + text.count("- MISSED: ") == 2  # one line per copy at 1 thread
    assert f"wrote {output}" in capsys.readouterr().out
