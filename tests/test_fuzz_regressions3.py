"""What round three of the fuzzers (test_call_fuzz, test_storage_fuzz, test_optimizer_fuzz, and
the three bugs round two left open) found, each kept as the smallest example that failed."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc import backend_ndarray as nd

nn = ndl.nn


def embedding_step():
    """(embedding, optimizer, step): a step that shifts its indices and labels by a tensor."""
    np.random.seed(0)
    emb, linear = nn.Embedding(5, 3), nn.Linear(3, 4)
    opt = ndl.optim.Adam(emb.parameters() + linear.parameters(), lr=0.1)

    def step(x, y, shift):
        opt.reset_grad()
        loss = nn.SoftmaxLoss()(linear(emb(x + shift).sum((1,))), y + shift)
        loss.backward()
        opt.step()
        return loss
    return emb, opt, step


def test_a_computed_gather_index_outside_the_table_raises_as_eager_and_keeps_the_state():
    """An index computed inside a compiled step (x + shift) selected a zero row where eager raised
    IndexError, and the step trained on it; only indices that were inputs were checked. Now the
    program counts them, keeps its state unless the count is 0, and the call raises."""
    emb, opt, step = embedding_step()
    compiled = ndl.compile(step)
    x, y = np.array([[0, 1], [2, 3]]), np.array([0, 1])
    for _ in range(4):  # the third call on builds the entry: both paths check
        compiled(x, y, np.array(0))
    weight, t = emb.weight.numpy().copy(), float(opt.t.numpy())
    for shift in (4, -1):
        with pytest.raises(IndexError, match=r"step: [1-4] of the indices it computed for its gather from 5 "
                                             r"rows \(at .*test_fuzz_regressions3.py:\d+\) are outside \[0, 5\)"):
            compiled(x, y, np.array(shift))
        with pytest.raises(IndexError, match=r"gather: index"):
            step(ndl.Tensor(x), ndl.Tensor(y), ndl.Tensor(np.array(shift)))
        emb.weight.data = ndl.Tensor(weight.copy())  # the eager step raised before changing it too
    np.testing.assert_array_equal(emb.weight.numpy(), weight)
    assert float(opt.t.numpy()) == t
    compiled(x, y, np.array(1))
    assert float(opt.t.numpy()) == t + 1


@pytest.mark.parametrize("values", [[1.0, 2.0], [np.nan, 0.0], [np.inf, 2.0], [-2.0, 0.0], [2.0, 20.0]])
def test_a_computed_float_index_that_is_not_a_row_raises_as_eager(values):
    """emb(a / 2) with a = 1 (a fraction), NaN, Inf, -2 or 20 selected row 0 or a zero row
    compiled (the cast truncated it), where eager raises."""
    np.random.seed(0)
    emb = nn.Embedding(5, 3)
    compiled = ndl.compile(lambda a: emb(a / 2))
    np.testing.assert_array_equal(compiled(np.array([0.0, 2.0], np.float32)).numpy(), emb.weight.numpy()[[0, 1]])
    with pytest.raises(IndexError, match=r"1 of the indices it computed for its gather from 5 rows"):
        compiled(np.array(values, np.float32))
    with pytest.raises(IndexError, match=r"gather: index"):
        emb(ndl.Tensor(np.array(values, np.float32)) / 2)


def test_computed_labels_past_the_last_class_raise_as_eager():
    """SoftmaxLoss(logits, y + 1) with a label reaching the class count: a zero one-hot row
    compiled, dropping the sample from the loss silently."""
    f = lambda z, y: nn.SoftmaxLoss()(z, y + 1)  # noqa: E731
    z = np.zeros((2, 3), np.float32)
    compiled = ndl.compile(f)
    assert compiled(z, np.array([0, 1])).numpy() == pytest.approx(np.log(3))
    with pytest.raises(ValueError, match=r"1 of the indices it computed for its one_hot over 3 classes"):
        compiled(z, np.array([0, 2]))
    with pytest.raises(ValueError, match=r"one_hot: label 3 is outside \[0, 3\)"):
        f(ndl.Tensor(z), ndl.Tensor(np.array([0, 2])))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("use, error, message", [
    (lambda: nn.Embedding(4, 2), IndexError, r"(index|holds) 0.5(,| is) not an integer"),
    (lambda: (lambda y: nn.SoftmaxLoss()(ndl.Tensor(np.zeros((2, 3), np.float32)), y)), ValueError,
     r"(label|holds) 0.5(,| is) not an integer"),
    (lambda: (lambda y: ndl.init.one_hot(3, y)), ValueError, r"(label|holds) 0.5(,| is) not an integer"),
], ids=["embedding", "softmax-loss", "one-hot"])
def test_fractional_indices_and_labels_are_refused_not_truncated(compiled, use, error, message):
    """Embedding indices and labels of 0.5 were truncated to 0, alike eagerly and compiled;
    PyTorch refuses float indices. Floats holding integers (needle's float batches) still work."""
    f = use()
    call = ndl.compile(f) if compiled else (lambda a: f(ndl.Tensor(a)))
    with pytest.raises(error, match=message):
        call(np.array([0.5, 1.0], np.float32))
    assert np.isfinite(call(np.array([0.0, 1.0], np.float32)).numpy()).all()


def test_ndarray_comparisons_with_nan_follow_needle():
    """NDArray `nan < 1` gives 1: needle builds < <= != from == and >= (1 - (a >= b)), and the
    NDArray backend keeps needle's definitions; Tensor comparisons follow IEEE (all false)."""
    a, b = nd.array(np.array([np.nan, 1.0], np.float32)), nd.array(np.array([1.0, np.nan], np.float32))
    got = {op: (getattr(a, op)(b)).numpy().tolist() for op in ("__lt__", "__le__", "__ne__", "__gt__", "__ge__")}
    assert got == {"__lt__": [1, 1], "__le__": [1, 1], "__ne__": [1, 1], "__gt__": [0, 0], "__ge__": [0, 0]}
    t, u = ndl.Tensor(a.numpy()), ndl.Tensor(b.numpy())
    assert not (t < u).numpy().any() and not (t <= u).numpy().any()
