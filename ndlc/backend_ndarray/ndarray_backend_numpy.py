"""needle's device-module API on numpy storage: `Array` handles (flat storage) and the functions
NDArray calls with them. Both ndlc devices keep NDArray data here, on the host; each function is
one numpy call (no Python loop over elements), results written into the `out` handle given."""
import numpy as np

__device_name__ = "numpy"


class Array:
    """Flat storage of `size` elements (needle's dtype, float32, unless `dtype` says otherwise)."""

    def __init__(self, size, dtype="float32"):
        self.array = np.empty(size, dtype=dtype)

    @classmethod
    def wrap(cls, flat: np.ndarray) -> "Array":
        """A handle over an existing 1-d numpy array, sharing its memory."""
        handle = cls.__new__(cls)
        handle.array = flat
        return handle

    @property
    def size(self) -> int:
        return self.array.size

    def ptr(self) -> int:
        """The address of the storage: equal for two handles exactly when they share it."""
        return self.array.ctypes.data


def to_numpy(a, shape, strides, offset):
    """A numpy view of the elements (shape, strides, offset in elements) of `a`: no copy."""
    itemsize = a.array.itemsize
    return np.lib.stride_tricks.as_strided(a.array[offset:], tuple(shape), tuple(s * itemsize for s in strides))


def from_numpy(a, out):
    out.array[:] = np.ravel(a)


def fill(out, val):
    out.array.fill(val)


def compact(a, out, shape, strides, offset):
    np.copyto(out.array.reshape(shape), to_numpy(a, shape, strides, offset))


def ewise_setitem(a, out, shape, strides, offset):
    to_numpy(out, shape, strides, offset)[...] = a.array.reshape(shape)


def scalar_setitem(size, val, out, shape, strides, offset):
    to_numpy(out, shape, strides, offset)[...] = val


def _ewise(ufunc):
    """out = ufunc(a, b), both compact, in out's dtype (comparisons give 1.0 and 0.0)."""
    def apply(a, b, out):
        ufunc(a.array, b.array, out=out.array, casting="unsafe")
    apply.__name__ = f"ewise_{ufunc.__name__}"
    return apply


def _scalar(ufunc):
    """out = ufunc(a, val) for a compact `a` and a Python number `val`."""
    def apply(a, val, out):
        ufunc(a.array, val, out=out.array, casting="unsafe")
    apply.__name__ = f"scalar_{ufunc.__name__}"
    return apply


def _unary(ufunc):
    def apply(a, out):
        ufunc(a.array, out=out.array, casting="unsafe")
    apply.__name__ = f"ewise_{ufunc.__name__}"
    return apply


ewise_add, scalar_add = _ewise(np.add), _scalar(np.add)
ewise_mul, scalar_mul = _ewise(np.multiply), _scalar(np.multiply)
ewise_div, scalar_div = _ewise(np.divide), _scalar(np.divide)
scalar_power = _scalar(np.power)
ewise_maximum, scalar_maximum = _ewise(np.maximum), _scalar(np.maximum)
ewise_eq, scalar_eq = _ewise(np.equal), _scalar(np.equal)
ewise_ge, scalar_ge = _ewise(np.greater_equal), _scalar(np.greater_equal)
ewise_log, ewise_exp, ewise_tanh = _unary(np.log), _unary(np.exp), _unary(np.tanh)


def matmul(a, b, out, m, n, p):
    """out (m x p) = a (m x n) @ b (n x p), all compact."""
    np.matmul(a.array.reshape(m, n), b.array.reshape(n, p), out=out.array.reshape(m, p))


def reduce_sum(a, out, reduce_size):
    """out[i] = sum of a's i-th run of `reduce_size` consecutive elements."""
    np.sum(a.array.reshape(out.size, reduce_size), axis=1, out=out.array)


def reduce_max(a, out, reduce_size):
    np.max(a.array.reshape(out.size, reduce_size), axis=1, out=out.array)


__all__ = ["Array", "to_numpy", "from_numpy", "fill", "compact", "ewise_setitem", "scalar_setitem",
           "ewise_add", "scalar_add", "ewise_mul", "scalar_mul", "ewise_div", "scalar_div", "scalar_power",
           "ewise_maximum", "scalar_maximum", "ewise_eq", "scalar_eq", "ewise_ge", "scalar_ge",
           "ewise_log", "ewise_exp", "ewise_tanh", "matmul", "reduce_sum", "reduce_max"]
