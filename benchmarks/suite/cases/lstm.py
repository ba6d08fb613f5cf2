"""A language model's training-step gradients: Embedding, a 2-layer LSTM and a Linear over the
vocabulary, with numpy's backpropagation through time written by hand."""
import itertools

import numpy as np

import mlp_step
import ndlc as ndl
from suite.cases.base import NdlcModel, Op, _hold, normal


def _sigmoid(z, xp):
    return 1 / (1 + xp.exp(-z))


def _log_softmax(z, xp):
    """log softmax of each row of `z` in numpy or JAX (`xp`)."""
    shifted = z - z.max(1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(1, keepdims=True))


class LstmLM(Op):
    """One training step's gradients of a language model: Embedding -> 2-layer LSTM -> Linear over
    the vocabulary, softmax loss of the next ids, truncated BPTT over seq_len steps from a zero
    state. needle's layouts (weights (in, out)); PyTorch runs its nn.LSTM on their transposes."""
    label = "LSTM LM step"
    layers = 2
    cell = ("W_ih", "W_hh", "bias_ih", "bias_hh")
    wrt = ("embedding.weight", *(f"lstm{k}.{name}" for k, name in itertools.product(range(layers), cell)),
           "out.weight", "out.bias")

    def size(self, shape):
        seq_len, batch, vocab, width, hidden = shape
        return f"{seq_len}x{batch} vocab {vocab} {width}->{hidden}x{self.layers}"

    def arrays(self, rng, shape):
        seq_len, batch, vocab, width, hidden = shape
        bound = hidden ** -0.5
        a = {"x": rng.integers(0, vocab, (seq_len, batch)), "y": rng.integers(0, vocab, seq_len * batch),
             "embedding.weight": normal(rng, vocab, width)}
        for k, size in enumerate([width] + [hidden] * (self.layers - 1)):
            for name, rows in zip(self.cell, (size, hidden, None, None)):
                shape = (4 * hidden,) if rows is None else (rows, 4 * hidden)
                a[f"lstm{k}.{name}"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        a["out.weight"], a["out.bias"] = normal(rng, hidden, vocab, scale=bound), np.zeros(vocab, np.float32)
        return a

    def ndlc(self, a):
        vocab, width = a["embedding.weight"].shape
        hidden = a["lstm0.W_hh"].shape[0]
        embedding, lstm = ndl.nn.Embedding(vocab, width), ndl.nn.LSTM(width, hidden, self.layers)
        out, loss = ndl.nn.Linear(hidden, vocab), ndl.nn.SoftmaxLoss()
        held = {**_hold(embedding, a, ("weight",), prefix="embedding."),
                **_hold(out, a, ("weight", "bias"), prefix="out.")}
        for k, cell in enumerate(lstm.lstm_cells):
            held.update(_hold(cell, a, self.cell, prefix=f"lstm{k}."))

        def forward(t):
            seq_len, batch = t["x"].shape
            states, _ = lstm(embedding(t["x"]))
            return loss(out(states.reshape((seq_len * batch, hidden))), t["y"])
        return NdlcModel(forward, [embedding, lstm, out, loss], held)

    def forward(self, a, xp):
        """The loss, and what numpy's backward needs: each layer's input and per-step values
        (h and c before the step, the gates, tanh(c) after), the top layer's outputs, log p."""
        seq_len, batch = a["x"].shape
        inputs, caches = xp.take(a["embedding.weight"], a["x"], axis=0), []
        for k in range(self.layers):
            w_hh = a[f"lstm{k}.W_hh"]
            n = w_hh.shape[0]
            projected = (inputs.reshape(seq_len * batch, -1) @ a[f"lstm{k}.W_ih"] + a[f"lstm{k}.bias_ih"]
                         + a[f"lstm{k}.bias_hh"]).reshape(seq_len, batch, 4 * n)
            h = c = xp.zeros((batch, n), np.float32)
            steps, outputs = [], []
            for t in range(seq_len):
                z = projected[t] + h @ w_hh
                i, f, o = (_sigmoid(z[:, j * n:(j + 1) * n], xp) for j in (0, 1, 3))
                g = xp.tanh(z[:, 2 * n:3 * n])
                new_c = f * c + i * g
                steps.append((h, c, i, f, g, o, xp.tanh(new_c)))
                h, c = o * steps[-1][-1], new_c
                outputs.append(h)
            caches.append((inputs, steps))
            inputs = xp.stack(outputs)
        top = inputs.reshape(seq_len * batch, -1)
        logp = _log_softmax(top @ a["out.weight"] + a["out.bias"], xp)
        return -logp[xp.arange(seq_len * batch), a["y"]].mean(), caches, top, logp

    def numpy(self, a):
        return self.forward(a, np)[0]

    def numpy_grads(self, a):
        _, caches, top, logp = self.forward(a, np)
        seq_len, batch = a["x"].shape
        dz = mlp_step.cross_entropy_grad(logp, a["y"])
        grads = {"out.weight": top.T @ dz, "out.bias": dz.sum(0)}
        d_out = (dz @ a["out.weight"].T).reshape(seq_len, batch, -1)
        for k in reversed(range(self.layers)):
            inputs, steps = caches[k]
            w_hh = a[f"lstm{k}.W_hh"]
            d_gates, dw_hh = np.empty((seq_len, batch, 4 * w_hh.shape[0]), np.float32), np.zeros_like(w_hh)
            dh_next = dc_next = np.zeros((batch, w_hh.shape[0]), np.float32)
            for t in reversed(range(seq_len)):
                h, c, i, f, g, o, tanh_c = steps[t]
                dh = d_out[t] + dh_next
                dc = dh * o * (1 - tanh_c ** 2) + dc_next
                d_gates[t] = np.concatenate([dc * g * i * (1 - i), dc * c * f * (1 - f),
                                             dc * i * (1 - g ** 2), dh * tanh_c * o * (1 - o)], axis=1)
                dh_next, dc_next = d_gates[t] @ w_hh.T, dc * f
                dw_hh += h.T @ d_gates[t]
            flat = d_gates.reshape(seq_len * batch, -1)
            grads[f"lstm{k}.W_ih"] = inputs.reshape(seq_len * batch, -1).T @ flat
            grads[f"lstm{k}.W_hh"] = dw_hh
            grads[f"lstm{k}.bias_ih"] = grads[f"lstm{k}.bias_hh"] = flat.sum(0)
            d_out = (flat @ a[f"lstm{k}.W_ih"].T).reshape(seq_len, batch, -1)
        table = np.zeros_like(a["embedding.weight"])
        np.add.at(table, a["x"].reshape(-1), d_out.reshape(seq_len * batch, -1))
        grads["embedding.weight"] = table
        return tuple(grads[name] for name in self.wrt)

    def torch(self, t):
        import torch
        import torch.nn.functional as F
        hidden = t["lstm0.W_hh"].shape[0]
        lstm = torch.nn.LSTM(t["embedding.weight"].shape[1], hidden, self.layers, device="meta")
        weights = {f"{kind}_l{k}": t[f"lstm{k}.{name}"].T if kind.startswith("weight") else t[f"lstm{k}.{name}"]
                   for k in range(self.layers)
                   for kind, name in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), self.cell)}
        states, _ = torch.func.functional_call(lstm, weights, (F.embedding(t["x"], t["embedding.weight"]),))
        logits = states.reshape(-1, hidden) @ t["out.weight"] + t["out.bias"]
        return F.cross_entropy(logits, t["y"])

    def jax(self, a):
        import jax.numpy as jnp
        return self.forward(a, jnp)[0]
