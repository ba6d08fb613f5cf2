"""The needle Tensor API: construction, data, operators, errors, and tracing."""
import inspect

import numpy as np
import pytest

import ndlc as ndl
from ndlc.ir import all_ops


def line_here():
    return inspect.currentframe().f_back.f_lineno


def test_construction_defaults_follow_needle():
    assert ndl.Tensor([1.0, 2.0]).dtype == "float32"
    assert ndl.Tensor(np.zeros(3)).dtype == "float32"
    assert ndl.Tensor(np.zeros(3), dtype="float64").dtype == "float64"
    assert ndl.Tensor([1, 2]).dtype == "int64"
    assert ndl.Tensor(np.zeros(2, np.uint8)).dtype == "uint8"
    x = ndl.Tensor([[1.0, 2.0]])
    assert x.shape == (1, 2) and x.requires_grad and x.device == ndl.cpu()
    copy = ndl.Tensor(x)
    assert copy.numpy().tolist() == [[1.0, 2.0]] and copy.is_leaf()


def test_unsupported_dtype_is_refused_at_construction():
    with pytest.raises(ndl.ShapeError, match="unsupported dtype complex128"):
        ndl.Tensor(np.array([1 + 2j]))


def test_data_is_detached_and_assignable():
    x = ndl.Tensor([1.0, 2.0])
    y = x * 2.0
    assert y.data.is_leaf() and not y.data.requires_grad
    assert not y.is_leaf() and y.inputs[0] is x
    x.data = ndl.Tensor([5.0, 6.0])
    assert x.numpy().tolist() == [5.0, 6.0] and x.is_leaf() and x.requires_grad
    with pytest.raises(ndl.NdlcError, match=r"cannot assign f64\[2\] data to a f32\[2\] tensor"):
        x.data = ndl.Tensor([1.0, 2.0], dtype="float64")


def test_operators_and_reflected_forms():
    x = ndl.Tensor([1.0, 2.0, 4.0])
    np.testing.assert_allclose((x + 1).numpy(), [2, 3, 5])
    np.testing.assert_allclose((1 + x).numpy(), [2, 3, 5])
    np.testing.assert_allclose((2 - x).numpy(), [1, 0, -2])
    np.testing.assert_allclose((x - 2).numpy(), [-1, 0, 2])
    np.testing.assert_allclose((x - x).numpy(), [0, 0, 0])
    np.testing.assert_allclose((2 * x).numpy(), [2, 4, 8])
    np.testing.assert_allclose((x / 2).numpy(), [0.5, 1, 2])
    np.testing.assert_allclose((2 / x).numpy(), [2, 1, 0.5])
    np.testing.assert_allclose((x ** 2).numpy(), [1, 4, 16])
    np.testing.assert_allclose((2 ** x).numpy(), [2, 4, 16])
    np.testing.assert_allclose((x ** x).numpy(), [1, 4, 256])
    np.testing.assert_allclose((-x).numpy(), [-1, -2, -4])
    assert (x > 1.5).numpy().tolist() == [False, True, True]
    assert (x <= 2).numpy().tolist() == [True, True, False]
    m = ndl.Tensor(np.eye(3))
    np.testing.assert_allclose((x.reshape((1, 3)) @ m).numpy(), [[1, 2, 4]])
    np.testing.assert_allclose((np.ones((1, 3), np.float32) @ m).numpy(), [[1, 1, 1]])


def test_dtype_promotion():
    i = ndl.Tensor([1, 2])
    f = ndl.Tensor([0.5, 0.5])
    assert (i + f).dtype == "float32"
    assert (i + 1).dtype == "int64"
    assert (i * 0.5).dtype == "float32"
    assert (i / 2).dtype == "float32"
    assert ndl.exp(i).dtype == "float32"
    assert (f + ndl.Tensor([1.0, 1.0], dtype="float64")).dtype == "float64"


def test_every_op_is_reachable_as_ndl_op_and_ndl_ops_op():
    for name in all_ops():
        assert callable(getattr(ndl, name)) and callable(getattr(ndl.ops, name)), name


def test_needle_signatures():
    x = ndl.Tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    assert ndl.summation(x).shape == ()
    assert ndl.summation(x, axes=1).shape == (2, 4)
    assert x.sum((0, -1)).shape == (3,)
    assert ndl.transpose(x).shape == (2, 4, 3)
    assert x.transpose((0, 1)).shape == (3, 2, 4)
    assert x.reshape((4, -1)).shape == (4, 6)
    assert ndl.broadcast_to(ndl.Tensor([1.0]), (2, 2)).shape == (2, 2)
    pieces = ndl.split(x, 1)
    assert len(pieces) == 3 and pieces[2].shape == (2, 4)
    np.testing.assert_array_equal(ndl.stack(pieces, 1).numpy(), x.numpy())
    np.testing.assert_array_equal(ndl.flip(x, (2,)).numpy(), x.numpy()[:, :, ::-1])
    assert ndl.dilate(x, (0,), 1).shape == (4, 3, 4)
    assert ndl.add_scalar(x, 1).numpy()[0, 0, 0] == 1
    assert ndl.logsoftmax(x).shape == x.shape
    assert ndl.conv(ndl.Tensor(np.ones((1, 4, 4, 2))), ndl.Tensor(np.ones((3, 3, 2, 5)))).shape == (1, 4, 4, 5)
    assert ndl.max_pool2d(ndl.Tensor(np.ones((1, 2, 4, 4))), 2).shape == (1, 2, 2, 2)
    assert ndl.where(x > 3, x, 0.0).numpy()[0, 0, 0] == 0


@pytest.mark.parametrize("a,b,out", [((6, 6, 5, 4), (4, 3), (6, 6, 5, 3)), ((5, 4), (6, 6, 4, 3), (6, 6, 5, 3))])
def test_batched_broadcast_matmul(a, b, out):
    x, y = np.random.randn(*a), np.random.randn(*b)
    z = ndl.Tensor(x) @ ndl.Tensor(y)
    assert z.shape == out
    np.testing.assert_allclose(z.numpy(), x @ y, rtol=1e-4, atol=1e-4)


def test_shape_error_names_op_types_and_user_line():
    a, b = ndl.Tensor(np.ones((2, 3))), ndl.Tensor(np.ones((4, 5)))
    with pytest.raises(ndl.ShapeError) as info:
        line = line_here(); a @ b  # noqa: E702
    message = str(info.value)
    assert "matmul(f32[2,3], f32[4,5])" in message and "inner dimensions 3 and 4 differ" in message
    assert f"test_tensor.py:{line}" in message


def test_broadcast_error_names_op_and_line():
    with pytest.raises(ndl.ShapeError, match=r"add\(f32\[2,3\], f32\[4\]\): shapes \(2, 3\) and \(4,\) do not broadcast \(at .*test_tensor.py:\d+\)"):
        ndl.Tensor(np.ones((2, 3))) + ndl.Tensor(np.ones(4))


def test_attribute_errors_are_named():
    with pytest.raises(ndl.ShapeError, match=r"summation\(f32\[2\]\): axes \(3,\) out of range for rank 1"):
        ndl.summation(ndl.Tensor([1.0, 2.0]), axes=3)
    with pytest.raises(ndl.ir.AttrError, match="windows: unknown attribute 'size'"):
        ndl.windows(ndl.Tensor(np.ones((3, 3))), kernel=2, stride=1, size=2)


def test_trace_builds_a_graph_with_named_inputs_and_captured_constants():
    w = ndl.Tensor(np.ones((3, 2)))

    def model(x):
        return ndl.relu(x @ w)

    g = ndl.trace(model, np.zeros((4, 3), np.float32))
    assert [v.name for v in g.inputs][0] == "x"
    assert g.inputs[1].kind == "const" and g.constants[g.inputs[1]] is w.numpy()
    assert str(g).splitlines()[0] == "graph @model(%x: f32[4,3], %arg1: f32[3,2] const) {"
    (out,) = ndl.ir.interpret(g, np.ones((4, 3), np.float32))
    np.testing.assert_allclose(out, model(ndl.Tensor(np.ones((4, 3)))).numpy())


def test_trace_refuses_value_dependent_control_flow():
    def branchy(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(ndl.TraceError, match="cannot read the value of a symbolic f32\\[3\\] tensor|symbolic"):
        ndl.trace(branchy, np.zeros(3, np.float32))
    with pytest.raises(ndl.TraceError, match="cannot read the value"):
        ndl.trace(lambda x: ndl.Tensor(x.numpy()), np.zeros(3, np.float32))


def test_trace_refuses_non_tensor_outputs():
    with pytest.raises(ndl.TraceError, match="returned int as output 1"):
        ndl.trace(lambda x: (x, 3), np.zeros(2, np.float32))


def test_backward_inside_a_trace_records_gradient_nodes():
    def step(x, w):
        loss = (x @ w).sum()
        loss.backward()
        return loss, w.grad

    x, w = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    g = ndl.trace(step, x, ndl.Tensor(w))
    loss, grad = ndl.ir.interpret(g, x, w)
    assert float(loss) == 24 and grad.tolist() == (np.ones((3, 2)) @ np.ones((2, 4))).tolist()


def test_a_values_data_and_tensor_entries_live_as_long_as_the_value():
    """The eager registries hold their values weakly: entries go when the value dies (not when a
    tensor does, while an op's result still reaches the value), and a Tensor made later for a
    live value (an op's input seen again) is found as the one wrapping it."""
    import gc
    from ndlc.frontend import tensor as tensor_module
    gc.collect()
    before = (len(tensor_module._DATA), len(tensor_module._TENSORS))
    x = ndl.Tensor(np.ones((2, 3), np.float32))
    y = ndl.Tensor.make_const(np.full((2, 3), 2.0, np.float32))
    z = x * y
    assert z.inputs[0] is x and z.inputs[1] is y
    del y
    gc.collect()
    assert z.inputs[1].numpy().tolist() == [[2.0] * 3] * 2  # its value lives on as z's operand
    x.requires_grad = True
    z.sum().backward()
    assert x.grad.numpy().tolist() == [[2.0] * 3] * 2
    del x, z
    gc.collect()
    assert (len(tensor_module._DATA), len(tensor_module._TENSORS)) == before


def test_a_result_made_to_require_grad_later_receives_its_gradient():
    """backward finds every live tensor by its value, also one made by a compiled call."""
    step = ndl.compile(lambda a: a * 3.0)
    a = np.ones((2, 2), np.float32)
    for _ in range(3):
        out = step(a)  # the third through the call entry
    out.requires_grad = True
    (out * out).sum().backward()
    assert out.grad.numpy().tolist() == [[6.0, 6.0], [6.0, 6.0]]
