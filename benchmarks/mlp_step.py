"""Benchmark: one training step of the Fashion-MNIST MLP (784-512-BN-ReLU-256-BN-ReLU-10, Adam,
batch 256) in every implementation available, medians of repeated steps in one process.

    python benchmarks/mlp_step.py            # prints the table and writes benchmarks/RESULTS.md
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

import ndlc as ndl
from ndlc.examples.train_mlp import build_mlp, training_step

BATCH, FEATURES, HIDDEN, CLASSES = 256, 784, (512, 256), 10
LR, EPS = 1e-3, 1e-5


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((BATCH, FEATURES), dtype=np.float32), rng.integers(0, CLASSES, BATCH)


def ndlc_step():
    """The MLP's training step with Adam, as `ndlc.examples.train_mlp` defines it."""
    np.random.seed(0)
    model = build_mlp(FEATURES, HIDDEN, CLASSES)
    return training_step(model, ndl.optim.Adam(model.parameters(), lr=LR))


def ndlc_eager():
    step = ndlc_step()
    return lambda x, y: float(step(ndl.Tensor(x, requires_grad=False),
                                   ndl.Tensor(y, requires_grad=False)).numpy())


def ndlc_compiled():
    step = ndl.compile(ndlc_step())
    return lambda x, y: float(step(x, y).numpy())


def compile_times():
    """Seconds to the first compiled step with an empty disk cache (cold) and a filled one (warm)."""
    saved = os.environ.get("NDLC_CACHE_DIR")
    x, y = data()
    times = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["NDLC_CACHE_DIR"] = cache
        try:
            for kind in ("cold", "warm"):
                start = time.perf_counter()
                ndlc_compiled()(x, y)
                times[kind] = time.perf_counter() - start
        finally:
            if saved is None:
                del os.environ["NDLC_CACHE_DIR"]
            else:
                os.environ["NDLC_CACHE_DIR"] = saved
    return times


class NumpyMLP:
    """The same model, forward, backward and Adam written by hand in numpy (float32)."""

    def __init__(self):
        rng = np.random.default_rng(0)
        sizes = (FEATURES,) + HIDDEN + (CLASSES,)
        self.params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(6 / fan_in)
            self.params += [rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                            np.zeros(fan_out, np.float32)]
            if fan_out != CLASSES:
                self.params += [np.ones(fan_out, np.float32), np.zeros(fan_out, np.float32)]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, x, y):
        grads, caches, h = [None] * len(self.params), [], x
        i = 0
        while i < len(self.params):
            w, b = self.params[i], self.params[i + 1]
            z = h @ w + b
            if i + 2 == len(self.params):
                break
            gamma, beta = self.params[i + 2], self.params[i + 3]
            mean, var = z.mean(0), z.var(0)
            xhat = (z - mean) / np.sqrt(var + EPS)
            out = np.maximum(xhat * gamma + beta, 0)
            caches.append((h, z, xhat, var, out, i))
            h, i = out, i + 4
        shifted = z - z.max(1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        loss = -logp[np.arange(BATCH), y].mean()
        dz = np.exp(logp)
        dz[np.arange(BATCH), y] -= 1
        dz /= BATCH
        grads[i], grads[i + 1] = h.T @ dz, dz.sum(0)
        dh = dz @ self.params[i].T
        for h_in, z, xhat, var, out, j in reversed(caches):
            dy = dh * (out > 0)
            grads[j + 2], grads[j + 3] = (dy * xhat).sum(0), dy.sum(0)
            dxhat = dy * self.params[j + 2]
            dz = (dxhat - dxhat.mean(0) - xhat * (dxhat * xhat).mean(0)) / np.sqrt(var + EPS)
            grads[j], grads[j + 1] = h_in.T @ dz, dz.sum(0)
            dh = dz @ self.params[j].T
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= LR * (m / (1 - 0.9 ** self.t)) / (np.sqrt(v / (1 - 0.999 ** self.t)) + 1e-8)
        return float(loss)


def numpy_step():
    return NumpyMLP().step


def torch_eager():
    import torch
    torch.manual_seed(0)
    layers, width = [], FEATURES
    for size in HIDDEN:
        layers += [torch.nn.Linear(width, size), torch.nn.BatchNorm1d(size), torch.nn.ReLU()]
        width = size
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


CONTENDERS = {"numpy (hand-written)": numpy_step, "ndlc eager": ndlc_eager, "ndlc compiled (CPU)": ndlc_compiled,
              "PyTorch eager": torch_eager}


def measure(make_step, repeats, warmup=3):
    """Median and all per-step times (ms) of `repeats` steps after `warmup` steps."""
    step = make_step()
    x, y = data()
    for _ in range(warmup):
        step(x, y)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(x, y)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), times


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def versions():
    import llvmlite
    found = {"python": platform.python_version(), "numpy": np.__version__,
             "llvmlite": llvmlite.__version__, "ndlc": ndl.__version__}
    try:
        import torch
        found["torch"] = torch.__version__
    except ImportError:
        pass
    return ", ".join(f"{k} {v}" for k, v in found.items())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
    args = parser.parse_args(argv)
    rows = []
    for name, make in CONTENDERS.items():
        try:
            median, _ = measure(make, args.repeats)
        except ImportError as e:
            print(f"{name}: skipped ({e})", file=sys.stderr)
            continue
        rows.append((name, median))
        print(f"{name:24s} {median:9.2f} ms/step", flush=True)
    compile_seconds = compile_times()
    print(f"compile: cold {compile_seconds['cold']:.2f} s, warm (disk cache) {compile_seconds['warm']:.2f} s")
    base = dict(rows)["numpy (hand-written)"]
    table = ["| implementation | median ms/step | vs numpy |", "|---|---:|---:|"]
    table += [f"| {name} | {ms:.2f} | {ms / base:.2f}x |" for name, ms in rows]
    text = "\n".join([
        "# Benchmarks", "",
        "Regenerate with `python benchmarks/mlp_step.py` (all numbers from one process, one run).", "",
        f"## MLP training step (784-512-BN-ReLU-256-BN-ReLU-10, Adam, batch {BATCH}, float32)", "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {machine()}",
        f"- versions: {versions()}",
        f"- median of {args.repeats} steps after 3 warm-up steps", "",
        *table, "",
        "Time to the first compiled step (trace, lower, compile or load native code, run once):",
        f"cold (empty cache) {compile_seconds['cold']:.2f} s; warm (native code from the disk cache) "
        f"{compile_seconds['warm']:.2f} s.", ""])
    with open(args.output, "w") as f:
        f.write(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
