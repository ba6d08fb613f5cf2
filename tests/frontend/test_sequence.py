"""nn.RNNCell, RNN, LSTMCell, LSTM and Embedding: needle's shapes, initialisation (draws in needle's
order), and outputs and gradients equal to PyTorch's with the weights copied (PyTorch stores the
transposes of needle's (in, out) weights)."""
import math

import numpy as np
import pytest

import ndlc as ndl
import ndlc.nn as nn
from gradcheck import check_gradients
from oracle import assert_close, tensor


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="PyTorch is the oracle of these tests")


def cells(module):
    return module.rnn_cells if isinstance(module, nn.RNN) else module.lstm_cells


def torch_copy(torch, module):
    """The PyTorch module with `module`'s weights: weight_ih_l{k} = W_ih.T, biases as they are."""
    kind = "LSTM" if isinstance(module, nn.LSTM) else "RNN"
    options = {} if kind == "LSTM" else {"nonlinearity": module.rnn_cells[0].nonlinearity}
    ref = getattr(torch.nn, kind)(module.input_size, module.hidden_size, module.num_layers,
                                  bias=cells(module)[0].bias, **options)
    with torch.no_grad():
        for layer, cell in enumerate(cells(module)):
            for name, ours in [("weight_ih", cell.W_ih.numpy().T), ("weight_hh", cell.W_hh.numpy().T),
                               ("bias_ih", cell.bias_ih), ("bias_hh", cell.bias_hh)]:
                if ours is not None:
                    getattr(ref, f"{name}_l{layer}").copy_(torch.tensor(np.asarray(ours)))
    return ref


# ---- PyTorch as the oracle --------------------------------------------------------------
@pytest.mark.parametrize("kind, options", [("RNN", {"nonlinearity": "tanh"}), ("RNN", {"nonlinearity": "relu"}),
                                           ("LSTM", {}), ("LSTM", {"bias": False})])
@pytest.mark.parametrize("initial", [False, True])
def test_recurrent_outputs_and_gradients_equal_torch(torch, kind, options, initial):
    seq_len, batch, inputs, hidden, layers = 5, 3, 4, 6, 2
    module = getattr(nn, kind)(inputs, hidden, num_layers=layers, **options)
    ref = torch_copy(torch, module)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((seq_len, batch, inputs)).astype(np.float32)
    states = [rng.standard_normal((layers, batch, hidden)).astype(np.float32)
              for _ in range(2 if kind == "LSTM" else 1)] if initial else []
    weights = [rng.standard_normal(s).astype(np.float32)
               for s in [(seq_len, batch, hidden)] + [(layers, batch, hidden)] * (2 if kind == "LSTM" else 1)]

    ours_in = [tensor(a) for a in [x] + states]
    theirs_in = [torch.tensor(a, requires_grad=True) for a in [x] + states]
    h = None if not initial else (tuple(ours_in[1:]) if kind == "LSTM" else ours_in[1])
    out, final = module(ours_in[0], h)
    ref_h = None if not initial else (tuple(theirs_in[1:]) if kind == "LSTM" else theirs_in[1])
    ref_out, ref_final = ref(theirs_in[0], ref_h)
    finals = final if kind == "LSTM" else (final,)
    ref_finals = ref_final if kind == "LSTM" else (ref_final,)

    sum(((t * tensor(w, False)).sum() for t, w in zip((out,) + tuple(finals), weights)), tensor(0.0)).backward()
    sum((t * torch.tensor(w)).sum() for t, w in zip((ref_out,) + tuple(ref_finals), weights)).backward()
    assert_close(out.numpy(), ref_out.detach().numpy(), "output")
    for ours, theirs in zip(finals, ref_finals):
        assert_close(ours.numpy(), theirs.detach().numpy(), "final state")
    for ours, theirs in zip(ours_in, theirs_in):
        assert_close(ours.grad.numpy(), theirs.grad.numpy(), "input gradient")
    for layer, cell in enumerate(cells(module)):
        assert_close(cell.W_ih.grad.numpy(), getattr(ref, f"weight_ih_l{layer}").grad.numpy().T, "dW_ih")
        assert_close(cell.W_hh.grad.numpy(), getattr(ref, f"weight_hh_l{layer}").grad.numpy().T, "dW_hh")
        if cell.bias:
            assert_close(cell.bias_ih.grad.numpy(), getattr(ref, f"bias_ih_l{layer}").grad.numpy(), "dbias_ih")


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell"])
def test_cells_equal_torch(torch, kind):
    cell = getattr(nn, kind)(4, 5)
    ref = getattr(torch.nn, kind)(4, 5)
    with torch.no_grad():
        ref.weight_ih.copy_(torch.tensor(cell.W_ih.numpy().T))
        ref.weight_hh.copy_(torch.tensor(cell.W_hh.numpy().T))
        ref.bias_ih.copy_(torch.tensor(cell.bias_ih.numpy()))
        ref.bias_hh.copy_(torch.tensor(cell.bias_hh.numpy()))
    x = np.random.randn(3, 4).astype(np.float32)
    for state in [None, [np.random.randn(3, 5).astype(np.float32) for _ in range(2 if kind == "LSTMCell" else 1)]]:
        ours_state = None if state is None else tuple(tensor(s) for s in state)
        theirs_state = None if state is None else tuple(torch.tensor(s) for s in state)
        if kind == "RNNCell" and state is not None:
            ours_state, theirs_state = ours_state[0], theirs_state[0]
        ours, theirs = cell(tensor(x), ours_state), ref(torch.tensor(x), theirs_state)
        for a, b in zip(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)):
            assert_close(a.numpy(), b.detach().numpy(), kind)


def test_embedding_equals_torch(torch):
    emb = nn.Embedding(7, 3)
    ref = torch.nn.Embedding(7, 3)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(emb.weight.numpy()))
    x = np.array([[1, 6, 1], [0, 2, 1]])
    g = np.random.randn(2, 3, 3).astype(np.float32)
    out = emb(ndl.Tensor(x))
    (out * tensor(g, False)).sum().backward()
    ref_out = ref(torch.tensor(x))
    (ref_out * torch.tensor(g)).sum().backward()
    assert out.shape == (2, 3, 3)
    assert_close(out.numpy(), ref_out.detach().numpy(), "embedding", rtol=0)
    assert_close(emb.weight.grad.numpy(), ref.weight.grad.numpy(), "embedding gradient (repeated index 1)")


# ---- needle's initialisation ------------------------------------------------------------
def uniform(bound, *shape):
    return (np.random.rand(*shape) * (2 * bound) - bound).astype(np.float32)


@pytest.mark.parametrize("kind, gates", [("RNN", 1), ("LSTM", 4)])
def test_recurrent_weights_are_needles_draws_in_needles_order(kind, gates):
    np.random.seed(3)
    module = getattr(nn, kind)(3, 5, num_layers=2)
    np.random.seed(3)
    bound = math.sqrt(1 / 5)
    for layer, cell in enumerate(cells(module)):
        size = 3 if layer == 0 else 5
        expected = [uniform(bound, size, gates * 5), uniform(bound, 5, gates * 5),
                    uniform(bound, gates * 5), uniform(bound, gates * 5)]
        for got, want in zip([cell.W_ih, cell.W_hh, cell.bias_ih, cell.bias_hh], expected):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7)
    values = np.concatenate([p.numpy().ravel() for p in module.parameters()])
    assert np.abs(values).max() <= bound and values.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_embedding_weight_is_a_standard_normal_draw():
    np.random.seed(5)
    emb = nn.Embedding(40, 30)
    np.random.seed(5)
    np.testing.assert_allclose(emb.weight.numpy(), np.random.randn(40, 30).astype(np.float32))
    assert emb.weight.numpy().std() == pytest.approx(1.0, rel=0.05)


# ---- shapes, defaults and errors --------------------------------------------------------
def test_shapes_and_zero_initial_state():
    lstm = nn.LSTM(3, 4, num_layers=2)
    x = tensor(np.random.randn(6, 2, 3))
    out, (h, c) = lstm(x)
    assert out.shape == (6, 2, 4) and h.shape == c.shape == (2, 2, 4)
    zeros = tensor(np.zeros((2, 2, 4)))
    out0, _ = lstm(x, (zeros, zeros))
    np.testing.assert_array_equal(out.numpy(), out0.numpy())
    np.testing.assert_array_equal(h.numpy()[1], out.numpy()[-1])  # the last layer's final h is the last output
    rnn = nn.RNN(3, 4, num_layers=3, nonlinearity="relu")
    out, h = rnn(x)
    assert out.shape == (6, 2, 4) and h.shape == (3, 2, 4) and out.numpy().min() >= 0
    assert len(rnn.rnn_cells) == 3 and rnn.rnn_cells[1].W_ih.shape == (4, 4)


def test_lstm_cell_gradient_matches_finite_differences():
    np.random.seed(2)
    cell = nn.LSTMCell(2, 3, dtype="float64")

    def step(x, h, c):
        h1, c1 = cell(x, (h, c))
        return h1 * 2 + c1
    check_gradients(step, np.random.randn(2, 2), np.random.randn(2, 3), np.random.randn(2, 3))


def zeros(*shape):
    return tensor(np.zeros(shape))


@pytest.mark.parametrize("call, message", [
    (lambda: nn.LSTM(3, 4)(zeros(5, 2, 2)),
     r"LSTM\(3, 4, num_layers=1\): the input must have shape \(any, any, 3\), got \(5, 2, 2\)"),
    (lambda: nn.RNN(3, 4, 2)(zeros(5, 2, 3), zeros(1, 2, 4)), r"h0 must have shape \(2, 2, 4\), got \(1, 2, 4\)"),
    (lambda: nn.LSTMCell(3, 4)(zeros(2, 3), (zeros(2, 4), zeros(3, 4))), r"LSTMCell\(3, 4\): c0 must have shape \(2, 4\)"),
    (lambda: nn.RNNCell(3, 4, nonlinearity="sigmoid"), r"nonlinearity must be one of \['relu', 'tanh'\], got 'sigmoid'"),
    (lambda: nn.Embedding(5, 2)(ndl.Tensor(np.array([[1, 5]]))), r"gather: index 5 is out of range for a table of 5 rows"),
    (lambda: nn.Embedding(5, 2)(ndl.Tensor(np.array([-1]))), r"index -1 is out of range"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises((ValueError, IndexError), match=message):
        call()


def test_embedding_takes_float_indices_as_needles_get_batch_gives():
    emb = nn.Embedding(4, 2)
    np.testing.assert_array_equal(emb(ndl.Tensor(np.array([[3.0, 1.0]]))).numpy(), emb.weight.numpy()[[[3, 1]]])


def test_compiled_embedding_equals_eager_and_refuses_an_index_outside_the_table():
    emb = nn.Embedding(4, 3)
    lookup = ndl.compile(emb)
    x = np.array([[0, 3], [2, 2]])
    np.testing.assert_array_equal(lookup(x).numpy(), emb(ndl.Tensor(x)).numpy())
    with pytest.raises(IndexError, match=r"holds 4, outside \[0, 4\) for its gather from 4 rows"):
        lookup(np.array([[1, 4]]))
