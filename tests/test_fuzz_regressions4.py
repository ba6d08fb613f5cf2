"""What the sequence fuzzer (tests/test_sequence_fuzz.py) found, each kept as the smallest example
that failed."""
import numpy as np

import ndlc as ndl

nn = ndl.nn


def scan_gradient(hidden, batch, length):
    """(the gradient step of an `ndl.scan` recurrence, eagerly; its inputs)."""
    np.random.seed(0)
    W = nn.Parameter(ndl.init.rand(3, hidden, requires_grad=True))
    U = nn.Parameter(ndl.init.rand(hidden, hidden, requires_grad=True))

    def step(x, h):
        W.grad = U.grad = None

        def cell(h, x):
            h = ndl.tanh(x @ W + h @ U)
            return h, h
        loss = ndl.scan(cell, h, x)[1].sum()
        loss.backward()
        return loss, W.grad, U.grad
    rng = np.random.default_rng(1)
    return step, (rng.standard_normal((length, batch, 3)).astype(np.float32),
                  rng.standard_normal((batch, hidden)).astype(np.float32))


def test_a_reverse_scans_carry_is_not_kept_in_one_steps_rows():
    """A crash: the gradient's reverse scan over h (1, 2) double-buffers its carry, which one step
    writes and the next reads; memory planning counted the steps' copies of the body kernel as one
    kernel and, since the first step only writes the carry, kept it in per-thread rows of 1 (a
    stack buffer of that kernel alone): the step wrote 2 elements into a row of 1 and the next step
    read a buffer that was never written. Now every copy must write a temporary at one row."""
    step, (x, h) = scan_gradient(hidden=2, batch=1, length=4)
    compiled = ndl.compile(step)
    for _ in range(2):
        got = compiled(x, h)
    want = step(ndl.Tensor(x), ndl.Tensor(h))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)
    (program,) = [s.program for s in compiled.specialisations.values()]
    kernels = program.kernels.kernels
    for kernel in kernels:
        for name in kernel.local:
            assert all(name in k.outputs() for k in kernels if name in k.buffers()), (kernel.name, name)


def test_the_gradient_of_a_scan_whose_carry_is_float64_and_its_xs_and_weights_float32_compiles():
    """A float64 initial state into a recurrence over float32 inputs and weights (its carry and ys
    float64) ran eagerly but did not compile with its gradient: the reverse scan's results, the
    carry's adjoint (float64) and the gradients of the xs and weights (float32), were of two
    dtypes, which a scan cannot pack. Those are now carried as float64 and cast back (exactly)."""
    np.random.seed(0)
    V = nn.Parameter(ndl.init.rand(3, 3, requires_grad=True))
    W = nn.Parameter(ndl.init.rand(3, 2, requires_grad=True))

    def step(x, h):
        V.grad = W.grad = None

        def cell(h, x):
            h = ndl.tanh(x @ W + h)
            return h, h
        final, ys = ndl.scan(cell, h, (x.reshape((4, 3)) @ V).reshape((4, 1, 3)))
        loss = ys.sum() + final.sum()
        loss.backward()
        return loss, V.grad, W.grad
    rng = np.random.default_rng(1)
    x, h = rng.standard_normal((4, 1, 3)).astype(np.float32), rng.standard_normal((1, 2))
    got = ndl.compile(step)(x, ndl.Tensor(h, dtype="float64"))
    want = step(ndl.Tensor(x), ndl.Tensor(h, dtype="float64"))
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)
