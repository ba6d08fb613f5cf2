"""The small kernels: softmax cross-entropy, a memory-bound elementwise chain and a matrix product."""
import math

import numpy as np

import mlp_step
import ndlc as ndl
from suite.cases.base import NdlcModel, Op, normal


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
        """2^k for a power of two, else the element count."""
        power = int(math.log2(shape[0]))
        return f"2^{power}" if shape[0] == 1 << power else str(shape[0])

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

    def flops(self, a):
        (m, k), n = a["a"].shape, a["b"].shape[1]
        return 2 * m * k * n

    torch = numpy
