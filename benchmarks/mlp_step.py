"""Benchmark: one training step of the Fashion-MNIST MLP (784-512-BN-ReLU-256-BN-ReLU-10, Adam,
batch 256) in every implementation available, timed in interleaved blocks in one process.
`ndlc bench` (benchmarks/suite/) puts this table into benchmarks/RESULTS.md with the kernel suite.

    python benchmarks/mlp_step.py                   # prints the table
    python benchmarks/mlp_step.py --output FILE     # and writes it, with the machine, as markdown
"""
import argparse
import datetime
import functools
import math
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

import ndlc as ndl
from ndlc.env import cores
from ndlc.examples.train_mlp import build_mlp, training_step

BATCH, FEATURES, HIDDEN, CLASSES = 256, 784, (512, 256), 10
LR, EPS = 1e-3, 1e-5
BLOCKS = 5  # interleaved timing blocks per contender
SETTLE_S = 0.1  # idle seconds before each timed block or round: PyTorch's OpenMP threads spin 10-50 ms
# after its last call and held the core ndlc's worker needed (it joined 10 of 288 regions; the
# compiled MLP step 7.3 ms right after PyTorch's calls, 4.1-4.5 after a pause of 50-200 ms)


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
            xhat, _, var = normalize(z, 0)
            out = np.maximum(xhat * gamma + beta, 0)
            caches.append((h, z, xhat, var, out, i))
            h, i = out, i + 4
        logp = log_softmax(z)
        loss = cross_entropy(logp, y)
        dz = cross_entropy_grad(logp, y)
        grads[i], grads[i + 1] = h.T @ dz, dz.sum(0)
        dh = dz @ self.params[i].T
        for h_in, z, xhat, var, out, j in reversed(caches):
            dy = dh * (out > 0)
            grads[j + 2], grads[j + 3] = (dy * xhat).sum(0), dy.sum(0)
            dz = normalize_grad(dy * self.params[j + 2], xhat, var, 0)
            grads[j], grads[j + 1] = h_in.T @ dz, dz.sum(0)
            dh = dz @ self.params[j].T
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            adam_update(p, g, m, v, self.t)
        return float(loss)


def normalize(z, axis):
    """`z` standardised over `axis` (biased variance, EPS), its mean and variance (dims kept); only
    operators and array methods, so JAX arrays go through it too (benchmarks/suite/cases/)."""
    mean, var = z.mean(axis, keepdims=True), z.var(axis, keepdims=True)
    return (z - mean) / (var + EPS) ** 0.5, mean, var


def normalize_grad(dxhat, xhat, var, axis):
    """The gradient of normalize's input, from the gradient `dxhat` of its output `xhat`."""
    return (dxhat - dxhat.mean(axis, keepdims=True)
            - xhat * (dxhat * xhat).mean(axis, keepdims=True)) / (var + EPS) ** 0.5


def log_softmax(z):
    """log softmax of each row of `z` (shifted by the row maximum, for stability)."""
    shifted = z - z.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def cross_entropy(logp, y):
    """Softmax cross-entropy from log_softmax's output: the mean over rows of -logp[row, y]."""
    return -logp[np.arange(len(y)), y].mean()


def cross_entropy_grad(logp, y):
    """Its gradient with respect to the logits: (softmax - one_hot(y)) / rows."""
    dz = np.exp(logp)
    dz[np.arange(len(y)), y] -= 1
    dz /= len(y)
    return dz


def adam_update(p, g, m, v, t, lr=LR, beta1=0.9, beta2=0.999, eps=1e-8):
    """needle's Adam step `t` (from 1) of parameter `p` with gradient `g`, in place on p, m and v."""
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    p -= lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)


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


def measure(make_step, repeats, warmup=3, args=None, budget_s=math.inf, least_s=0.0, most=None, settle_s=0.0):
    """Median and all per-call times (ms) of `repeats` calls of `make_step()` after `warmup` calls,
    on `args` (default: the MLP's batch); fewer calls (at least 3) once they add up to `budget_s`,
    more (up to `most`) until they add up to `least_s`, so that a short case's median spans more
    than a scheduler tick; after `settle_s` idle seconds, so that another framework's threads,
    still spinning from its last call, have let the cores go."""
    step = make_step()
    args = data() if args is None else args
    time.sleep(settle_s)
    for _ in range(warmup):
        step(*args)
    times = []
    most = max(repeats, most or repeats)
    while (len(times) < repeats and (len(times) < 3 or sum(times) < budget_s * 1e3)
           or len(times) < most and sum(times) < least_s * 1e3):
        start = time.perf_counter()
        step(*args)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), times


def interleaved(calls, blocks, per_block, budget_s=math.inf, settle_s=SETTLE_S):
    """Callables (by name) timed in turn, `blocks` times over in a rotating order, each block by
    `measure` (`settle_s` idle seconds, a warm-up call, then `per_block` calls, at least 3 once they
    add up to `budget_s` seconds): per name, its blocks' medians in ms. Interleaved, a shift of the machine's speed
    within the run falls on every callable alike: on this host two busy threads at times run ~1.6x
    slower each for seconds to minutes (docs/BENCHMARKS.md), which timed one contender after the
    other once made the compiled MLP step look 1.27x PyTorch's."""
    names = list(calls)
    medians = {name: [] for name in names}
    for number in range(blocks):
        turn = number % len(names)
        for name in names[turn:] + names[:turn]:
            median, _ = measure(lambda: calls[name], per_block, warmup=1, args=(), budget_s=budget_s,
                                settle_s=settle_s)
            medians[name].append(median)
    return medians


def run(repeats, progress=lambda name: None, blocks=BLOCKS):
    """(implementation, ms/step) for every contender whose framework imports: the median of its
    medians over `blocks` interleaved blocks of about repeats/blocks steps, after 3 warm-up steps;
    `progress` is called with each contender's name once it is built."""
    x, y = data()
    calls = {}
    for name, make in CONTENDERS.items():
        try:
            step = make()
        except ImportError as e:
            print(f"{name}: skipped ({e})", file=sys.stderr)
            continue
        finally:
            progress(name)
        for _ in range(3):
            step(x, y)
        calls[name] = functools.partial(step, x, y)
    medians = interleaved(calls, blocks, max(3, -(-repeats // blocks)))
    return [(name, statistics.median(times)) for name, times in medians.items()]


def section(rows, compile_seconds, repeats):
    """The markdown section of RESULTS.md for the MLP step: its table and the compile times."""
    base = dict(rows)["numpy (hand-written)"]
    return [
        f"## MLP training step (784-512-BN-ReLU-256-BN-ReLU-10, Adam, batch {BATCH}, float32)", "",
        f"- per implementation, the median of its medians over {BLOCKS} interleaved blocks of "
        f"{max(3, -(-repeats // BLOCKS))} steps (the implementations in turn, the order rotating), after "
        "3 warm-up steps", "",
        "| implementation | median ms/step | vs numpy |", "|---|---:|---:|",
        *(f"| {name} | {ms:.2f} | {ms / base:.2f}x |" for name, ms in rows), "",
        "Time to the first compiled step (trace, lower, compile or load native code, run once):",
        f"cold (empty cache) {compile_seconds['cold']:.2f} s; warm (native code from the disk cache) "
        f"{compile_seconds['warm']:.2f} s.", ""]


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {cores()} cores"


def versions():
    """Versions of python and of the libraries the contenders use (the optional ones if present)."""
    import llvmlite
    found = {"python": platform.python_version(), "numpy": np.__version__,
             "llvmlite": llvmlite.__version__, "ndlc": ndl.__version__}
    for optional in ("torch", "jax"):
        try:
            found[optional] = __import__(optional).__version__
        except ImportError:
            pass
    return ", ".join(f"{k} {v}" for k, v in found.items())


def environment():
    """The markdown lines that say when, where and with what the numbers were measured."""
    return [f"- date: {datetime.date.today().isoformat()}", f"- machine: {machine()}",
            f"- versions: {versions()}"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", help="also write the table as markdown to this file "
                        "(benchmarks/RESULTS.md is written by `ndlc bench`)")
    args = parser.parse_args(argv)
    rows = run(args.repeats)
    for name, median in rows:
        print(f"{name:24s} {median:9.2f} ms/step")
    compile_seconds = compile_times()
    print(f"compile: cold {compile_seconds['cold']:.2f} s, warm (disk cache) {compile_seconds['warm']:.2f} s")
    if args.output:
        text = ["# MLP step benchmark", "", *environment(), "", *section(rows, compile_seconds, args.repeats)]
        with open(args.output, "w") as f:
            f.write("\n".join(text))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
