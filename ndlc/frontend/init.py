"""needle's initialisers (`ndl.init`): every random draw comes from numpy's global random state,
in needle's order and with needle's arithmetic, so `np.random.seed(k)` reproduces needle's values.

While tracing, rand/randn/randb become counter-based random ops of the program instead (so a
compiled Dropout draws a new mask every step): same distributions, different numbers."""
import math

import numpy as np

from . import ops
from .tensor import Tensor, as_device, data_of, user_location
from .context import active_context


def _tensor(array, device, dtype, requires_grad):
    return Tensor(array, device=device, dtype=dtype, requires_grad=requires_grad)


def _made(value, device, dtype, requires_grad):
    """An op-built tensor (traced draws, one_hot) cast to `dtype`, on `device`."""
    tensor = ops.cast(value, dtype)
    tensor.requires_grad, tensor.device = requires_grad, as_device(device)
    return tensor


def rand(*shape, low=0.0, high=1.0, device=None, dtype="float32", requires_grad=False):
    """Uniform on [low, high): `np.random.rand(*shape) * (high - low) + low`."""
    context = active_context()
    if context is not None:
        return _made(context.uniform(shape, "f32") * (high - low) + low, device, dtype, requires_grad)
    return _tensor(np.random.rand(*shape) * (high - low) + low, device, dtype, requires_grad)


def randn(*shape, mean=0.0, std=1.0, device=None, dtype="float32", requires_grad=False):
    """Normal: `np.random.randn(*shape) * std + mean` (Box-Muller while tracing)."""
    context = active_context()
    if context is not None:
        u1, u2 = context.uniform(shape, "f32"), context.uniform(shape, "f32")
        normal = ops.sqrt(ops.log(1.0 - u1) * -2.0) * ops.cos(u2 * (2 * math.pi))
        return _made(normal * std + mean, device, dtype, requires_grad)
    return _tensor(np.random.randn(*shape) * std + mean, device, dtype, requires_grad)


def constant(*shape, c=1.0, device=None, dtype="float32", requires_grad=False):
    """Every element equal to `c`."""
    return _tensor(np.ones(shape) * c, device, dtype, requires_grad)


def ones(*shape, device=None, dtype="float32", requires_grad=False):
    return constant(*shape, c=1.0, device=device, dtype=dtype, requires_grad=requires_grad)


def zeros(*shape, device=None, dtype="float32", requires_grad=False):
    return constant(*shape, c=0.0, device=device, dtype=dtype, requires_grad=requires_grad)


def randb(*shape, p=0.5, device=None, dtype="bool", requires_grad=False):
    """Bernoulli(p) booleans: `np.random.rand(*shape) <= p` (Dropout's keep mask)."""
    context = active_context()
    if context is not None:
        return _made(context.uniform(shape, "f32") <= p, device, dtype, requires_grad)
    return _tensor(np.random.rand(*shape) <= p, device, dtype, requires_grad)


def one_hot(n, i, device=None, dtype="float32", requires_grad=False):
    """Rows of the n x n identity picked by the integer labels `i` (draws nothing).

    Built with ops (labels == arange(n)) so it also works on a symbolic `i` while tracing."""
    labels = i if isinstance(i, Tensor) else Tensor(np.asarray(i), requires_grad=False)
    known = data_of(labels._value)
    bad = None if known is None else ops.invalid_index(known, n)
    if bad is not None:
        raise ValueError(f"one_hot: label {bad[0]} is {bad[1]} (labels must be integers indexing one of {n} "
                         f"classes; a zero row would silently drop the sample, a truncation change it)")
    if known is None and active_context() is not None:
        active_context().bound(labels._value, n, ValueError, f"one_hot over {n} classes (at {user_location()})")
    # compared in int32 (int64 lanes are twice the vectors: a SoftmaxLoss's pick over 4096x1000
    # took 7 vector instructions per 8 logits, 4 in int32); truncation keeps every label in [0, n),
    # and one outside is refused before the call (an input's) or after it (`capture._computed_bounds`)
    column = ops.reshape(ops.cast(labels, "int32"), labels.shape + (1,))
    classes = Tensor.make_const(np.arange(n, dtype=np.int32).reshape((1,) * len(labels.shape) + (n,)))
    return _made(ops.equal(column, classes), device, dtype, requires_grad)


def zeros_like(array, *, device=None, requires_grad=False):
    return zeros(*array.shape, dtype=array.dtype, device=device or array.device,
                 requires_grad=requires_grad)


def ones_like(array, *, device=None, requires_grad=False):
    return ones(*array.shape, dtype=array.dtype, device=device or array.device,
                requires_grad=requires_grad)


def xavier_uniform(fan_in, fan_out, gain=1.0, shape=None, **kwargs):
    """Uniform on [-a, a], a = gain * sqrt(6 / (fan_in + fan_out)); `shape` overrides (fan_in, fan_out)."""
    a = gain * math.sqrt(6 / _fans("xavier_uniform", fan_in, fan_out, fan_in + fan_out))
    return rand(*(shape or (fan_in, fan_out)), low=-a, high=a, **kwargs)


def xavier_normal(fan_in, fan_out, gain=1.0, shape=None, **kwargs):
    """Normal with std = gain * sqrt(2 / (fan_in + fan_out))."""
    std = gain * math.sqrt(2 / _fans("xavier_normal", fan_in, fan_out, fan_in + fan_out))
    return randn(*(shape or (fan_in, fan_out)), mean=0.0, std=std, **kwargs)


def _fans(init, fan_in, fan_out, scale):
    """`scale` (the fans the bound divides by), refused where it is not a positive number: a zero
    fan divided by zero, a negative one took a square root of a negative number."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) or not scale > 0:
        raise ValueError(f"{init}: fan_in={fan_in!r}, fan_out={fan_out!r} give no bound: the fans its "
                         f"scale divides by must be positive")
    return scale


def _relu_gain(nonlinearity):
    if nonlinearity != "relu":
        raise ValueError(f"kaiming init supports nonlinearity='relu' only, got {nonlinearity!r}")
    return math.sqrt(2)


def kaiming_uniform(fan_in, fan_out, shape=None, nonlinearity="relu", **kwargs):
    """Uniform on [-b, b], b = sqrt(2) * sqrt(3 / fan_in)."""
    bound = _relu_gain(nonlinearity) * math.sqrt(3 / _fans("kaiming_uniform", fan_in, fan_out, fan_in))
    return rand(*(shape or (fan_in, fan_out)), low=-bound, high=bound, **kwargs)


def kaiming_normal(fan_in, fan_out, shape=None, nonlinearity="relu", **kwargs):
    """Normal with std = sqrt(2) / sqrt(fan_in)."""
    std = _relu_gain(nonlinearity) / math.sqrt(_fans("kaiming_normal", fan_in, fan_out, fan_in))
    return randn(*(shape or (fan_in, fan_out)), mean=0.0, std=std, **kwargs)


__all__ = ["constant", "kaiming_normal", "kaiming_uniform", "one_hot", "ones", "ones_like", "rand",
           "randb", "randn", "xavier_normal", "xavier_uniform", "zeros", "zeros_like"]
