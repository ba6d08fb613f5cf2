"""needle's sequence modules (hw4): RNNCell, RNN, LSTMCell, LSTM and Embedding.

needle's conventions, which code ported from its homework relies on:
- weights are (in, out) and applied as `x @ W`; PyTorch stores their transposes
  (`W_ih = weight_ih.T`, `W_hh = weight_hh.T`; the biases are the same vectors);
- every recurrent parameter is drawn from U(-sqrt(k), sqrt(k)), k = 1/hidden_size, with numpy's
  global random state, in the order W_ih, W_hh, bias_ih, bias_hh, cell by cell (layer 0 first);
- sequences are (seq_len, batch, features), hidden states (num_layers, batch, hidden_size); a
  missing initial state is zeros;
- an LSTM's 4*hidden_size gate columns are [i | f | g | o] (input, forget, cell, output), as
  PyTorch's.
RNN and LSTM run layer 0 over the whole sequence, then layer 1 over its outputs, ..., each layer's
input product X @ W_ih (and biases) once for all steps, as PyTorch does: needle's values (its loop
goes step by step) with fewer, larger products, which also means fewer kernels when compiled. The
steps are `ops.scan` (a Python loop eagerly, one scan node when traced)."""
import math

import numpy as np

from .. import init, ops
from ..tensor import Tensor
from .module import Module, Parameter, check_flags, check_sizes

NONLINEARITIES = {"tanh": ops.tanh, "relu": ops.relu}


def _uniform(*shape, bound, device, dtype):
    """A Parameter drawn from U(-bound, bound)."""
    return Parameter(init.rand(*shape, low=-bound, high=bound, device=device, dtype=dtype,
                               requires_grad=True))


def _check_shape(module, what, x, expected):
    """Refuse a tensor `what` whose shape is not `expected` (None: any size on that axis), or a
    `what` that is no tensor (a tuple given for RNN's h0, a lone tensor for LSTM's (h0, c0))."""
    want = "(" + ", ".join("any" if e is None else str(e) for e in expected) + ")"
    if not isinstance(getattr(x, "shape", None), tuple):
        raise ValueError(f"{module!r}: {what} must be a tensor of shape {want}, got {_describe(x)}")
    if len(x.shape) != len(expected) or any(e is not None and d != e for d, e in zip(x.shape, expected)):
        raise ValueError(f"{module!r}: {what} must have shape {want}, got {x.shape}")


def _describe(value):
    """A value named in an error: its type, and the shapes of a tuple's or list's items."""
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(_describe(v) for v in value)})"
    return f"a tensor of shape {value.shape}" if hasattr(value, "shape") else type(value).__name__


def _state_pair(module, h):
    """LSTM's state (h0, c0): a tuple or list of two tensors (None: both zeros), else a
    ValueError naming the module (unpacking it failed with Python's own TypeError)."""
    if h is None:
        return None, None
    if not isinstance(h, (tuple, list)) or len(h) != 2 or any(part is None for part in h):
        raise ValueError(f"{module!r}: the state must be a pair (h0, c0) of tensors, or None, got {_describe(h)}")
    return tuple(h)


class _RecurrentCell(Module):
    """A cell whose `gates` blocks of hidden_size columns are X @ W_ih + h @ W_hh + biases.

    The input's part (`_project`) does not depend on the state, so a multi-layer module computes it
    for a whole sequence in one product; `_step` adds the state's part and applies the cell.
    `_state_names`: the parts of the state, as forward's errors name them."""
    gates = 1
    _state_names = ("h",)

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype="float32"):
        super().__init__()
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        check_flags(type(self).__name__, bias=bias)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        width, bound = self.gates * hidden_size, math.sqrt(1 / hidden_size)
        self.W_ih = _uniform(input_size, width, bound=bound, device=device, dtype=dtype)
        self.W_hh = _uniform(hidden_size, width, bound=bound, device=device, dtype=dtype)
        self.bias_ih = _uniform(width, bound=bound, device=device, dtype=dtype) if bias else None
        self.bias_hh = _uniform(width, bound=bound, device=device, dtype=dtype) if bias else None

    def forward(self, X, h=None):
        """X (batch, input_size) and the state (None: zeros) -> the new state."""
        _check_shape(self, "the input", X, (None, self.input_size))
        state = self._initial(X.shape[0]) if h is None else self._given(h)
        for name, part in zip(self._state_names, state if len(self._state_names) > 1 else (state,)):
            _check_shape(self, name, part, (X.shape[0], self.hidden_size))
        return self._step(self._project(X), state)

    def _given(self, h):
        """The state as given to forward (LSTMCell checks it is a pair first)."""
        return h

    def _zeros(self, batch):
        return init.zeros(batch, self.hidden_size, dtype=self.W_ih.dtype, device=self.W_ih.device)

    def _project(self, X):
        """X @ W_ih (+ bias_ih + bias_hh) for X (rows, input_size): (rows, gates * hidden_size)."""
        out = X @ self.W_ih
        if self.bias:
            row = (1, self.gates * self.hidden_size)
            out = out + (self.bias_ih.reshape(row) + self.bias_hh.reshape(row)).broadcast_to(out.shape)
        return out

    def __repr__(self):
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size})"


class RNNCell(_RecurrentCell):
    """h' = nonlinearity(X @ W_ih + bias_ih + h @ W_hh + bias_hh), nonlinearity 'tanh' or 'relu'.

    forward(X (batch, input_size), h (batch, hidden_size) or None: zeros) -> h'."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype="float32"):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNNCell: nonlinearity must be one of {sorted(NONLINEARITIES)}, "
                             f"got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def _initial(self, batch):
        return self._zeros(batch)

    def _step(self, projected, h):
        return NONLINEARITIES[self.nonlinearity](projected + h @ self.W_hh)


class LSTMCell(_RecurrentCell):
    """One LSTM step; gates [i | f | g | o]: c' = f*c + i*g, h' = o*tanh(c').

    forward(X (batch, input_size), h = (h0, c0) each (batch, hidden_size) or None: zeros)
    -> (h', c')."""
    gates = 4
    _state_names = ("h0", "c0")

    def _initial(self, batch):
        return self._zeros(batch), self._zeros(batch)

    def _given(self, h):
        return _state_pair(self, h)

    def _step(self, projected, state):
        h, c = state
        gates = (projected + h @ self.W_hh).reshape((h.shape[0], 4, self.hidden_size))
        i, f, g, o = ops.split(gates, axis=1)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        return ops.sigmoid(o) * ops.tanh(c), c


def _run_layers(cells, X, states):
    """Run each cell (a layer) over the whole sequence X (seq_len, batch, features) in turn, from
    its initial state (None: zeros): the last layer's outputs stacked (seq_len, batch, hidden) and
    each layer's final state. A state is h, or (h, c) whose h is the layer's output. Each layer is
    one `ops.scan`: traced once into a loop, whatever seq_len."""
    seq_len, batch = X.shape[:2]
    finals = []
    for cell, state in zip(cells, states):
        projected = cell._project(X.reshape((seq_len * batch, X.shape[2])))
        state = cell._initial(batch) if state is None else state
        state = _promoted(state, projected.dtype)

        def step(state, part, cell=cell):
            state = cell._step(part, state)
            return state, state[0] if isinstance(state, tuple) else state
        state, X = ops.scan(step, state, projected.reshape((seq_len, batch, projected.shape[1])))
        finals.append(state)
    return X, finals


def _promoted(state, dtype):
    """A layer's initial state (h, or (h, c)) in the dtype its steps compute in: that of the input's
    product with the weights (float64 for a float64 sequence through float32 weights, as Linear)."""
    if isinstance(state, tuple):
        return tuple(_promoted(part, dtype) for part in state)
    return state if state.dtype == dtype else ops.cast(state, dtype)


class _Recurrent(Module):
    """A stack of num_layers cells over (seq_len, batch, input_size) sequences."""

    def _check(self, X, states):
        """Refuse a sequence that is not (seq_len, batch, input_size), or a state that is not
        (num_layers, batch, hidden_size)."""
        _check_shape(self, "the input", X, (None, None, self.input_size))
        if X.shape[0] == 0:
            raise ValueError(f"{self!r}: the input sequence is empty (shape {X.shape}): it needs at least one step")
        for name, state in states.items():
            if state is not None:
                _check_shape(self, name, state, (self.num_layers, X.shape[1], self.hidden_size))

    def __repr__(self):
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers})"


def _layer_sizes(input_size, hidden_size, num_layers):
    """Each layer's input size: input_size for layer 0, hidden_size for the others."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    return [input_size] + [hidden_size] * (num_layers - 1)


class RNN(_Recurrent):
    """A multi-layer Elman RNN: `rnn_cells[l]` (RNNCell) feeds the next layer."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, nonlinearity="tanh",
                 device=None, dtype="float32"):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.rnn_cells = [RNNCell(size, hidden_size, bias, nonlinearity, device, dtype)
                          for size in _layer_sizes(input_size, hidden_size, num_layers)]

    def forward(self, X, h0=None):
        """X (seq_len, batch, input_size), h0 (num_layers, batch, hidden_size) or None (zeros)
        -> (output (seq_len, batch, hidden_size): the last layer's h at each step, h_n)."""
        self._check(X, {"h0": h0})
        states = [None] * self.num_layers if h0 is None else ops.split(h0, axis=0)
        output, finals = _run_layers(self.rnn_cells, X, states)
        return output, ops.stack(finals, axis=0)


class LSTM(_Recurrent):
    """A multi-layer LSTM: `lstm_cells[l]` (LSTMCell) feeds the next layer."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, device=None, dtype="float32"):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.lstm_cells = [LSTMCell(size, hidden_size, bias, device, dtype)
                           for size in _layer_sizes(input_size, hidden_size, num_layers)]

    def forward(self, X, h=None):
        """X (seq_len, batch, input_size), h = (h0, c0) each (num_layers, batch, hidden_size) or
        None (zeros) -> (output (seq_len, batch, hidden_size), (h_n, c_n))."""
        h0, c0 = _state_pair(self, h)
        self._check(X, {"h0": h0, "c0": c0})
        states = [None] * self.num_layers if h is None else list(zip(ops.split(h0, axis=0),
                                                                      ops.split(c0, axis=0)))
        output, finals = _run_layers(self.lstm_cells, X, states)
        return output, tuple(ops.stack(part, axis=0) for part in zip(*finals))


class Embedding(Module):
    """A lookup table: `weight` (num_embeddings, embedding_dim) from N(0, 1), as needle's.

    forward(x) takes integer indices of any shape (needle's (seq_len, batch); float tensors
    holding integers are cast) and returns x.shape + (embedding_dim,). An index outside
    [0, num_embeddings) or a fraction is an IndexError, eager and compiled alike (a compiled step
    counts those it computes itself and raises after the call, its state left as it was)."""

    def __init__(self, num_embeddings, embedding_dim, device=None, dtype="float32"):
        super().__init__()
        check_sizes("Embedding", num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(init.randn(num_embeddings, embedding_dim, device=device, dtype=dtype,
                                           requires_grad=True))

    def forward(self, x):
        x = x if isinstance(x, Tensor) else Tensor(np.asarray(x), requires_grad=False)
        return ops.gather(self.weight, x)

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"
