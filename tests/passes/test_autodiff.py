"""The autodiff pass: worked examples, higher-order gradients, broadcast corners, fan-out."""
import numpy as np
import pytest

import ndlc as ndl
from gradcheck import check_gradients
from ndlc.ir import Builder, Graph, TensorType, interpret
from ndlc.passes import autodiff


def scalar(v):
    return ndl.Tensor(v, dtype="float64")


def test_worked_example_of_the_autodiff_notes():
    x1, x2 = scalar(2.0), scalar(5.0)
    y = ndl.log(x1) + x1 * x2 - ndl.sin(x2)
    y.backward()
    assert float(y) == pytest.approx(11.652, abs=1e-3)
    assert float(x1.grad) == pytest.approx(5.5)
    assert float(x2.grad) == pytest.approx(5 * 0 + 2 - np.cos(5.0))
    assert float(x2.grad) == pytest.approx(1.716, abs=1e-3)


def test_gradient_of_a_gradient():
    x2, x3 = scalar(6.0), scalar(0.0)
    y = x2 * x2 + x2 * x3
    y.backward()
    dy_dx2 = x2.grad
    assert float(dy_dx2) == 12
    dy_dx2.backward()
    assert float(x2.grad) == 2
    assert float(x3.grad) == 1


def test_graph_pass_appends_gradients_as_outputs():
    g = Graph("f")
    x1 = g.add_input(TensorType((), "f64"), "x1")
    x2 = g.add_input(TensorType((), "f64"), "x2")
    b = Builder(g)
    g.outputs = [b.add(b.add(b.log(x1), b.multiply(x1, x2)), b.negate(b.sin(x2)))]
    grad = autodiff(g)
    assert grad.nodes[:len(g.nodes)] == g.nodes, "the pass extends the graph, it does not rebuild it"
    y, d1, d2 = interpret(grad, np.float64(2), np.float64(5))
    assert (float(d1), float(d2)) == pytest.approx((5.5, 2 - np.cos(5.0)))


def test_unused_input_gets_zero_gradient_in_a_graph_and_none_eagerly():
    g = Graph("f")
    x = g.add_input(TensorType((2,), "f64"), "x")
    g.add_input(TensorType((3,), "f64"), "u")
    g.outputs = [Builder(g).summation(x, axes=(0,))]
    _, dx, du = interpret(autodiff(g), np.ones(2), np.ones(3))
    assert dx.tolist() == [1, 1] and du.tolist() == [0, 0, 0]
    a, b = ndl.Tensor([1.0, 2.0]), ndl.Tensor([3.0])
    a.sum().backward()
    assert b.grad is None


@pytest.mark.parametrize("source,target", [((), (3, 3, 3)), ((1,), (3, 3, 3)), ((3, 1), (3, 2))])
def test_broadcast_corners(source, target):
    rng = np.random.default_rng(0)
    check_gradients(lambda x: ndl.broadcast_to(x, target) * 2.0, rng.standard_normal(source))
    check_gradients(lambda x, y: x * y, rng.standard_normal(source), rng.standard_normal(target))


def test_value_used_by_three_consumers():
    rng = np.random.default_rng(0)
    check_gradients(lambda x: ndl.exp(x) * x + ndl.sin(x), rng.standard_normal((3, 2)))
    x = scalar(1.5)
    y = x * 2.0 + x * x + ndl.exp(x)
    y.backward()
    assert float(x.grad) == pytest.approx(2 + 3 + np.exp(1.5))


def test_partial_adjoints_are_summed_in_one_place():
    """Three users of x give three partials and two adds: the sum the notes describe."""
    g = Graph("fanout")
    x = g.add_input(TensorType((2,), "f64"), "x")
    b = Builder(g)
    g.outputs = [b.summation(b.add(b.add(b.exp(x), b.sin(x)), b.negate(x)), axes=(0,))]
    grad = autodiff(g)
    new = [n.op for n in grad.nodes[len(g.nodes):]]
    assert new.count("add") >= 2
    (_, dx) = interpret(grad, np.array([0.5, -1.0]))
    np.testing.assert_allclose(dx, np.exp([0.5, -1.0]) + np.cos([0.5, -1.0]) - 1)


def test_stop_gradient_blocks_the_gradient():
    x = ndl.Tensor([1.0, 2.0], dtype="float64")
    (x * x.detach()).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 2.0])


def test_grad_is_overwritten_by_each_backward_as_in_needle():
    x = ndl.Tensor([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * 5.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])


def test_intermediate_tensors_get_grads_as_in_needle():
    x = ndl.Tensor([1.0, 2.0])
    y = x * 2.0
    (y * y).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [4.0, 8.0])


def test_backward_with_out_grad():
    x = ndl.Tensor([1.0, 2.0, 3.0])
    (x * x).backward(ndl.Tensor([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 0.0, 12.0])


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", [0, 1, 3])
@pytest.mark.parametrize("kernel", [(1, 1), (2, 2), (3, 2)])
def test_conv_gradients_over_strides_paddings_and_kernels(stride, padding, kernel):
    rng = np.random.default_rng(stride * 100 + padding * 10 + kernel[0])
    x = rng.standard_normal((1, 5, 4, 2))
    w = rng.standard_normal(kernel + (2, 2))
    check_gradients(lambda x, w: ndl.conv(x, w, stride=stride, padding=padding), x, w)


def test_batched_broadcast_matmul_gradients():
    rng = np.random.default_rng(0)
    check_gradients(ndl.matmul, rng.standard_normal((2, 2, 3, 2)), rng.standard_normal((2, 4)))
    check_gradients(ndl.matmul, rng.standard_normal((3, 2)), rng.standard_normal((2, 1, 2, 4)))


def test_second_order_through_matmul_and_logsumexp():
    """Gradient rules emit ordinary IR, so the gradient's own gradient matches differences."""
    rng = np.random.default_rng(0)

    def grad_norm(w):
        x = ndl.Tensor(rng_x, dtype="float64", requires_grad=False)
        loss = ndl.logsumexp(x @ w, axes=(1,)).sum()
        loss.backward()
        return w.grad * w.grad

    rng_x = rng.standard_normal((3, 4))
    check_gradients(grad_norm, rng.standard_normal((4, 2)), tol=1e-5)


def test_non_float_output_cannot_be_differentiated():
    with pytest.raises(ndl.NdlcError, match="only float"):
        (ndl.Tensor([1, 2]) > 0).backward()
