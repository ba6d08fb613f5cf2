"""Convolutions: needle's nn.Conv against numpy's im2col, PyTorch's conv2d and JAX's
conv_general_dilated; their floating-point work, for GFLOP/s against the run's sgemm."""
import numpy as np

import ndlc as ndl
from suite.cases.base import NdlcModel, Op, _hold, normal


class Conv(Op):
    """needle's nn.Conv: NCHW input, (K, K, Cin, Cout) weight, stride `stride`, padding `padding`
    (needle's K//2 unless given: LeNet's second convolution has none), bias. `name` says whose
    layer it is."""
    label = "Conv"
    wrt = ("x", "weight", "bias")
    cotangent = "c"

    def __init__(self, full, quick, padding=None, name="", stride=1):
        super().__init__(full, quick)
        self.padding, self.name, self.stride = padding, name, stride

    def size(self, shape):
        n, cin, cout, hw, k = shape
        pad = "" if self.padding is None else f" pad {self.padding}"
        stride = "" if self.stride == 1 else f" stride {self.stride}"
        return f"{self.name + ' ' if self.name else ''}{n}x{cin}x{hw}x{hw}->{cout} k{k}{pad}{stride}"

    def flops(self, a):
        n, cin = a["x"].shape[:2]
        k, cout = a["weight"].shape[0], a["weight"].shape[3]
        out = self.out(a["x"].shape[2], k)
        return 2 * n * cout * out * out * cin * k * k

    def pad(self, k):
        return k // 2 if self.padding is None else self.padding

    def out(self, hw, k):
        """The output's height (and width) for an input `hw` high and a `k`-wide kernel."""
        return (hw + 2 * self.pad(k) - k) // self.stride + 1

    def arrays(self, rng, shape):
        n, cin, cout, hw, k = shape
        out = self.out(hw, k)
        return {"x": normal(rng, n, cin, hw, hw),
                "weight": normal(rng, k, k, cin, cout, scale=(cin * k * k) ** -0.5),
                "bias": normal(rng, cout, scale=0.1), "c": normal(rng, n, cout, out, out)}

    def ndlc(self, a):
        k, _, cin, cout = a["weight"].shape
        conv = ndl.nn.Conv(cin, cout, k, stride=self.stride, padding=self.padding)
        return NdlcModel(lambda t: conv(t["x"]), [conv], _hold(conv, a, ("weight", "bias")))

    def numpy(self, a):
        w = a["weight"]
        return _correlate(_pad(a["x"], self.pad(w.shape[0])), w, self.stride) + a["bias"][:, None, None]

    def numpy_grads(self, a):
        """The weight's gradient from the strided windows; the input's as the correlation of the
        cotangent, dilated by the stride, with the flipped kernel (padded at the far end by the rows
        the stride skipped)."""
        x, w, c, s = a["x"], a["weight"], a["c"], self.stride
        k, p = w.shape[0], self.pad(w.shape[0])
        windows = np.lib.stride_tricks.sliding_window_view(_pad(x, p), w.shape[:2], axis=(2, 3))
        windows = windows[:, :, ::s, ::s][:, :, :c.shape[2], :c.shape[3]]
        dw = np.tensordot(windows, c, axes=([0, 2, 3], [0, 2, 3])).transpose(1, 2, 0, 3)
        dilated = np.zeros(c.shape[:2] + ((c.shape[2] - 1) * s + 1,) * 2, c.dtype)
        dilated[:, :, ::s, ::s] = c
        skipped = (x.shape[2] + 2 * p - k) % s
        padded = np.pad(dilated, ((0, 0), (0, 0), (k - 1 - p, k - 1 - p + skipped), (k - 1 - p, k - 1 - p + skipped)))
        dx = _correlate(padded, w[::-1, ::-1].transpose(0, 1, 3, 2))
        return dx, dw, c.sum((0, 2, 3))

    def torch(self, t):
        import torch.nn.functional as F
        w = t["weight"]
        return F.conv2d(t["x"], w.permute(3, 2, 0, 1), t["bias"], stride=self.stride, padding=self.pad(w.shape[0]))

    def jax(self, a):
        import jax
        p = self.pad(a["weight"].shape[0])
        out = jax.lax.conv_general_dilated(a["x"], a["weight"], (self.stride,) * 2, [(p, p), (p, p)],
                                           dimension_numbers=("NCHW", "HWIO", "NCHW"))
        return out + a["bias"][:, None, None]


def _pad(x, p):
    """NCHW `x` zero-padded by `p` on each side of H and W."""
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def _correlate(xp, w, stride=1):
    """Cross-correlation of padded NCHW `xp` with (K, K, Cin, Cout) `w` at `stride`, as
    (N, Cout, H, W): im2col (the windows, gathered by tensordot) and one matrix product."""
    windows = np.lib.stride_tricks.sliding_window_view(xp, w.shape[:2], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.tensordot(windows, w, axes=([1, 4, 5], [2, 0, 1])).transpose(0, 3, 1, 2)
