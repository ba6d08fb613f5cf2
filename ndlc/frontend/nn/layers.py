"""needle's layers, written with Tensor ops only so that tracing them gives the compiler's IR and
autodiff gives their gradients."""
import math

from .. import init, ops
from ..tensor import Tensor
from .module import Module, Parameter, check_flags, check_setting, check_sizes


def _check_features(module, x, expected, axis=-1, rank=None, what="features"):
    """Refuse an input whose `axis` is not `expected` wide (or whose rank is not `rank`)."""
    if rank is not None and x.ndim != rank:
        raise ValueError(f"{module!r}: input must have rank {rank}, got shape {x.shape}")
    if x.ndim < 1 or x.shape[axis] != expected:
        got = x.shape[axis] if x.ndim else "no"
        raise ValueError(f"{module!r}: input has {got} {what}, expected {expected} "
                         f"(input shape {x.shape})")


def expand_reduced(v, shape, axes):
    """`v`, reduced over `axes` (an axis or a tuple of them), broadcast back to `shape`."""
    axes = (axes,) if isinstance(axes, int) else axes
    keep = tuple(1 if i in axes else d for i, d in enumerate(shape))
    return v.reshape(keep).broadcast_to(shape)


def _along(v, shape, axis):
    """A per-feature vector `v` broadcast along `axis` of `shape`."""
    keep = tuple(d if i == axis else 1 for i, d in enumerate(shape))
    return v.reshape(keep).broadcast_to(shape)


def _moments(x, axes):
    """Mean and biased variance of `x` over `axes` (reduced away), and `x` minus its mean."""
    n = math.prod(x.shape[a] for a in axes)
    mean = x.sum(axes) / n
    centered = x - expand_reduced(mean, x.shape, axes)
    var = (centered ** 2).sum(axes) / n
    return mean, var, centered


class Linear(Module):
    """y = x @ W + b with W (in, out) and b (1, out), both Kaiming-uniform as in needle."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype="float32"):
        super().__init__()
        check_sizes("Linear", in_features=in_features, out_features=out_features)
        check_flags("Linear", bias=bias)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.kaiming_uniform(in_features, out_features, device=device,
                                                     dtype=dtype, requires_grad=True))
        self.bias = None
        if bias:
            self.bias = Parameter(init.kaiming_uniform(out_features, 1, device=device, dtype=dtype,
                                                       requires_grad=True).reshape((1, out_features)))

    def forward(self, x):
        _check_features(self, x, self.in_features)
        if x.ndim < 2:
            raise ValueError(f"{self!r}: input must have rank >= 2, got shape {x.shape}")
        lead = x.shape[:-1]
        flat = x if x.ndim == 2 else x.reshape((-1, self.in_features))
        out = flat @ self.weight
        if self.bias is not None:
            out = out + self.bias.reshape((1, self.out_features)).broadcast_to(out.shape)
        return out if x.ndim == 2 else out.reshape(lead + (self.out_features,))

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features})"


class Flatten(Module):
    """(N, ...) -> (N, prod(...))."""

    def forward(self, x):
        return x.reshape((x.shape[0], -1))


class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)


class Sigmoid(Module):
    def forward(self, x):
        return ops.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return ops.tanh(x)


class SoftmaxLoss(Module):
    """Mean over the batch of logsumexp(z) - z[y], for logits (N, K) and integer labels (N,)."""

    def forward(self, logits, y):
        if logits.ndim != 2:
            raise ValueError(f"SoftmaxLoss: logits must be (batch, classes), got shape {logits.shape}")
        y = y if isinstance(y, Tensor) else Tensor(y, requires_grad=False)
        n, k = logits.shape
        if y.shape != (n,):
            raise ValueError(f"SoftmaxLoss: labels must have shape ({n},) for logits {logits.shape}, "
                             f"got {y.shape}")
        y_one_hot = init.one_hot(k, y, device=logits.device, dtype=logits.dtype)
        return (ops.logsumexp(logits, (1,)) - (logits * y_one_hot).sum((1,))).sum() / n


class BatchNorm1d(Module):
    """Normalises each feature over the batch; running statistics (biased variance) for eval."""

    def __init__(self, dim, eps=1e-5, momentum=0.1, device=None, dtype="float32"):
        super().__init__()
        check_sizes(type(self).__name__, dim=dim)
        self.dim, self.eps, self.momentum = dim, eps, momentum
        self._check_settings()
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype, requires_grad=True))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype, requires_grad=True))
        self.running_mean = init.zeros(dim, device=device, dtype=dtype)
        self.running_var = init.ones(dim, device=device, dtype=dtype)

    rank = 2

    def _check_settings(self, momentum=True):
        check_setting(type(self).__name__, "eps", self.eps, 0, math.inf)
        if momentum:
            check_setting(type(self).__name__, "momentum", self.momentum, 0, 1, high_included=True)

    def forward(self, x):
        _check_features(self, x, self.dim, axis=1, rank=self.rank)
        self._check_settings(momentum=self.training)  # eval mode does not read the momentum
        m = self.momentum
        if self.training:
            mean, var, centered = self.statistics(x, tuple(a for a in range(x.ndim) if a != 1))
            self.running_mean = ((1 - m) * self.running_mean + m * mean.data).data
            self.running_var = ((1 - m) * self.running_var + m * var.data).data
        else:
            mean, var = self.running_mean, self.running_var
            centered = x - _along(mean, x.shape, 1)
        normed = centered / _along((var + self.eps) ** 0.5, x.shape, 1)
        return normed * _along(self.weight, x.shape, 1) + _along(self.bias, x.shape, 1)

    def statistics(self, x, axes):
        """Training mode's mean, biased variance and centred `x`, over `axes` of this batch
        (SyncBatchNorm's over every process's batch)."""
        return _moments(x, axes)

    def __repr__(self):
        return f"{type(self).__name__}({self.dim})"


class BatchNorm2d(BatchNorm1d):
    """BatchNorm1d per channel of an NCHW input, over N, H and W (reduced in place: no transposed
    copy, so compiled it is one pass for the statistics and one for the output)."""

    rank = 4


class LayerNorm1d(Module):
    """Normalises over the last axis (biased variance), then a learnable per-feature scale and shift."""

    def __init__(self, dim, eps=1e-5, device=None, dtype="float32"):
        super().__init__()
        check_sizes("LayerNorm1d", dim=dim)
        self.dim, self.eps = dim, eps
        check_setting("LayerNorm1d", "eps", eps, 0, math.inf)
        self.weight = Parameter(init.ones(dim, device=device, dtype=dtype, requires_grad=True))
        self.bias = Parameter(init.zeros(dim, device=device, dtype=dtype, requires_grad=True))

    def forward(self, x):
        _check_features(self, x, self.dim)
        check_setting("LayerNorm1d", "eps", self.eps, 0, math.inf)
        last = x.ndim - 1
        _, var, centered = _moments(x, (last,))
        std = expand_reduced((var + self.eps) ** 0.5, x.shape, last)
        return _along(self.weight, x.shape, last) * centered / std + _along(self.bias, x.shape, last)

    def __repr__(self):
        return f"LayerNorm1d({self.dim})"


class Dropout(Module):
    """Training: zero each element with probability p (mask from init.randb) and scale by 1/(1-p).
    With p == 0 it returns x and draws nothing (as PyTorch; needle draws a mask of ones), so the
    default dropout=0. of the attention modules costs a compiled step no random numbers."""

    def __init__(self, p=0.5):
        super().__init__()
        check_setting("Dropout", "p", p, 0, 1)
        self.p = p

    def forward(self, x):
        check_setting("Dropout", "p", self.p, 0, 1)
        if not self.training or self.p == 0:
            return x
        mask = init.randb(*x.shape, p=1 - self.p, device=x.device)
        return x * mask / (1 - self.p)

    def __repr__(self):
        return f"Dropout(p={self.p})"


class Conv(Module):
    """needle's Conv: NCHW in and out, square kernel, weight (k, k, in, out); `padding` None is
    needle's k//2 ("same" for odd k), an explicit padding (0 included) is honoured."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, bias=True,
                 device=None, dtype="float32"):
        super().__init__()
        k = kernel_size[0] if isinstance(kernel_size, tuple) else kernel_size
        self.stride = stride[0] if isinstance(stride, tuple) else stride
        check_sizes("Conv", in_channels=in_channels, out_channels=out_channels, kernel_size=k, stride=self.stride)
        check_flags("Conv", bias=bias)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        padding = padding[0] if isinstance(padding, tuple) else padding
        if padding is not None and (isinstance(padding, bool) or not isinstance(padding, int) or padding < 0):
            raise ValueError(f"Conv: padding must be None (k//2) or an integer >= 0, got {padding!r}")
        self.padding = k // 2 if padding is None else padding
        self.weight = Parameter(init.kaiming_uniform(in_channels * k * k, out_channels * k * k,
                                                     shape=(k, k, in_channels, out_channels),
                                                     device=device, dtype=dtype, requires_grad=True))
        self.bias = None
        if bias:
            bound = 1.0 / (in_channels * k ** 2) ** 0.5
            self.bias = Parameter(init.rand(out_channels, low=-bound, high=bound, device=device,
                                            dtype=dtype, requires_grad=True))

    def forward(self, x):
        _check_features(self, x, self.in_channels, axis=1, rank=4, what="channels")
        out = ops.conv(x.permute((0, 2, 3, 1)), self.weight, stride=self.stride, padding=self.padding)
        if self.bias is not None:
            out = out + _along(self.bias, out.shape, 3)
        return out.permute((0, 3, 1, 2))

    def __repr__(self):
        return (f"Conv({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding})")


class _Pool2d(Module):
    """Pooling over kernel x kernel windows of an NCHW input; the stride defaults to the kernel."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        stride = kernel_size if stride is None else stride
        check_sizes(type(self).__name__, kernel_size=kernel_size, stride=stride)
        self.kernel_size, self.stride = kernel_size, stride

    def __repr__(self):
        return f"{type(self).__name__}({self.kernel_size}, stride={self.stride})"


class AvgPool2d(_Pool2d):
    def forward(self, x):
        return ops.avg_pool2d(x, self.kernel_size, self.stride)


class MaxPool2d(_Pool2d):
    def forward(self, x):
        return ops.max_pool2d(x, self.kernel_size, self.stride)
