"""Convolutions: needle's nn.Conv against numpy's im2col, PyTorch's conv2d and JAX's
conv_general_dilated; their floating-point work, for GFLOP/s against the run's sgemm."""
import numpy as np

import ndlc as ndl
from suite.cases.base import NdlcModel, Op, _hold, normal


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

    def flops(self, a):
        n, cin = a["x"].shape[:2]
        k, cout = a["weight"].shape[0], a["weight"].shape[3]
        out = a["x"].shape[2] + 2 * self.pad(k) - k + 1
        return 2 * n * cout * out * out * cin * k * k

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
