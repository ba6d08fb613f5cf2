"""A compiled output that broadcasts a smaller value (a sum's gradient) comes back as a read-only
broadcast view of it (passes/broadcast_outputs.py, runtime/program.py `Program.views`): the
kernels write the small value only, and every path a result takes (Tensors, needle's NDArray,
eager optimizers, checkpoints, `ndlc run`, distributed placement) meets the view correctly."""
import numpy as np
import pytest

import ndlc as ndl
import ndlc.backend_ndarray as nd
from ndlc.jit.pipeline import compile_graph
from ndlc.ir import parse

RNG = np.random.default_rng(0)
X = RNG.standard_normal((8, 5, 7)).astype(np.float32)
C = RNG.standard_normal((8, 5)).astype(np.float32)


def sum_gradient(x, c):
    """The gradient of (x.sum(2) * c).sum(): c broadcast over x's last axis."""
    x.requires_grad = True
    (x.sum((2,)) * c).sum().backward()
    return x.grad


def expected(c):
    return np.broadcast_to(c[:, :, None], X.shape)


def test_a_sums_gradient_is_a_read_only_view_of_its_upstream_gradient():
    step = ndl.compile(sum_gradient)
    results = [step(X, C * k) for k in range(1, 6)]  # the full path, then the call entry's steady runs
    assert "f32[8,5,1] output" in step.ir("planned")  # the kernels write c, not its broadcast
    for k, result in enumerate(results, 1):  # held results never share memory with a later run's
        array = result.numpy()
        assert array.shape == X.shape and array.strides[2] == 0 and not array.flags.writeable
        np.testing.assert_array_equal(array, expected(C * k))
    with pytest.raises(ValueError, match="read-only"):
        results[0].numpy()[0, 0, 0] = 1.0


def test_tensors_ndarrays_and_eager_ops_read_the_view():
    grad = ndl.compile(sum_gradient)(X, C)
    data = grad.cached_data  # needle's NDArray: a private writeable copy becomes the tensor's data
    assert data.compact().shape == X.shape and data.reshape((X.size,)).shape == (X.size,)
    np.testing.assert_array_equal(data.numpy(), expected(C))
    data[0, 0, 0] = 5.0  # writing through it changes this tensor only
    assert grad.numpy()[0, 0, 0] == 5.0 and C[0, 0] != 5.0
    np.testing.assert_array_equal((grad * 2 + 1).numpy()[1:], 2 * expected(C)[1:] + 1)
    np.testing.assert_array_equal(grad.reshape((8, 35)).numpy()[1:], expected(C)[1:].reshape(7, 35))
    view = ndl.compile(sum_gradient)(X, C).numpy()
    for made in (nd.array(view), ndl.Tensor(view).cached_data):  # compact, writeable copies
        assert made.strides == (35, 7, 1)
        made[0, 0, 0] = 9.0
    np.testing.assert_array_equal(view, expected(C))


def test_an_eager_optimizer_steps_with_a_view_as_its_gradient():
    w = ndl.Tensor(np.ones(X.shape, np.float32), requires_grad=True)
    w.grad = ndl.compile(sum_gradient)(X, C)
    ndl.optim.SGD([w], lr=0.5).step()
    np.testing.assert_allclose(w.numpy(), 1 - 0.5 * expected(C), rtol=1e-6)


def test_a_checkpoint_stores_the_whole_array(tmp_path):
    grad = ndl.compile(sum_gradient)(X, C)
    ndl.save({"g": grad}, tmp_path / "g.npz")
    loaded = ndl.load(tmp_path / "g.npz")["g"].numpy()
    np.testing.assert_array_equal(loaded, expected(C))
    assert loaded.flags.writeable and loaded.strides[2] != 0


GRAPH = """
graph @g(%c: f32[8,5]) {
  %0 = reshape(%c, shape=(8, 5, 1)) : f32[8,5,1]
  %1 = broadcast_to(%0, shape=(8, 5, 7)) : f32[8,5,7]
  return %1
}"""


def test_ndlc_runs_results_are_whole_writeable_arrays():
    (result,) = ndl.compile_ir(GRAPH)(C)
    np.testing.assert_array_equal(result, expected(C))
    assert result.flags.writeable and result.strides[2] != 0


def test_a_placed_output_receives_the_broadcast():
    program = compile_graph(parse(GRAPH))
    into = np.zeros(X.shape, np.float32)
    (result,) = program.run(C, into={program.kernels.outputs[0]: into})
    np.testing.assert_array_equal(into, expected(C))
    np.testing.assert_array_equal(result, expected(C))
    with pytest.raises(ndl.errors.ShapeError, match=r"f32\[8, 5, 7\]|f32\[8,5,7\]"):
        program.run(C, into={program.kernels.outputs[0]: np.zeros((8, 5, 1), np.float32)})

