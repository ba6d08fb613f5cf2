"""Reliability over long runs (the slow suite): calls from many threads, repeated; ten thousand
training steps without memory growth; long graphs that compile and compute what eager does."""
import threading

import numpy as np
import pytest

import ndlc as ndl
from ndlc.examples.train_mlp import training_step

pytestmark = pytest.mark.slow


def run_threads(count, work):
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("repeat", range(20))
def test_threads_share_one_compiled_function_and_one_training_step(repeat):
    """8 threads x 200 calls of one forward function: each result equals the serial one; 4 threads
    x 25 steps of one training step end where 100 serial steps end."""
    rng = np.random.default_rng(repeat)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    forward = ndl.compile(lambda x: ndl.tanh(x @ ndl.Tensor(w, requires_grad=False)).sum(axes=(1,)))
    inputs = [rng.standard_normal((32, 16)).astype(np.float32) for _ in range(1600)]
    serial = [forward(x).numpy() for x in inputs]
    got = [None] * len(inputs)

    def call(first):
        for i in range(first, len(inputs), 8):
            got[i] = forward(inputs[i]).numpy()
    run_threads(8, call)
    for a, b in zip(got, serial):
        np.testing.assert_array_equal(a, b)

    x, y = rng.standard_normal((32, 16)).astype(np.float32), rng.integers(0, 4, 32)
    weights = []
    for threaded in (False, True):
        np.random.seed(repeat)
        model = ndl.nn.Sequential(ndl.nn.Linear(16, 8), ndl.nn.BatchNorm1d(8), ndl.nn.Linear(8, 4))
        step = ndl.compile(training_step(model, ndl.optim.Adam(model.parameters(), lr=0.01)))
        if threaded:
            run_threads(4, lambda _: [step(x, y) for _ in range(25)])
        else:
            for _ in range(100):
                step(x, y)
        weights.append([t.numpy().copy() for t in model.state_dict().values()])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def resident_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads /proc")
def test_ten_thousand_steps_hold_their_memory():
    """RSS after 10,000 compiled training steps (a new lr each step) is within 1 MB of RSS after
    the first 200: no per-call allocation survives its call."""
    np.random.seed(0)
    model = ndl.nn.Sequential(ndl.nn.Linear(20, 32), ndl.nn.ReLU(), ndl.nn.Linear(32, 5))
    opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = ndl.compile(training_step(model, opt))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 20)).astype(np.float32), rng.integers(0, 5, 16)
    for i in range(10_000):
        if i == 200:
            before = resident_kb()
        opt.lr = 0.1 / (1 + i / 1000)
        step(x, y)
    assert step.compilations == 1
    assert resident_kb() - before < 1024


def chain(x):
    """5000 elementwise ops: tanh, scale, shift, in turn."""
    for i in range(5000):
        x = ndl.tanh(x) if i % 3 == 0 else x * 1.0001 if i % 3 == 1 else x + 0.001
    return x


def mlp_like(x):
    """250 small dense layers with a residual mix: 1750 nodes of matmuls, broadcasts and
    elementwise ops, the shape of a deep MLP's graph."""
    rng = np.random.default_rng(0)
    h = x
    for _ in range(250):
        w = ndl.Tensor(rng.standard_normal((16, 16)).astype(np.float32) * 0.25, requires_grad=False)
        b = ndl.Tensor(rng.standard_normal((1, 16)).astype(np.float32) * 0.1, requires_grad=False)
        h = ndl.tanh(h @ w + b.broadcast_to((8, 16))) * 0.9 + h * 0.1
    return h.sum()


@pytest.mark.parametrize("fn, shape", [(chain, (64, 64)), (mlp_like, (8, 16))], ids=["chain", "mlp"])
def test_long_graphs_compile_and_equal_eager(fn, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 0.1
    got = ndl.compile(fn)(x).numpy()
    np.testing.assert_allclose(got, fn(ndl.Tensor(x, requires_grad=False)).numpy(), rtol=1e-4, atol=1e-5)
