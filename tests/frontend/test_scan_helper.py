"""ndl.scan: the Python loop eagerly, one scan node when traced, equal results either way."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc.errors import TraceError
from ndlc.ir import interpret

RNG = np.random.default_rng(0)
W = RNG.standard_normal((3, 3)).astype(np.float32) * 0.5
XS = RNG.standard_normal((5, 2, 3)).astype(np.float32)
H0 = RNG.standard_normal((2, 3)).astype(np.float32)


def numpy_loop(h, xs):
    hs = []
    for x in xs:
        h = np.tanh(h @ W + x)
        hs.append(h)
    return h, np.stack(hs)


def rnn(h0, xs, unroll=False):
    """An Elman RNN over xs; the weight is a tensor the step function closes over."""
    w = ndl.Tensor(W)

    def step(h, x):
        h = ndl.tanh(h @ w + x)
        return h, h
    return ndl.scan(step, h0, xs, unroll=unroll)


def test_eagerly_scan_is_the_python_loop():
    h, hs = rnn(ndl.Tensor(H0), ndl.Tensor(XS))
    want_h, want_hs = numpy_loop(H0, XS)
    np.testing.assert_allclose(h.numpy(), want_h, rtol=1e-5)
    np.testing.assert_allclose(hs.numpy(), want_hs, rtol=1e-5)


def test_traced_scan_is_one_node_whose_body_is_the_step():
    graph = ndl.trace(lambda h0, xs: rnn(h0, xs), H0, XS)
    assert [n.op for n in graph.nodes] == ["scan", "part", "part"]
    body = graph.nodes[0].attrs["body"]
    assert [n.op for n in body.nodes] == ["matmul", "add", "tanh"]
    assert len(body.inputs) == 3  # the carry, the step's x and the captured weight
    eager = rnn(ndl.Tensor(H0), ndl.Tensor(XS))
    for got, want in zip(interpret(graph, H0, XS), eager):
        np.testing.assert_array_equal(got, want.numpy())


def test_unroll_traces_the_loop():
    graph = ndl.trace(lambda h0, xs: rnn(h0, xs, unroll=True), H0, XS)
    assert sum(n.op == "tanh" for n in graph.nodes) == len(XS)


def sgd_steps(compiled, count=3):
    """`count` SGD steps of a weight through a scan with a tuple carry, no ys and an explicit const:
    the losses and the final weight."""
    w, h0 = ndl.Tensor(W), ndl.Tensor(H0)

    def sgd_step(xs):
        def step(carry, x, v):
            h, total = carry
            h = ndl.tanh(h @ v + x)
            return (h, total + h), None
        (h, total), ys = ndl.scan(step, (h0, ndl.init.zeros(2, 3)), xs, consts=(w,))
        assert ys is None
        loss = (h * total).sum()
        loss.backward()
        w.data = w.data - 0.1 * w.grad.data
        return loss
    step = ndl.compile(sgd_step) if compiled else sgd_step
    losses = [float(step(XS if compiled else ndl.Tensor(XS)).numpy()) for _ in range(count)]
    return losses, w.numpy()


def test_compiled_scan_gradients_equal_eager_ones():
    (eager_losses, eager_w), (losses, w) = sgd_steps(False), sgd_steps(True)
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-5)
    np.testing.assert_allclose(w, eager_w, rtol=1e-5, atol=1e-6)


def test_a_step_that_changes_its_carry_is_refused():
    with pytest.raises(TypeError, match="a carry of its input's structure, shapes and dtypes"):
        ndl.scan(lambda h, x: (h.sum(), h), ndl.Tensor(H0), ndl.Tensor(XS))


def test_a_step_that_does_not_return_a_pair_is_refused():
    with pytest.raises(TypeError, match=r"fn must return \(carry, y\)"):
        ndl.scan(lambda h, x: h, ndl.Tensor(H0), ndl.Tensor(XS))


def test_random_numbers_in_a_traced_step_are_refused():
    def fn(h0, xs):
        return ndl.scan(lambda h, x: (h + ndl.init.rand(2, 3), h), h0, xs)[0]
    with pytest.raises(TraceError, match="draws random numbers"):
        ndl.trace(fn, H0, XS)


def test_sequences_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="the same non-empty first axis"):
        ndl.scan(lambda h, x: (h, h), ndl.Tensor(H0), (ndl.Tensor(XS), ndl.Tensor(XS[:2])))


def test_gradient_as_tuple_of_a_scan_points_to_backward():
    def fn(h0, xs):
        packed = rnn(h0, xs)[0].inputs[0]
        with pytest.raises(ndl.NdlcError, match="several results"):
            packed.op.gradient_as_tuple(packed, packed)
        return packed
    ndl.trace(fn, H0, XS)
