"""ndl.init against numpy formulas drawn from the same seed (needle's draw order and arithmetic)."""
import math

import numpy as np
import pytest

import ndlc as ndl
from ndlc import init, nn


def draws(seed, fn):
    """What `fn` gives right after np.random.seed(seed)."""
    np.random.seed(seed)
    return fn()


@pytest.mark.parametrize("make, reference", [
    (lambda: init.rand(3, 4, low=-2.0, high=5.0), lambda: np.random.rand(3, 4) * 7.0 - 2.0),
    (lambda: init.randn(5, 2, mean=1.5, std=0.3), lambda: np.random.randn(5, 2) * 0.3 + 1.5),
    (lambda: init.constant(2, 3, c=4.5), lambda: np.full((2, 3), 4.5)),
    (lambda: init.ones(4), lambda: np.ones(4)),
    (lambda: init.zeros(2, 2), lambda: np.zeros((2, 2))),
])
def test_elementary_initialisers_match_numpy(make, reference):
    t = draws(3, make)
    assert t.dtype == "float32" and not t.requires_grad
    np.testing.assert_array_equal(t.numpy(), draws(3, reference).astype(np.float32))


def test_randb_is_uniform_draw_at_most_p():
    t = draws(1, lambda: init.randb(6, 7, p=0.3))
    assert t.dtype == "bool"
    np.testing.assert_array_equal(t.numpy(), draws(1, lambda: np.random.rand(6, 7) <= 0.3))


def test_requires_grad_and_dtype_are_honoured():
    t = init.rand(2, dtype="float64", requires_grad=True)
    assert t.dtype == "float64" and t.requires_grad


@pytest.mark.parametrize("make, bound_or_std, uniform", [
    (lambda: init.xavier_uniform(30, 20, gain=2.0), 2.0 * math.sqrt(6 / 50), True),
    (lambda: init.xavier_normal(30, 20, gain=0.5), 0.5 * math.sqrt(2 / 50), False),
    (lambda: init.kaiming_uniform(30, 20), math.sqrt(2) * math.sqrt(3 / 30), True),
    (lambda: init.kaiming_normal(30, 20), math.sqrt(2) / math.sqrt(30), False),
])
def test_weight_initialisers_use_needles_formulas(make, bound_or_std, uniform):
    got = draws(7, make).numpy()
    if uniform:
        expected = draws(7, lambda: np.random.rand(30, 20) * (2 * bound_or_std) - bound_or_std)
    else:
        expected = draws(7, lambda: np.random.randn(30, 20) * bound_or_std)
    assert got.shape == (30, 20) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6, atol=1e-7)


def test_shape_overrides_fan_in_fan_out():
    got = draws(2, lambda: init.kaiming_uniform(27, 48, shape=(3, 3, 3, 16))).numpy()
    bound = math.sqrt(2) * math.sqrt(3 / 27)
    expected = draws(2, lambda: np.random.rand(3, 3, 3, 16) * (2 * bound) - bound)
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6, atol=1e-7)
    assert init.xavier_normal(4, 5, shape=(2, 10)).shape == (2, 10)


def test_kaiming_refuses_other_nonlinearities():
    with pytest.raises(ValueError, match="relu"):
        init.kaiming_uniform(3, 4, nonlinearity="tanh")


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64"])
def test_one_hot_picks_identity_rows(dtype):
    labels = np.array([2, 0, 4, 4], dtype=dtype)
    state = np.random.get_state()[1].copy()
    got = init.one_hot(5, ndl.Tensor(labels, requires_grad=False))
    assert got.dtype == "float32"
    np.testing.assert_array_equal(got.numpy(), np.eye(5, dtype=np.float32)[labels])
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # draws nothing


def test_one_hot_traces_with_symbolic_labels():
    graph = ndl.trace(lambda y: init.one_hot(3, y), np.array([1, 2], dtype=np.int64))
    from ndlc.ir.interpreter import interpret
    (out,) = interpret(graph, np.array([2, 0], dtype=np.int64))
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[[2, 0]])


def test_one_hot_compares_in_int32_and_refuses_a_label_int32_would_wrap():
    """Labels compare with the classes as int32 (half the vector lanes of int64); a label that
    truncation would wrap onto a class (2**32 + 1 -> 1) is outside [0, n), refused eagerly and by
    the compiled step, as an input or computed in the step."""
    labels = np.array([2, 0], dtype=np.int64)
    graph = ndl.trace(lambda y: init.one_hot(3, y), labels)
    assert "i32[1,3]" in str(graph) and "i64[1,3]" not in str(graph)
    wrapping = np.array([2 ** 32 + 1, 2], dtype=np.int64)
    with pytest.raises(ValueError, match="outside"):
        init.one_hot(3, ndl.Tensor(wrapping, requires_grad=False))
    as_input = ndl.compile(lambda y: init.one_hot(3, y))
    np.testing.assert_array_equal(as_input(labels).numpy(), np.eye(3, dtype=np.float32)[labels])
    with pytest.raises(ValueError, match="holds 4294967297, outside"):
        as_input(wrapping)
    computed = ndl.compile(lambda y: init.one_hot(3, y + 2 ** 32))
    with pytest.raises(ValueError, match="2 of the indices it computed .* are outside"):
        computed(labels)


def test_like_initialisers_copy_shape_and_dtype():
    a = ndl.Tensor(np.ones((2, 3)), dtype="float64")
    for t, value in [(init.zeros_like(a), 0.0), (init.ones_like(a), 1.0)]:
        assert t.shape == (2, 3) and t.dtype == "float64" and not t.requires_grad
        np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value))


def test_linear_draws_weight_then_bias():
    layer = draws(5, lambda: nn.Linear(6, 4))
    np.random.seed(5)
    w_bound, b_bound = math.sqrt(2) * math.sqrt(3 / 6), math.sqrt(2) * math.sqrt(3 / 4)
    weight = np.random.rand(6, 4) * (2 * w_bound) - w_bound
    bias = (np.random.rand(4, 1) * (2 * b_bound) - b_bound).reshape(1, 4)
    np.testing.assert_allclose(layer.weight.numpy(), weight.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), bias.astype(np.float32), rtol=1e-6)
    assert layer.weight.dtype == layer.bias.dtype == "float32"
