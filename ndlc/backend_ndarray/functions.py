"""needle's array functions (`nd.array`, `nd.full`, `nd.log`, ...), each the NDArray method or
device method of the same name: the `array_api` that needle's ops call."""
from .ndarray import NDArray, default_device, device_named


def array(a, dtype="float32", device=None) -> NDArray:
    """A new NDArray holding a copy of `a` (needle's dtype, float32, unless `dtype` says)."""
    return NDArray(a, device=device, dtype=dtype or "float32")


def empty(shape, dtype="float32", device=None) -> NDArray:
    return device_named(device or default_device()).empty(shape, dtype)


def full(shape, fill_value, dtype="float32", device=None) -> NDArray:
    return device_named(device or default_device()).full(shape, fill_value, dtype)


def broadcast_to(array, new_shape) -> NDArray:
    return array.broadcast_to(new_shape)


def reshape(array, new_shape) -> NDArray:
    return array.reshape(new_shape)


def maximum(a, b) -> NDArray:
    return a.maximum(b)


def log(a) -> NDArray:
    return a.log()


def exp(a) -> NDArray:
    return a.exp()


def tanh(a) -> NDArray:
    return a.tanh()


def sum(a, axis=None, keepdims=False) -> NDArray:  # noqa: A001  (needle's name)
    return a.sum(axis=axis, keepdims=keepdims)


def flip(a, axes) -> NDArray:
    return a.flip(axes)


__all__ = ["array", "broadcast_to", "empty", "exp", "flip", "full", "log", "maximum", "reshape", "sum", "tanh"]
