"""needle's TransformerLayer's training-step gradients, with numpy's backward written by hand."""
import numpy as np

import mlp_step
import ndlc as ndl
from suite.cases.base import EPS, NdlcModel, Op, _hold, normal


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
