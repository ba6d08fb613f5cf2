"""Compiled sequence models: a language model's training step (Embedding -> 2-layer LSTM -> Linear,
truncated BPTT unrolled in the trace, the hidden state carried between calls as inputs and
outputs) and a Transformer's equal eager training step for step."""
import numpy as np
import pytest

import ndlc as ndl
import ndlc.nn as nn


class LanguageModel(nn.Module):
    """needle's hw4 language model: embedding, a sequence model, a linear layer over the vocabulary."""

    def __init__(self, vocab, embedding, hidden, layers, kind):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding)
        if kind == "lstm":
            self.model = nn.LSTM(embedding, hidden, num_layers=layers)
        else:
            self.model = nn.Transformer(embedding, hidden, layers, num_head=2, dim_head=4, sequence_len=32)
        self.linear = nn.Linear(embedding if kind == "transformer" else hidden, vocab)

    def forward(self, x, h=None):
        out, h = self.model(self.embedding(x), h)
        seq_len, batch, width = out.shape
        return self.linear(out.reshape((seq_len * batch, width))), h


def lstm_setup(vocab, seq_len, batch, hidden, layers=2, seed=0):
    """A seeded LSTM language model, its SGD step (returning the loss and the detached final state),
    and batches of (seq_len, batch) ids with their targets."""
    np.random.seed(seed)
    model = LanguageModel(vocab, 6, hidden, layers, "lstm")
    opt = ndl.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    loss_fn = nn.SoftmaxLoss()

    def train_step(x, y, h0, c0):
        opt.reset_grad()
        logits, (h, c) = model(x, (h0, c0))
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        return loss, h.detach(), c.detach()
    return model, train_step


def text_batches(vocab, seq_len, batch, steps, seed=1):
    """(data, target) pairs cut by needle's get_batch from a repetitive id stream (learnable)."""
    rng = np.random.default_rng(seed)
    stream = list(np.tile(rng.integers(0, vocab, 7), 400) + rng.integers(0, 2, 2800))
    batches = ndl.data.batchify([int(v) % vocab for v in stream], batch, None, None)
    return [ndl.data.get_batch(batches, i * seq_len, seq_len) for i in range(steps)]


def run_lstm(step, data, layers, batch, hidden, compiled):
    """Losses of `step` over `data`, the final state of each call feeding the next."""
    h = c = np.zeros((layers, batch, hidden), np.float32)
    losses = []
    for x, y in data:
        if compiled:
            loss, h, c = step(x.numpy(), y.numpy(), h, c)
        else:
            loss, h, c = step(x, y, ndl.Tensor(h), ndl.Tensor(c))
            h, c = h.numpy(), c.numpy()
        losses.append(float(loss.numpy()))
    return losses, h


def assert_lstm_compiled_equals_eager(vocab, seq_len, batch, hidden, steps):
    data = text_batches(vocab, seq_len, batch, steps)
    eager_model, eager_step = lstm_setup(vocab, seq_len, batch, hidden)
    eager_losses, eager_h = run_lstm(eager_step, data, 2, batch, hidden, compiled=False)
    model, train_step = lstm_setup(vocab, seq_len, batch, hidden)
    step = ndl.compile(train_step)
    losses, h = run_lstm(step, data, 2, batch, hidden, compiled=True)
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-4)
    np.testing.assert_allclose(h, eager_h, rtol=1e-4, atol=1e-5)
    for name, value in eager_model.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    assert len(step.specialisations) == 1


def test_compiled_lstm_language_model_step_equals_eager():
    assert_lstm_compiled_equals_eager(vocab=11, seq_len=4, batch=3, hidden=5, steps=4)


@pytest.mark.slow
def test_compiled_lstm_with_twenty_step_bptt_equals_eager_for_twenty_steps():
    assert_lstm_compiled_equals_eager(vocab=30, seq_len=20, batch=4, hidden=16, steps=20)


def test_compiled_transformer_language_model_step_equals_eager():
    vocab, seq_len, batch = 13, 6, 2
    data = text_batches(vocab, seq_len, batch, 4)
    results = []
    for compiled in (False, True):
        np.random.seed(3)
        model = LanguageModel(vocab, 8, 16, 2, "transformer")
        opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)  # Adam would amplify the
        # rounding noise of gradients that are exactly zero (prenorm_k's bias: softmax ignores it)
        loss_fn = nn.SoftmaxLoss()

        def train_step(x, y):
            opt.reset_grad()
            loss = loss_fn(model(x)[0], y)
            loss.backward()
            opt.step()
            return loss
        step = ndl.compile(train_step) if compiled else train_step
        losses = [float(step(*((x.numpy(), y.numpy()) if compiled else (x, y))).numpy()) for x, y in data]
        results.append((losses, model.state_dict()))
    (eager_losses, eager_state), (losses, state) = results
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-4)
    for name, value in eager_state.items():
        np.testing.assert_allclose(state[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    assert losses[-1] < losses[0]
