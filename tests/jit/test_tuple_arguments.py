"""Tuple and list arguments and results of compiled calls: kept as eager needle keeps them (an
LSTM's `(h0, c0)`), their leaves the program's inputs, their structure part of the key."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import ndlc as ndl
from ndlc.jit.arguments import rebuilt, structure_of

nn = ndl.nn
TOLERANCE = dict(rtol=2e-4, atol=1e-5)  # the LSTM's eager and compiled sums (test_op_input_fuzz)


def _normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _leaves(value):
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value.numpy() if isinstance(value, ndl.Tensor) else value]


def _same_structure(a, b):
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), (a, b)
        for x, y in zip(a, b):
            _same_structure(x, y)
    else:
        assert isinstance(b, ndl.Tensor), b


def test_an_lstm_given_its_state_pair_returns_output_and_pair_as_eager():
    rng = np.random.default_rng(0)
    lstm = nn.LSTM(3, 4, num_layers=2)
    x, h, c = _normal(rng, 5, 2, 3), _normal(rng, 2, 2, 4), _normal(rng, 2, 2, 4)
    eager = lstm(ndl.Tensor(x), (ndl.Tensor(h), ndl.Tensor(c)))
    compiled = ndl.compile(lstm)
    for state in ((h, c), (ndl.Tensor(h), ndl.Tensor(c)), (ndl.Tensor(h), c)):
        result = compiled(x, state)
        _same_structure(result, eager)
        for got, want in zip(_leaves(result), _leaves(eager)):
            np.testing.assert_allclose(got, want, **TOLERANCE)
    assert compiled.compilations == 1 and compiled.entry is None  # the fast entry takes no tuple
    result = compiled(x, [h, c])  # a list is another structure: eager receives a list
    assert compiled.compilations == 2
    np.testing.assert_allclose(result[1][1].numpy(), eager[1][1].numpy(), **TOLERANCE)
    compiled(x)  # no state: zeros, the flat form
    assert compiled.compilations == 3
    with pytest.raises(ValueError, match="the state must be a pair"):
        compiled(x, (h,))


def test_rnn_and_a_cell_pair_compiled_equal_eager():
    rng = np.random.default_rng(1)
    rnn, cell = nn.RNN(3, 4, num_layers=2), nn.LSTMCell(3, 4)
    x, h = _normal(rng, 6, 2, 3), _normal(rng, 2, 2, 4)
    for got, want in zip(_leaves(ndl.compile(rnn)(x, h)), _leaves(rnn(ndl.Tensor(x), ndl.Tensor(h)))):
        np.testing.assert_allclose(got, want, **TOLERANCE)
    xs, hc = _normal(rng, 2, 3), (_normal(rng, 2, 4), _normal(rng, 2, 4))
    eager = cell(ndl.Tensor(xs), tuple(map(ndl.Tensor, hc)))
    result = ndl.compile(cell)(xs, hc)
    _same_structure(result, eager)
    for got, want in zip(_leaves(result), _leaves(eager)):
        np.testing.assert_allclose(got, want, **TOLERANCE)


class _Tagger(nn.Module):
    """An LSTM and a linear head: its forward takes and returns the state pair."""

    def __init__(self):
        super().__init__()
        self.lstm, self.head = nn.LSTM(3, 4), nn.Linear(4, 2)

    def forward(self, x, state):
        out, state = self.lstm(x, state)
        return self.head(out.reshape((out.shape[0] * out.shape[1], 4))), state


def _training_run(compiled, steps=3):
    np.random.seed(5)
    model = _Tagger()
    opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.SoftmaxLoss()

    def step(x, state, y):
        opt.reset_grad()
        logits, (h, c) = model(x, state)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        return loss, (h, c)

    run = ndl.compile(step) if compiled else step
    rng = np.random.default_rng(2)
    state = (ndl.Tensor(np.zeros((1, 2, 4), np.float32)), ndl.Tensor(np.zeros((1, 2, 4), np.float32)))
    losses = []
    for _ in range(steps):
        x, y = ndl.Tensor(_normal(rng, 5, 2, 3)), ndl.Tensor(rng.integers(0, 2, 10))
        loss, state = run(x, state, y)
        state = tuple(ndl.Tensor(s.numpy()) for s in state)  # truncated backpropagation through time
        losses.append(loss.numpy())
    return losses, [p.numpy() for p in model.parameters()], [s.numpy() for s in state]


def test_a_training_step_carrying_the_lstm_state_pair_equals_eager():
    eager, compiled = _training_run(False), _training_run(True)
    for got, want in zip(compiled, eager):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, **TOLERANCE)


_leaf = st.builds(lambda n: ("leaf", n), st.integers(1, 3))
_nesting = st.recursive(_leaf, lambda inner: st.tuples(st.sampled_from([tuple, list]), st.lists(inner, max_size=3)),
                        max_leaves=5)


def _made(shape, rng, as_tensor):
    if shape[0] == "leaf":
        array = _normal(rng, shape[1])
        return ndl.Tensor(array) if as_tensor else array
    return shape[0](_made(item, rng, as_tensor) for item in shape[1])


def _count(shape):
    return 1 if shape[0] == "leaf" else sum(map(_count, shape[1]))


def _scaled(value, k):
    """Each leaf times 1 + its position (`k` counts them): the result of the same structure."""
    if isinstance(value, (tuple, list)):
        return type(value)(_scaled(item, k) for item in value)
    k[0] += 1
    return value * float(k[0])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_nesting, min_size=1, max_size=3), st.booleans())
def test_nested_tuples_and_lists_round_trip_as_eager(shapes, as_tensor):
    """Any nesting of tuples and lists of tensors or arrays: the function sees the same structure
    and returns it (its top a tuple), each leaf the same bits as eager."""
    assume(all(map(_count, shapes)))  # an argument with no tensor is data: ndl.Tensor(()) eagerly too
    rng = np.random.default_rng(3)
    args = [_made(shape, rng, as_tensor) for shape in shapes]
    fn = lambda *values: _scaled(values, [0])  # noqa: E731
    eager = fn(*[rebuilt(structure_of(a, leaves := []), iter(map(ndl.Tensor, leaves))) for a in args])
    compiled = ndl.compile(fn)
    for _ in range(2):
        result = compiled(*args)
        _same_structure(result, eager)
        for got, want in zip(_leaves(result), _leaves(eager)):
            np.testing.assert_array_equal(got, want)
    assert compiled.compilations == 1


def test_another_length_or_nesting_respecialises_and_a_known_one_keeps_its_ranks():
    compiled = ndl.compile(lambda x, parts: x + sum(parts[1:], parts[0]))  # noqa: E731
    x, row = np.ones((2, 3), np.float32), np.arange(3, dtype=np.float32)
    for parts, count in (((row, row), 1), ((row, row, row), 2), ([row, row], 3), ((row, row), 3)):
        np.testing.assert_array_equal(compiled(x, parts).numpy(), x + sum(parts[1:], parts[0]))
        assert compiled.compilations == count
    wide = np.ones(5, np.float32)
    assert compiled(np.ones((2, 5), np.float32), (wide, wide)).shape == (2, 5)  # a new shape: compiled
    assert compiled.compilations == 4
    with pytest.raises(ndl.ShapeError, match="input 1 has type f32"):
        compiled(x, (np.ones((3, 3), np.float32), row))  # a new rank for a known structure: refused
    assert compiled.ir("traced").count("%parts_") >= 2  # the leaves' input names
