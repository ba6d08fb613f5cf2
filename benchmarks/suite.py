"""The kernel benchmark suite behind `ndlc bench`: ndlc's compiled code against hand-written numpy,
PyTorch eager, torch.compile and JAX, side by side in one process on the same threads. Each
contender's first result is checked against numpy's before it is timed. Writes RESULTS.md (with
the MLP step of mlp_step.py) and ratios.png, a chart of ndlc's time over the best peer's.

Cases are declared in CASES: an Op (arrays, forward in each framework, numpy's gradients by hand)
in its forward and forward+backward OpCase, and AdamStep, whose contenders are its own.
"""
import contextlib
import importlib
import itertools
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

import mlp_step
import model_steps
import ndlc as ndl

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL, ATOL = 1e-3, 1e-3        # atol is relative to numpy's largest magnitude
WARMUP = 1                     # calls after the (checked) first one, before timing
BUDGET_S = 2.0                 # timed seconds per contender and case after which fewer calls count
MLP_NAME = "MLP training step"
EPS, MOMENTUM, LR = 1e-5, 0.1, 1e-3


# ---- the frameworks ------------------------------------------------------------------------

class NdlcModel(NamedTuple):
    """An op in ndlc: `forward(tensors by name)`, the modules holding its state, and the tensors
    they hold by array name (parameters, running statistics), which are not program inputs."""
    forward: Callable
    modules: list = []
    held: dict = {}


def ndlc_runner(model, a, wrt, device):
    """Calls of `model.forward` compiled by ndl.compile (returning the gradients of `wrt` when
    there are any: the forward is then the loss)."""
    inputs = [name for name in a if name not in model.held]

    def step(*batch):
        t = {**dict(zip(inputs, batch)), **model.held}
        for name in wrt:
            t[name].requires_grad = True
        out = model.forward(t)
        if not wrt:
            return out
        out.backward()
        return tuple(t[name].grad for name in wrt)

    compiled = ndl.compile(step, device=device, state=model.modules)
    args = [a[name] for name in inputs]
    return lambda: compiled(*args)


def torch_runner(fn, a, wrt, compile=False):
    """Calls of `fn(tensors by name)` in PyTorch, eager or through torch.compile; with `wrt`, the
    gradients of those tensors (torch.autograd.grad of fn's output)."""
    import torch
    names = list(a)
    tensors = [torch.from_numpy(a[name]) for name in names]
    targets = [tensors[names.index(name)].requires_grad_() for name in wrt]
    positional = _positional(fn, names)
    call = torch.compile(positional) if compile else positional
    if not wrt:
        return lambda: call(*tensors)
    return lambda: torch.autograd.grad(call(*tensors), targets)


def jax_runner(fn, a, wrt):
    """Calls of `fn(arrays by name)` under jax.jit (of jax.grad over `wrt` when given), waited for."""
    import jax
    import jax.numpy as jnp
    names = list(a)
    args = [jnp.asarray(a[name]) for name in names]
    call = _positional(fn, names)
    if wrt:
        call = jax.grad(call, argnums=tuple(names.index(name) for name in wrt))
    call = jax.jit(call)
    return lambda: jax.block_until_ready(call(*args))


def _positional(fn, names):
    """`fn` of a dict of named values, as a function of those values in `names` order."""
    return lambda *values: fn(dict(zip(names, values)))


def _hold(module, a, params=(), buffers=(), prefix=""):
    """Load arrays into `module` (its Parameters `params`, its plain tensors `buffers`, from the
    arrays named `prefix` + attribute); returns the held tensors by array name."""
    for name in params:
        setattr(module, name, ndl.nn.Parameter(a[prefix + name]))
    for name in buffers:
        setattr(module, name, ndl.Tensor(a[prefix + name], requires_grad=False))
    return {prefix + name: getattr(module, name) for name in params + buffers}


def normal(rng, *shape, scale=1.0):
    """float32 standard normal samples, scaled."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)


# ---- the ops -------------------------------------------------------------------------------

class Op:
    """An op under test, shared by its fwd and fwd+bwd cases: its arrays, its forward in each
    framework and numpy's gradients by hand. fwd+bwd differentiates loss = (output * c).sum(),
    or output.sum() where the op has no `cotangent`, with respect to `wrt`."""
    label = ""
    wrt = ()
    cotangent = None

    def __init__(self, full, quick):
        self.full, self.quick = full, quick

    def size(self, shape):
        """The shape as the case's name shows it."""
        return "x".join(map(str, shape))

    def arrays(self, rng, shape):
        """The op's arrays by name (float32; int labels), drawn from `rng`, for `shape`."""
        raise NotImplementedError

    def ndlc(self, a):
        """The op for ndl.compile: an NdlcModel, its modules loaded from `a`."""
        raise NotImplementedError

    def numpy(self, a):
        """The forward's outputs in numpy (state in `a`, such as running statistics, moved on)."""
        raise NotImplementedError

    def numpy_grads(self, a):
        """The gradients of `wrt`, written by hand in numpy."""
        raise NotImplementedError

    def torch(self, t):
        """The forward's outputs in PyTorch, from tensors by name."""
        raise NotImplementedError

    def jax(self, a):
        """JAX runs the numpy forward where that uses only operators and array methods."""
        return self.numpy(a)

    def traffic(self, a):
        """Bytes the forward must move at least (None: not a bandwidth-bound case)."""
        return None


class Norm(Op):
    """x normalised over `axis` (biased variance), scaled and shifted per feature (axis 1)."""
    wrt = ("x", "weight", "bias")
    cotangent = "c"
    axis = None

    def arrays(self, rng, shape):
        n, d = shape
        return {"x": normal(rng, n, d), "weight": 1 + normal(rng, d, scale=0.1),
                "bias": normal(rng, d, scale=0.1), "c": normal(rng, n, d)}

    def numpy(self, a):
        return self._forward(a)[0]

    def numpy_grads(self, a):
        _, xhat, var = self._forward(a)
        dy = a["c"]
        dx = mlp_step.normalize_grad(dy * a["weight"], xhat, var, self.axis)
        return dx, (dy * xhat).sum(0), dy.sum(0)

    def _forward(self, a):
        """The output, the normalised x and the variance (numpy or JAX arrays)."""
        xhat, _, var = mlp_step.normalize(a["x"], self.axis)
        return xhat * a["weight"] + a["bias"], xhat, var


class BatchNorm(Norm):
    """BatchNorm1d in training mode, momentum 0.1: batch statistics, and the running statistics
    updated and returned too. PyTorch keeps the unbiased variance in running_var (n/(n-1) apart:
    within tolerance at these batch sizes)."""
    label = "BatchNorm1d train"
    axis = 0

    def arrays(self, rng, shape):
        d = shape[1]
        return {**super().arrays(rng, shape), "running_mean": np.zeros(d, np.float32),
                "running_var": np.ones(d, np.float32)}

    def ndlc(self, a):
        bn = ndl.nn.BatchNorm1d(a["x"].shape[1], eps=EPS, momentum=MOMENTUM)
        held = _hold(bn, a, ("weight", "bias"), ("running_mean", "running_var"))
        return NdlcModel(lambda t: (bn(t["x"]), bn.running_mean, bn.running_var), [bn], held)

    def numpy(self, a):
        return super().numpy(a), a["running_mean"], a["running_var"]

    def _forward(self, a):
        """Norm's forward, which also moves the running statistics (in `a`) towards the batch's."""
        xhat, mean, var = mlp_step.normalize(a["x"], 0)
        for name, batch in (("running_mean", mean), ("running_var", var)):
            a[name] = (1 - MOMENTUM) * a[name] + MOMENTUM * batch.reshape(-1)
        return xhat * a["weight"] + a["bias"], xhat, var

    def torch(self, t):
        import torch.nn.functional as F
        y = F.batch_norm(t["x"], t["running_mean"], t["running_var"], t["weight"], t["bias"],
                         training=True, momentum=MOMENTUM, eps=EPS)
        return y, t["running_mean"], t["running_var"]


class LayerNorm(Norm):
    """LayerNorm1d: each row normalised over its features."""
    label = "LayerNorm1d"
    axis = 1

    def ndlc(self, a):
        ln = ndl.nn.LayerNorm1d(a["x"].shape[1], eps=EPS)
        return NdlcModel(lambda t: ln(t["x"]), [ln], _hold(ln, a, ("weight", "bias")))

    def torch(self, t):
        import torch.nn.functional as F
        return F.layer_norm(t["x"], t["x"].shape[1:], t["weight"], t["bias"], eps=EPS)


class SoftmaxLoss(Op):
    """Softmax cross-entropy (nn.SoftmaxLoss: the mean over the batch) of logits and int labels."""
    label = "SoftmaxLoss"
    wrt = ("logits",)

    def arrays(self, rng, shape):
        n, k = shape
        return {"logits": normal(rng, n, k, scale=3.0), "y": rng.integers(0, k, n)}

    def ndlc(self, a):
        loss = ndl.nn.SoftmaxLoss()
        return NdlcModel(lambda t: loss(t["logits"], t["y"]), [loss])

    def numpy(self, a):
        return mlp_step.cross_entropy(mlp_step.log_softmax(a["logits"]), a["y"])

    def numpy_grads(self, a):
        return (mlp_step.cross_entropy_grad(mlp_step.log_softmax(a["logits"]), a["y"]),)

    def torch(self, t):
        import torch.nn.functional as F
        return F.cross_entropy(t["logits"], t["y"])

    def jax(self, a):
        import jax
        import jax.numpy as jnp
        picked = jnp.take_along_axis(a["logits"], a["y"][:, None], 1)[:, 0]
        return (jax.nn.logsumexp(a["logits"], 1) - picked).mean()


class ReluChain(Op):
    """relu(x*a + b) * c on four full-size arrays: memory-bound, one pass if fused."""
    label = "relu(x*a+b)*c"
    wrt = ("x", "a", "b", "c")

    def size(self, shape):
        return f"2^{int(math.log2(shape[0]))}"

    def arrays(self, rng, shape):
        return {name: normal(rng, *shape) for name in "xabc"}

    def ndlc(self, a):
        return NdlcModel(lambda t: ndl.relu(t["x"] * t["a"] + t["b"]) * t["c"])

    def numpy(self, a):
        return np.maximum(a["x"] * a["a"] + a["b"], 0) * a["c"]

    def numpy_grads(self, a):
        z = a["x"] * a["a"] + a["b"]
        dz = a["c"] * (z > 0)
        return dz * a["a"], dz * a["x"], dz, np.maximum(z, 0)

    def torch(self, t):
        import torch
        return torch.relu(t["x"] * t["a"] + t["b"]) * t["c"]

    def jax(self, a):
        import jax
        return jax.nn.relu(a["x"] * a["a"] + a["b"]) * a["c"]

    def traffic(self, a):
        return 5 * a["x"].nbytes  # reads x, a, b, c; writes the output


class Matmul(Op):
    """A single-precision matrix product (ndlc calls numpy's OpenBLAS, like numpy)."""
    label = "matmul"

    def arrays(self, rng, shape):
        m, k, n = shape
        return {"a": normal(rng, m, k), "b": normal(rng, k, n)}

    def ndlc(self, a):
        return NdlcModel(self.numpy)

    def numpy(self, a):
        return a["a"] @ a["b"]

    torch = numpy


class Conv(Op):
    """needle's nn.Conv: NCHW input, (K, K, Cin, Cout) weight, stride 1, padding `padding` (needle's
    K//2 unless given: LeNet's second convolution has none), bias. `name` says whose layer it is."""
    label = "Conv"
    wrt = ("x", "weight", "bias")
    cotangent = "c"

    def __init__(self, full, quick, padding=None, name=""):
        super().__init__(full, quick)
        self.padding, self.name = padding, name

    def size(self, shape):
        n, cin, cout, hw, k = shape
        pad = "" if self.padding is None else f" pad {self.padding}"
        return f"{self.name + ' ' if self.name else ''}{n}x{cin}x{hw}x{hw}->{cout} k{k}{pad}"

    def pad(self, k):
        return k // 2 if self.padding is None else self.padding

    def arrays(self, rng, shape):
        n, cin, cout, hw, k = shape
        out = hw + 2 * self.pad(k) - k + 1
        return {"x": normal(rng, n, cin, hw, hw),
                "weight": normal(rng, k, k, cin, cout, scale=(cin * k * k) ** -0.5),
                "bias": normal(rng, cout, scale=0.1), "c": normal(rng, n, cout, out, out)}

    def ndlc(self, a):
        k, _, cin, cout = a["weight"].shape
        conv = ndl.nn.Conv(cin, cout, k, padding=self.padding)
        return NdlcModel(lambda t: conv(t["x"]), [conv], _hold(conv, a, ("weight", "bias")))

    def numpy(self, a):
        w = a["weight"]
        return _correlate(_pad(a["x"], self.pad(w.shape[0])), w) + a["bias"][:, None, None]

    def numpy_grads(self, a):
        x, w, c = a["x"], a["weight"], a["c"]
        k, p = w.shape[0], self.pad(w.shape[0])
        windows = np.lib.stride_tricks.sliding_window_view(_pad(x, p), w.shape[:2], axis=(2, 3))
        dw = np.tensordot(windows, c, axes=([0, 2, 3], [0, 2, 3])).transpose(1, 2, 0, 3)
        dx = _correlate(_pad(c, k - 1 - p), w[::-1, ::-1].transpose(0, 1, 3, 2))
        return dx, dw, c.sum((0, 2, 3))

    def torch(self, t):
        import torch.nn.functional as F
        w = t["weight"]
        return F.conv2d(t["x"], w.permute(3, 2, 0, 1), t["bias"], padding=self.pad(w.shape[0]))

    def jax(self, a):
        import jax
        p = self.pad(a["weight"].shape[0])
        out = jax.lax.conv_general_dilated(a["x"], a["weight"], (1, 1), [(p, p), (p, p)],
                                           dimension_numbers=("NCHW", "HWIO", "NCHW"))
        return out + a["bias"][:, None, None]


def _pad(x, p):
    """NCHW `x` zero-padded by `p` on each side of H and W."""
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def _correlate(xp, w):
    """Cross-correlation of padded NCHW `xp` with (K, K, Cin, Cout) `w`, as (N, Cout, H, W): im2col
    (the windows, gathered by tensordot) and one matrix product."""
    windows = np.lib.stride_tricks.sliding_window_view(xp, w.shape[:2], axis=(2, 3))
    return np.tensordot(windows, w, axes=([1, 4, 5], [2, 0, 1])).transpose(0, 3, 1, 2)


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


class TransformerLayerStep(Op):
    """One training step's gradients of needle's TransformerLayer (pre-norm, causal self-attention,
    ReLU MLP; dropout 0) on (batch, len, features): loss = (output * c).sum(), with respect to the
    input and every parameter. PyTorch runs the same layer in functional form (layer_norm,
    scaled_dot_product_attention)."""
    label = "Transformer layer step"
    cotangent = "c"
    dim_head = 16
    norms = ("attention.prenorm_q", "attention.prenorm_k", "attention.prenorm_v", "layernorm")
    projections = tuple(f"attention.{p}_projection.weight" for p in "qkv")
    params = (*(f"{n}.{p}" for n in norms for p in ("weight", "bias")), *projections,
              "attention.out_projection.weight", "linear1.weight", "linear1.bias", "linear2.weight",
              "linear2.bias")
    # the input and every parameter but prenorm_k's bias, whose gradient is 0 (a constant added to
    # each row of scores, which the softmax ignores): rounding noise that no tolerance can compare
    wrt = ("x", *(name for name in params if name != "attention.prenorm_k.bias"))

    def size(self, shape):
        batch, length, features, hidden = shape
        return f"{batch}x{length}x{features} heads {features // self.dim_head} mlp {hidden}"

    def arrays(self, rng, shape):
        batch, length, features, hidden = shape
        a = {"x": normal(rng, batch, length, features), "c": normal(rng, batch, length, features)}
        for norm in self.norms:
            a[f"{norm}.weight"] = 1 + normal(rng, features, scale=0.1)
            a[f"{norm}.bias"] = normal(rng, features, scale=0.1)
        for name in self.projections:
            a[name] = normal(rng, features, features, scale=features ** -0.5)
        a["attention.out_projection.weight"] = normal(rng, features, features, scale=features ** -0.5)
        for name, (rows, cols) in [("linear1", (features, hidden)), ("linear2", (hidden, features))]:
            a[f"{name}.weight"] = normal(rng, rows, cols, scale=rows ** -0.5)
            a[f"{name}.bias"] = normal(rng, cols, scale=0.1)
        return a

    def ndlc(self, a):
        features = a["x"].shape[2]
        layer = ndl.nn.TransformerLayer(features, features // self.dim_head, self.dim_head,
                                        a["linear1.bias"].shape[0])
        held = {}
        for name in self.params:
            path, attribute = name.rsplit(".", 1)
            module = layer
            for part in path.split("."):
                module = getattr(module, part)
            held.update(_hold(module, a, (attribute,), prefix=path + "."))
        return NdlcModel(lambda t: layer(t["x"]), [layer], held)

    def forward(self, a, xp):
        """The output, and what numpy's backward needs (the values of each stage)."""
        x = a["x"]
        batch, length, features = x.shape
        heads = features // self.dim_head
        normed = {n: mlp_step.normalize(x, 2) for n in self.norms[:3]}
        q, k, v = (((normed[n][0] * a[f"{n}.weight"] + a[f"{n}.bias"]) @ a[w])
                   .reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)
                   for n, w in zip(self.norms, self.projections))
        scale = q.shape[-1] ** -0.5
        mask = -np.finfo(np.float32).max * np.triu(np.ones((length, length), np.float32), 1)
        scores = q @ k.transpose(0, 1, 3, 2) * scale + mask
        probs = xp.exp(scores - scores.max(-1, keepdims=True))
        probs = probs / probs.sum(-1, keepdims=True)
        merged = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, features)
        x1 = x + merged @ a["attention.out_projection.weight"]
        xhat, _, var = mlp_step.normalize(x1, 2)
        pre = (xhat * a["layernorm.weight"] + a["layernorm.bias"]) @ a["linear1.weight"] + a["linear1.bias"]
        hidden = xp.maximum(pre, 0)
        out = x1 + hidden @ a["linear2.weight"] + a["linear2.bias"]
        return out, (normed, q, k, v, probs, merged, x1, xhat, var, pre, hidden, scale)

    def numpy(self, a):
        return self.forward(a, np)[0]

    def numpy_grads(self, a):
        _, (normed, q, k, v, probs, merged, x1, xhat, var, pre, hidden, scale) = self.forward(a, np)
        batch, length, features = a["x"].shape
        rows = lambda z: z.reshape(-1, z.shape[-1])  # noqa: E731
        g, d_out = {}, a["c"]
        g["linear2.weight"], g["linear2.bias"] = rows(hidden).T @ rows(d_out), rows(d_out).sum(0)
        d_pre = (d_out @ a["linear2.weight"].T) * (pre > 0)
        normed_x1 = xhat * a["layernorm.weight"] + a["layernorm.bias"]
        g["linear1.weight"], g["linear1.bias"] = rows(normed_x1).T @ rows(d_pre), rows(d_pre).sum(0)
        d_y = d_pre @ a["linear1.weight"].T
        g["layernorm.weight"], g["layernorm.bias"] = rows(d_y * xhat).sum(0), rows(d_y).sum(0)
        d_x1 = d_out + mlp_step.normalize_grad(d_y * a["layernorm.weight"], xhat, var, 2)
        g["attention.out_projection.weight"] = rows(merged).T @ rows(d_x1)
        d_heads = ((d_x1 @ a["attention.out_projection.weight"].T)
                   .reshape(batch, length, -1, self.dim_head).transpose(0, 2, 1, 3))
        d_probs = d_heads @ v.transpose(0, 1, 3, 2)
        d_scores = probs * (d_probs - (d_probs * probs).sum(-1, keepdims=True)) * scale
        d_parts = [d_scores @ k, d_scores.transpose(0, 1, 3, 2) @ q, probs.transpose(0, 1, 3, 2) @ d_heads]
        d_x = d_x1
        for norm, name, d_part in zip(self.norms, self.projections, d_parts):
            xhat_n, _, var_n = normed[norm]
            d_part = d_part.transpose(0, 2, 1, 3).reshape(batch, length, features)
            g[name] = rows(xhat_n * a[f"{norm}.weight"] + a[f"{norm}.bias"]).T @ rows(d_part)
            d_norm = d_part @ a[name].T
            g[f"{norm}.weight"], g[f"{norm}.bias"] = rows(d_norm * xhat_n).sum(0), rows(d_norm).sum(0)
            d_x = d_x + mlp_step.normalize_grad(d_norm * a[f"{norm}.weight"], xhat_n, var_n, 2)
        g["x"] = d_x
        return tuple(g[name] for name in self.wrt)

    def torch(self, t):
        import torch
        import torch.nn.functional as F
        x = t["x"]
        batch, length, features = x.shape
        heads = features // self.dim_head

        def norm(z, name):
            return F.layer_norm(z, (features,), t[f"{name}.weight"], t[f"{name}.bias"], eps=EPS)
        q, k, v = ((norm(x, n) @ t[w]).reshape(batch, length, heads, -1).transpose(1, 2)
                   for n, w in zip(self.norms, self.projections))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x1 = x + attended.transpose(1, 2).reshape(batch, length, features) @ t["attention.out_projection.weight"]
        hidden = torch.relu(norm(x1, "layernorm") @ t["linear1.weight"] + t["linear1.bias"])
        return x1 + hidden @ t["linear2.weight"] + t["linear2.bias"]

    def jax(self, a):
        import jax.numpy as jnp
        return self.forward(a, jnp)[0]


# ---- the cases -----------------------------------------------------------------------------

class Case:
    """A row of the table: its arrays, and for each contender a callable computing its results
    from fresh copies of them (each builder compiles or sets up; the callable is what is timed)."""

    def name(self, quick):
        """The row's name, with the sizes that --quick (or not) uses."""
        raise NotImplementedError

    def arrays(self, rng, quick):
        """The inputs and initial state by name."""
        raise NotImplementedError

    def traffic(self, a):
        """Bytes ndlc must move at least, where the case is memory-bound (for GB/s), else None."""
        return None

    def ndlc(self, a, device):
        """ndlc: compiled by ndl.compile for `device`."""
        raise NotImplementedError

    def numpy(self, a):
        """numpy, vectorised by hand: the reference the others are checked against."""
        raise NotImplementedError

    def torch(self, a):
        """PyTorch, eager."""
        raise NotImplementedError

    def torch_compile(self, a):
        """PyTorch through torch.compile (its default inductor backend)."""
        raise NotImplementedError

    def jax(self, a):
        """JAX under jax.jit, waited for."""
        raise NotImplementedError


class OpCase(Case):
    """An op's forward pass (with its state updates), or forward and backward (its `wrt`
    gradients), in every framework."""

    def __init__(self, op, backward=False):
        self.op, self.backward = op, backward
        self.wrt = op.wrt if backward else ()

    def name(self, quick):
        shape = self.op.quick if quick else self.op.full
        return f"{self.op.label} {self.op.size(shape)} {'fwd+bwd' if self.backward else 'fwd'}"

    def arrays(self, rng, quick):
        a = self.op.arrays(rng, self.op.quick if quick else self.op.full)
        if not self.backward:
            a.pop(self.op.cotangent, None)
        return a

    def traffic(self, a):
        return None if self.backward else self.op.traffic(a)

    def ndlc(self, a, device):
        model = self.op.ndlc(a)
        return ndlc_runner(model._replace(forward=self._loss(model.forward)), a, self.wrt, device)

    def numpy(self, a):
        fn = self.op.numpy_grads if self.backward else self.op.numpy
        return lambda: fn(a)

    def torch(self, a):
        return torch_runner(self._loss(self.op.torch), a, self.wrt)

    def torch_compile(self, a):
        return torch_runner(self._loss(self.op.torch), a, self.wrt, compile=True)

    def jax(self, a):
        return jax_runner(self._loss(self.op.jax), a, self.wrt)

    def _loss(self, forward):
        """`forward`, or with backward the scalar loss on its (first) output: times the op's
        cotangent, summed."""
        if not self.backward:
            return forward

        def loss(t):
            out = forward(t)
            out = out[0] if isinstance(out, tuple) else out
            return (out * t[self.op.cotangent]).sum() if self.op.cotangent else out.sum()
        return loss


def both(op):
    """The op's forward case and its forward+backward case."""
    return [OpCase(op), OpCase(op, backward=True)]


class AdamStep(Case):
    """One Adam update (needle's: bias-corrected, eps outside the root, lr 1e-3) of one parameter,
    the gradient given (loss = (w*g).sum(), so w.grad == g). The parameter starts at zero, so the
    checked result is the update itself."""

    def __init__(self, full, quick):
        self.full, self.quick = full, quick

    def name(self, quick):
        return f"Adam step {'x'.join(map(str, self.quick if quick else self.full))}"

    def arrays(self, rng, quick):
        shape = self.quick if quick else self.full
        return {"w": np.zeros(shape, np.float32), "g": normal(rng, *shape)}

    def ndlc(self, a, device):
        w = ndl.nn.Parameter(a["w"])
        opt = ndl.optim.Adam([w], lr=LR)

        def adam_step(g):
            opt.reset_grad()
            loss = (w * g).sum()
            loss.backward()
            opt.step()
            return loss
        step = ndl.compile(adam_step, device=device, state=[w, opt])
        return lambda: (step(a["g"]), w)[1]

    def numpy(self, a):
        w, g = a["w"], a["g"]
        m, v, t = np.zeros_like(w), np.zeros_like(w), [0]

        def step():
            t[0] += 1
            mlp_step.adam_update(w, g, m, v, t[0], lr=LR)
            return w
        return step

    def torch(self, a, compile=False):
        """PyTorch's Adam (same rule), its step eager or through torch.compile."""
        import torch
        w, g = torch.from_numpy(a["w"]).requires_grad_(), torch.from_numpy(a["g"])
        opt = torch.optim.Adam([w], lr=LR)
        update = torch.compile(opt.step) if compile else opt.step

        def step():
            w.grad = g
            update()
            return w
        return step

    def torch_compile(self, a):
        return self.torch(a, compile=True)

    def jax(self, a):
        import jax
        import jax.numpy as jnp

        @jax.jit
        def update(w, m, v, t, g):
            m, v, t = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g, t + 1
            return w - LR * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)) ** 0.5 + 1e-8), m, v, t
        w, g = jnp.asarray(a["w"]), jnp.asarray(a["g"])
        state = [w, jnp.zeros_like(w), jnp.zeros_like(w), jnp.float32(0)]

        def step():
            state[:] = jax.block_until_ready(update(*state, g))
            return state[0]
        return step


CASES = [
    *both(BatchNorm((4096, 1024), (256, 32))),
    OpCase(BatchNorm((65536, 256), (512, 16))),
    *both(LayerNorm((4096, 1024), (64, 32))),
    *both(SoftmaxLoss((4096, 1000), (64, 10))),
    *both(ReluChain((1 << 22,), (1 << 12,))),
    OpCase(Matmul((1024, 1024, 1024), (64, 32, 48))),
    AdamStep((784, 512), (64, 32)),
    *both(Conv((32, 16, 32, 32, 3), (2, 3, 4, 8, 3))),
    *both(Conv((256, 1, 6, 28, 5), (4, 1, 6, 12, 5), padding=2, name="LeNet conv1")),
    *both(Conv((256, 6, 16, 14, 5), (4, 6, 16, 9, 5), padding=0, name="LeNet conv2")),
    *both(Conv((256, 32, 32, 4, 3), (4, 32, 32, 4, 3), name="ResNet9 3x3")),
    OpCase(LstmLM((20, 16, 1000, 64, 128), (3, 2, 12, 4, 5)), backward=True),
    OpCase(TransformerLayerStep((8, 64, 128, 256), (2, 5, 32, 64)), backward=True),
]


# ---- the contenders ------------------------------------------------------------------------

@dataclass
class Contender:
    """A column of the table: how a case builds its callable, and why it cannot run here (or None)."""
    name: str
    build: Callable
    missing: Callable = lambda: None


def _missing(module):
    """None if `module` imports, else why not."""
    try:
        importlib.import_module(module)
    except Exception as e:  # a broken install (jaxlib mismatch) counts as missing too
        return f"{module} not installed" if isinstance(e, ImportError) else f"{module}: {_reason(e)}"
    return None


CONTENDERS = [
    Contender("ndlc", lambda case, a, device: case.ndlc(a, device)),
    Contender("numpy", lambda case, a, device: case.numpy(a)),
    Contender("PyTorch", lambda case, a, device: case.torch(a), lambda: _missing("torch")),
    Contender("torch.compile", lambda case, a, device: case.torch_compile(a), lambda: _missing("torch")),
    Contender("JAX", lambda case, a, device: case.jax(a), lambda: _missing("jax")),
]
PEERS_FOR_RATIOS = ("numpy", "PyTorch")
STEP_BATCH = {False: 256, True: 8}  # the convolutional models' training steps, by --quick


def _reason(error):
    """An exception in one short line, for a table cell (no '|')."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = (f"{type(error).__name__}: {text}" if text else type(error).__name__).replace("|", "/")
    return text if len(text) <= 70 else text[:67] + "..."


# ---- measuring -----------------------------------------------------------------------------

@dataclass
class Cell:
    """One contender on one case: its median ms, or why there is none; `bad`: a wrong result."""
    ms: float = None
    note: str = ""
    bad: bool = False

    def text(self):
        """The cell as the table shows it."""
        return f"{self.ms:.3f}" if self.ms is not None else self.note


@dataclass
class Row:
    """One case's cells by contender, and the ndlc forward's bandwidth where it is memory-bound."""
    name: str
    cells: dict
    gbps: float = None

    def ratio(self, peer):
        """ndlc's time over `peer`'s, where both have one."""
        ndlc, other = self.cells["ndlc"].ms, self.cells.get(peer, Cell()).ms
        return ndlc / other if ndlc is not None and other is not None else None

    def best_peer(self):
        """The fastest other contender with a (correct) time, or None."""
        timed = [(cell.ms, name) for name, cell in self.cells.items()
                 if name != "ndlc" and cell.ms is not None]
        return min(timed)[1] if timed else None


def results(value):
    """A contender's result as a tuple of float64 numpy arrays (copies: state moves on)."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    return tuple(np.array(_as_numpy(item), dtype=np.float64) for item in items)


def _as_numpy(value):
    """A PyTorch tensor, ndlc Tensor, JAX or numpy array as a numpy array."""
    if isinstance(value, ndl.Tensor):
        return value.numpy()
    if hasattr(value, "detach"):
        return value.detach().numpy()
    return np.asarray(value)


def mismatch(got, want):
    """Why results `got` differ from numpy's `want` beyond float32 tolerance, or None if they agree."""
    if len(got) != len(want):
        return f"{len(got)} results, numpy has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return f"result {i}: shape {g.shape}, numpy's {w.shape}"
        scale = float(np.abs(w).max()) if w.size else 0.0
        if not np.allclose(g, w, rtol=RTOL, atol=ATOL * scale):
            error = float(np.nanmax(np.abs(g - w))) / (scale or 1.0)
            return f"result {i}: off by {error:.1e} of numpy's largest magnitude"
    return None


def measure_cases(cases, contenders, quick, repeats, device, bar):
    """The rows: every contender's median ms on every case, each checked against numpy's result
    (from the same fresh state) on its first call, which also compiles. Contender by contender, in
    CONTENDERS' order: a framework's thread pool only starts once those before it are timed (JAX's
    idle workers, left running, slowed ndlc's sub-millisecond kernels up to fivefold)."""
    inputs = {id(case): case.arrays(np.random.default_rng(0), quick) for case in cases}
    references = {id(case): results(case.numpy(_fresh(inputs[id(case)]))()) for case in cases}
    cells = {id(case): {} for case in cases}
    for contender in contenders:
        for case in cases:
            bar.set_description(f"{contender.name}: {case.name(quick)}")
            arrays = inputs[id(case)]
            cells[id(case)][contender.name] = measure_contender(contender, case, arrays, references[id(case)],
                                                                repeats, device)
            bar.update()
    rows = []
    for case in cases:
        row = Row(case.name(quick), cells[id(case)])
        traffic = case.traffic(inputs[id(case)])
        if traffic and row.cells["ndlc"].ms is not None:
            row.gbps = traffic / row.cells["ndlc"].ms / 1e6
        rows.append(row)
    return rows


def measure_contender(contender, case, arrays, reference, repeats, device):
    """`contender` on `case`: checked on its first call, then timed (mlp_step.measure), or why not."""
    try:
        call = contender.build(case, _fresh(arrays), device)
        wrong = mismatch(results(call()), reference)
        if wrong:
            return Cell(note=f"MISMATCH ({wrong})", bad=True)
        median, _ = mlp_step.measure(lambda: call, repeats, warmup=WARMUP, args=(), budget_s=BUDGET_S)
    except Exception as e:  # a contender that cannot run a case is reported, not fatal
        return Cell(note=f"n/a ({_reason(e)})", bad=contender.name in ("ndlc", "numpy"))
    return Cell(ms=median)


def _fresh(arrays):
    """Copies of the case's arrays, so that each contender starts from the same state."""
    return {name: array.copy() for name, array in arrays.items()}


def stream_bandwidth(quick):
    """The machine's memory bandwidth in GB/s and how it was measured: the fastest of 10 calls of a
    numpy copy and (where PyTorch imports) of torch.add(a, b, out=c) on the run's threads, over
    128 MiB arrays (1 MiB with --quick: a cache's speed)."""
    n = 1 << (18 if quick else 25)
    a, b, c = (np.ones(n, np.float32) for _ in range(3))
    ways = {"numpy copy": (lambda: np.copyto(c, a), 2 * a.nbytes)}
    if _missing("torch") is None:
        import torch
        ta, tb, tc = (torch.from_numpy(v) for v in (a, b, c))
        ways["torch.add(a, b, out=c)"] = (lambda: torch.add(ta, tb, out=tc), 3 * a.nbytes)
    speeds = {name: size / min(mlp_step.measure(lambda fn=fn: fn, 10, warmup=2, args=())[1]) / 1e6
              for name, (fn, size) in ways.items()}
    best = max(speeds, key=speeds.get)
    return speeds[best], best


@contextlib.contextmanager
def threads(count):
    """Every contender on `count` threads: NDLC_THREADS (read when ndlc compiles), PyTorch's pool,
    and OpenBLAS/OpenMP through threadpoolctl where it is installed; all restored afterwards."""
    saved_env = os.environ.get("NDLC_THREADS")
    os.environ["NDLC_THREADS"] = str(count)
    torch = importlib.import_module("torch") if _missing("torch") is None else None
    saved_torch = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(count)
    with contextlib.ExitStack() as stack:
        if _missing("threadpoolctl") is None:
            from threadpoolctl import threadpool_limits
            stack.enter_context(threadpool_limits(count))
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(saved_torch)
            if saved_env is None:
                del os.environ["NDLC_THREADS"]
            else:
                os.environ["NDLC_THREADS"] = saved_env


# ---- reporting -----------------------------------------------------------------------------

def table(rows, contenders):
    """The kernel table in markdown, padded to line up in a terminal too."""
    header = ["case", *(c.name for c in contenders), *(f"ndlc/{p}" for p in PEERS_FOR_RATIOS),
              "ndlc/best peer"]
    body = []
    for row in rows:
        best = row.best_peer()
        ratios = [_times(row.ratio(peer)) for peer in PEERS_FOR_RATIOS]
        best_text = f"{_times(row.ratio(best))} ({best})" if row.ratio(best) else "-"
        body.append([row.name, *(row.cells[c.name].text() for c in contenders), *ratios, best_text])
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    rule = ["-" * w if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    return ["| " + " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                              for i, (cell, w) in enumerate(zip(line, widths))) + " |"
            for line in [header, rule] + body]


def _times(ratio):
    """A ratio as the table shows it, with two or three significant digits."""
    if ratio is None:
        return "-"
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def notes(rows, not_run, bandwidth):
    """Lines under the table: bandwidth reached, contenders left out, and loudly, wrong results."""
    lines = [f"- {row.name}: ndlc moves {row.gbps:.1f} GB/s, {100 * row.gbps / bandwidth[0]:.0f}% of "
             "the stream bandwidth" for row in rows if row.gbps]
    lines += [f"- not run: {name} ({why})" for name, why in not_run.items()]
    lines += [f"- **MISMATCH**: {row.name}, {name}: {cell.note}" for row in rows
              for name, cell in row.cells.items() if cell.note.startswith("MISMATCH")]
    return lines


def document(args, rows, table_lines, note_lines, bandwidth, load, steps, plotted):
    """The whole RESULTS.md: the run's conditions, the kernel section, the MLP step's and the
    convolutional models' steps."""
    mlp, steps = steps
    mlp_lines = mlp_step.section(*mlp, args.repeats) if mlp else []
    step_lines = model_steps.section(steps, STEP_BATCH[args.quick], args.repeats) if steps else []
    return "\n".join(header(args, bandwidth, load) + kernel_section(args, table_lines, note_lines, plotted)
                     + mlp_lines + step_lines)


def header(args, bandwidth, load):
    """RESULTS.md's title, how to regenerate it, and when, where and how the numbers were taken."""
    quick = ["- **--quick**: tiny sizes and 2 calls, a smoke test; the numbers mean nothing", ""]
    pools = "threadpoolctl" if _missing("threadpoolctl") is None else "no threadpoolctl: OpenBLAS as it was"
    return [
        "# Benchmarks", "",
        "Regenerate with `ndlc bench` (`ndlc bench --help` for options; `--quick` for a smoke test). "
        "All numbers come from one process, one run.", "",
        *(quick if args.quick else []), *mlp_step.environment(),
        f"- threads: {args.threads} for every contender (NDLC_THREADS, torch.set_num_threads, {pools}; "
        "JAX uses its own pool)",
        f"- stream bandwidth: {bandwidth[0]:.1f} GB/s ({bandwidth[1]})",
        f"- 1-minute load average: {load[0]:.2f} at the start, {load[1]:.2f} at the end (this run keeps "
        f"up to {args.threads} cores busy; more means other processes competed for them, and the "
        "threaded contenders suffer most)", ""]


def kernel_section(args, table_lines, note_lines, plotted):
    """RESULTS.md's kernel table, how it was measured, its notes and the chart."""
    chart = ["![ndlc time / best peer's time per case](ratios.png)", ""] if plotted else []
    return [
        "## Kernels (float32, median ms per call)", "",
        f"Each contender's first result is checked against numpy's (rtol {RTOL}, atol {ATOL} x the "
        "largest numpy magnitude) before it is timed; a wrong one shows MISMATCH instead of a time. "
        f"Medians of {args.repeats} calls after {WARMUP + 1} untimed ones (the first compiles), or of as "
        f"many as fit in {BUDGET_S:.0f} s (at least 3). Ratios are ndlc's time over the peer's: below 1, "
        "ndlc is faster.", "",
        *table_lines, "", *note_lines, "", *chart]


def plot(rows, path):
    """A log-scale bar chart of ndlc's time over the best peer's, per case, at `path`; False (and
    a line saying so) where matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -e '.[bench]')")
        return False
    best = {row.name: row.best_peer() for row in rows}
    ratios = {row.name: row.ratio(best[row.name]) for row in rows if best[row.name]}
    ratios = {name: r for name, r in ratios.items() if r is not None}
    peers = [name for name in rows[0].cells if name != "ndlc"]
    fig = Figure(figsize=(12, 1.5 + 0.35 * len(ratios)))
    ax = fig.subplots()
    names, values = list(ratios), list(ratios.values())
    ax.barh(names, [v - 1 for v in values], left=1,
            color=["tab:green" if v <= 1 else "tab:red" for v in values])
    for i, (name, v) in enumerate(ratios.items()):
        ax.annotate(f"{_times(v)} ({best[name]})", (v, i), xytext=(4 if v > 1 else -4, 0),
                    textcoords="offset points", va="center", ha="left" if v > 1 else "right", fontsize=8)
    ax.set_xscale("log")
    low, high = min(values + [1.0]), max(values + [1.0])
    ax.set_xlim(low / 2.5, high * 2.5)  # room for the labels on both sides
    ticks = [t for t in (0.1, 0.25, 0.5, 1, 2, 4, 10) if low / 2.5 <= t <= high * 2.5]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.axvline(1, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("ndlc time / best peer's time (log scale; below 1: ndlc is faster)")
    ax.set_title(f"ndlc against the fastest of {', '.join(peers)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# ---- the command ---------------------------------------------------------------------------

def output_path(args):
    """Where RESULTS.md goes: --output; else benchmarks/RESULTS.md for a full, unfiltered run, and a
    new temporary folder for --quick or --only (which must not overwrite the committed one)."""
    if args.output:
        return args.output
    if args.quick or args.only:
        return os.path.join(tempfile.mkdtemp(prefix="ndlc-bench-"), "RESULTS.md")
    return os.path.join(HERE, "RESULTS.md")


def choose(args):
    """The cases --only selects, whether the MLP step is among them, the contenders that run and
    why the others do not."""
    only = (args.only or "").lower()
    cases = [case for case in CASES if only in case.name(args.quick).lower()]
    contenders, not_run = [], {}
    for contender in CONTENDERS:
        why = contender.missing()
        if contender.name == "torch.compile" and not args.torch_compile and not why:
            why = "left out by --quick or --no-torch-compile; --torch-compile runs it"
        if why:
            not_run[contender.name] = why
        else:
            contenders.append(contender)
    return cases, only in MLP_NAME.lower(), contenders, not_run


def run(args):
    """`ndlc bench` (args from ndlc/cli.py: quick, repeats, threads, only, output, plot, device,
    torch_compile, progress): measure, print the table, write RESULTS.md and ratios.png; 1 if a
    result was wrong or ndlc or numpy could not run a case, 2 if --only selects nothing."""
    args.repeats = args.repeats or (2 if args.quick else 20)
    args.torch_compile = not args.quick if args.torch_compile is None else args.torch_compile
    cases, with_mlp, contenders, not_run = choose(args)
    models = [m for m in model_steps.MODELS if (args.only or "").lower() in f"{m} training step"]
    if not cases and not with_mlp and not models:
        print(f"ndlc bench: no case matches --only {args.only!r}", file=sys.stderr)
        return 2
    bandwidth, rows, mlp, load = measure_all(args, cases, with_mlp, contenders)
    steps = measure_models(args, models)
    write(args, rows, contenders, not_run, bandwidth, load, (mlp, steps))
    failed = [(row.name, name, cell.note) for row in rows for name, cell in row.cells.items() if cell.bad]
    failed += [(f"{model} training step", name, note) for model, name, _, note in steps or [] if "MISMATCH" in note]
    for case, name, note in failed:
        print(f"ndlc bench: {case}: {name}: {note}", file=sys.stderr)
    return 1 if failed else 0


def measure_all(args, cases, with_mlp, contenders):
    """The stream bandwidth, the kernel rows and the MLP step, on args.threads threads under a
    progress bar; and the 1-minute load average before and after."""
    from tqdm import tqdm
    steps = len(cases) * len(contenders) + (len(mlp_step.CONTENDERS) + 1) * with_mlp + 1
    load = [os.getloadavg()[0]]
    with threads(args.threads), tqdm(total=steps, unit="run", file=sys.stderr, leave=False,
                                     disable=not args.progress) as bar:
        bar.set_description("stream bandwidth")
        bandwidth = stream_bandwidth(args.quick)
        bar.update()
        mlp = measure_mlp(args.repeats, bar) if with_mlp else None  # before JAX's pool exists
        rows = measure_cases(cases, contenders, args.quick, args.repeats, args.device, bar)
    return bandwidth, rows, mlp, load + [os.getloadavg()[0]]


def measure_models(args, models):
    """The LeNet-BN and ResNet9 training steps' rows (model_steps.py), at batch 256 (8 with --quick)."""
    if not models:
        return None
    with threads(args.threads):
        return model_steps.run(models, STEP_BATCH[args.quick], args.repeats, torch_compile=args.torch_compile)


def write(args, rows, contenders, not_run, bandwidth, load, steps):
    """Print the tables and notes; write RESULTS.md and, beside it, ratios.png. `steps`: the MLP
    step's measurements and the convolutional models' rows (or None where not run)."""
    table_lines, note_lines = table(rows, contenders), notes(rows, not_run, bandwidth)
    print("\n".join(table_lines + [""] + note_lines))
    if steps[1]:
        print("\n".join(model_steps.section(steps[1], STEP_BATCH[args.quick], args.repeats)))
    path = os.path.abspath(output_path(args))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    plotted = bool(rows) and args.plot and plot(rows, os.path.join(os.path.dirname(path), "ratios.png"))
    with open(path, "w") as f:
        f.write(document(args, rows, table_lines, note_lines, bandwidth, load, steps, plotted))
    print(f"wrote {path}" + (" and ratios.png beside it" if plotted else ""))


def measure_mlp(repeats, bar):
    """The MLP step's rows and compile times, by mlp_step's own contenders and timing."""
    bar.set_description(MLP_NAME)
    rows = mlp_step.run(repeats, progress=lambda name: bar.update())
    compile_seconds = mlp_step.compile_times()
    bar.update()
    return rows, compile_seconds
