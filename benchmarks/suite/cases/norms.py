"""The normalisations: BatchNorm1d (training mode) and LayerNorm1d as ndlc's modules, and the same
two written by hand from sums and `** -0.5`, as a user would (issue 20: their kernel counts and
times should match the modules')."""
import numpy as np

import mlp_step
import ndlc as ndl
from suite.cases.base import EPS, MOMENTUM, NdlcModel, Op, _hold, normal


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
        dy, others = a["c"], _all_but_features(a["x"])
        dx = mlp_step.normalize_grad(dy * _along_features(a["weight"], a["x"]), xhat, var, self.axis)
        return dx, (dy * xhat).sum(others), dy.sum(others)

    def _forward(self, a):
        """The output, the normalised x and the variance (numpy or JAX arrays)."""
        xhat, _, var = mlp_step.normalize(a["x"], self.axis)
        return self._scale_shift(xhat, a), xhat, var

    def _scale_shift(self, xhat, a):
        """`xhat` times the weight plus the bias, both along the features (axis 1)."""
        return xhat * _along_features(a["weight"], xhat) + _along_features(a["bias"], xhat)


def _along_features(v, x):
    """A per-feature vector shaped to broadcast along axis 1 of `x` (NC or NCHW)."""
    return v.reshape((-1,) + (1,) * (x.ndim - 2))


def _all_but_features(x):
    """Every axis of `x` but the features' (1): what a per-feature parameter's gradient sums over."""
    return tuple(i for i in range(x.ndim) if i != 1)


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
        xhat, mean, var = mlp_step.normalize(a["x"], self.axis)
        for name, batch in (("running_mean", mean), ("running_var", var)):
            a[name] = (1 - MOMENTUM) * a[name] + MOMENTUM * batch.reshape(-1)
        return self._scale_shift(xhat, a), xhat, var

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


def batch_norm_by_hand(x, g, b):
    """BatchNorm's normalisation spelled as issue 20 spells it: statistics as sums over rows divided
    by n, reshaped to a row, and the global EPS; for ndlc Tensors, torch tensors and numpy or JAX
    arrays alike."""
    n, d = x.shape
    mu = (x.sum((0,)) / n).reshape((1, d))
    xc = x - mu
    var = ((xc * xc).sum((0,)) / n).reshape((1, d))
    return xc * ((var + EPS) ** -0.5) * g + b


def layer_norm_by_hand(x, g, b):
    """LayerNorm's normalisation spelled the same way, over each row's features."""
    n, d = x.shape
    mu = (x.sum((1,)) / d).reshape((n, 1))
    xc = x - mu
    var = ((xc * xc).sum((1,)) / d).reshape((n, 1))
    return xc * ((var + EPS) ** -0.5) * g + b


class ByHand(Norm):
    """A normalisation written by hand (`by_hand`), the same spelling in every framework: no module,
    no running statistics; weight and bias are inputs."""
    by_hand = None

    def ndlc(self, a):
        return NdlcModel(self.forward)

    def torch(self, t):
        return self.forward(t)

    def jax(self, a):
        return self.forward(a)

    def forward(self, t):
        return type(self).by_hand(t["x"], t["weight"], t["bias"])


class BatchNormByHand(ByHand):
    label = "BatchNorm1d by hand"
    axis = 0
    by_hand = batch_norm_by_hand


class LayerNormByHand(ByHand):
    label = "LayerNorm1d by hand"
    axis = 1
    by_hand = layer_norm_by_hand
