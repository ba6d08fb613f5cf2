"""LSTMs traced as scans: the compiled language-model step gives the unrolled trace's results bit
for bit (without hoisting; within rounding with it), and the traced graph (what trace and autodiff build) does not grow with the sequence."""
import functools

import numpy as np

import ndlc as ndl
from ndlc.frontend import ops
from ndlc.frontend.scan import scan
from ndlc.jit.capture import capture
from unrolled import without_hoisting

VOCAB, HIDDEN, BATCH = 20, 8, 2


def language_model_step(seq_len, kind="lstm"):
    """A seeded 2-layer LSTM (or tanh RNN) language model's SGD step and a batch."""
    np.random.seed(0)
    embedding = ndl.nn.Embedding(VOCAB, HIDDEN)
    model = (ndl.nn.LSTM if kind == "lstm" else ndl.nn.RNN)(HIDDEN, HIDDEN, num_layers=2)
    linear = ndl.nn.Linear(HIDDEN, VOCAB)
    params = embedding.parameters() + model.parameters() + linear.parameters()
    optimizer, loss_fn = ndl.optim.SGD(params, lr=0.5), ndl.nn.SoftmaxLoss()

    def step(x, y):
        optimizer.reset_grad()
        out, _ = model(embedding(x))
        loss = loss_fn(linear(out.reshape((seq_len * BATCH, HIDDEN))), y)
        loss.backward()
        optimizer.step()
        return loss
    rng = np.random.default_rng(1)
    batch = (rng.integers(0, VOCAB, (seq_len, BATCH)).astype(np.float32),
             rng.integers(0, VOCAB, seq_len * BATCH))
    return step, batch, params


def train(kind, unroll, monkeypatch, seq_len=6, steps=3):
    """Losses and final parameters of `steps` compiled steps, the layers traced as scans or unrolled."""
    monkeypatch.setattr(ops, "scan", functools.partial(scan, unroll=True) if unroll else scan)
    step, batch, params = language_model_step(seq_len, kind)
    compiled = ndl.compile(step)
    losses = [compiled(*batch).numpy() for _ in range(steps)]
    return losses, [p.numpy().copy() for p in params]


def test_a_compiled_lstm_step_equals_the_unrolled_trace_bit_for_bit(monkeypatch):
    without_hoisting(monkeypatch)
    unrolled, scanned = train("lstm", True, monkeypatch), train("lstm", False, monkeypatch)
    for a, b in zip(unrolled[0] + unrolled[1], scanned[0] + scanned[1]):
        np.testing.assert_array_equal(a, b)


def test_a_compiled_rnn_step_equals_the_unrolled_trace_bit_for_bit(monkeypatch):
    without_hoisting(monkeypatch)
    unrolled, scanned = train("rnn", True, monkeypatch), train("rnn", False, monkeypatch)
    for a, b in zip(unrolled[0] + unrolled[1], scanned[0] + scanned[1]):
        np.testing.assert_array_equal(a, b)


def test_hoisted_lstm_and_rnn_steps_equal_the_unrolled_trace_within_rounding(monkeypatch):
    for kind in ("lstm", "rnn"):
        unrolled, hoisted = train(kind, True, monkeypatch), train(kind, False, monkeypatch)
        for a, b in zip(unrolled[0] + unrolled[1], hoisted[0] + hoisted[1]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def traced_sizes(seq_len):
    """Nodes of the LSTM step's traced graph (forward, gradients, update) and of its scans' bodies."""
    step, batch, _ = language_model_step(seq_len)
    graph = capture(step, batch).graph
    return len(graph.nodes), [len(n.attrs["body"].nodes) for n in graph.nodes if n.op == "scan"]


def test_the_traced_lstm_step_does_not_grow_with_the_sequence():
    nodes, bodies = traced_sizes(3)
    assert (nodes, bodies) == traced_sizes(12)
    assert len(bodies) == 2 * 3  # per layer: the forward, the forward saving for the gradient, the reverse
