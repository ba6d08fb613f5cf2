"""needle's NDArray and devices, with the semantics of needle's reference backend: an NDArray is a
flat storage handle plus shape, strides and offset (in elements); reshape of a compact array,
permute, broadcast_to and slicing are views of the same storage, and `compact()` copies only
when the layout needs it. Storage is numpy on the host for every device."""
import math
import numbers

import numpy as np

from . import ndarray_backend_cpu, ndarray_backend_numpy
from .layout import (NDArrayError, broadcast, compact_strides, flipped, integers, normalised_slice, padding,
                     permuted, reduction_axis, reshaped, sliced)


class BackendDevice:
    """A device: its name and the module whose functions its NDArrays call (needle's). Every
    device keeps NDArray data on the host; `cuda().enabled()` says whether ndlc can compile
    and run programs on a GPU here."""

    def __init__(self, name: str, mod) -> None:
        self.name, self.mod = name, mod

    def __eq__(self, other) -> bool:
        return isinstance(other, BackendDevice) and self.name == other.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name + "()"

    def __reduce__(self):
        return device_named, (self.name,)  # pickled by name: the module stays where it is

    def __getattr__(self, name: str):
        mod = self.__dict__.get("mod")
        if mod is None:
            raise AttributeError(name)
        return getattr(mod, name)

    def enabled(self) -> bool:
        return gpu_usable() if self.name == "cuda" else True

    def randn(self, *shape, dtype="float32") -> "NDArray":
        return NDArray(np.random.randn(*shape).astype(dtype), device=self, dtype=dtype)

    def rand(self, *shape, dtype="float32") -> "NDArray":
        return NDArray(np.random.rand(*shape).astype(dtype), device=self, dtype=dtype)

    def one_hot(self, n, i, dtype="float32") -> "NDArray":
        return NDArray(np.eye(n, dtype=dtype)[np.asarray(i)], device=self, dtype=dtype)

    def empty(self, shape, dtype="float32") -> "NDArray":
        return NDArray.make(shape, device=self, dtype=dtype or "float32")

    def full(self, shape, fill_value, dtype="float32") -> "NDArray":
        array = self.empty(shape, dtype)
        array.fill(fill_value)
        return array


def gpu_usable() -> bool:
    """Whether ndlc can compile for device='cuda' here, as runtime.cuda.require() decides (asked
    only when called, so that eager use loads no code generator)."""
    from ..runtime.cuda import require
    from ..runtime.cuda_build import CudaUnavailable
    try:
        require()
    except CudaUnavailable:
        return False
    return True


def cpu() -> BackendDevice:
    """The host CPU (needle's C++ backend's device: its module also has `matmul_tiled`)."""
    return BackendDevice("cpu", ndarray_backend_cpu)


def cuda() -> BackendDevice:
    """The GPU: NDArray data stays on the host; programs compiled for it run on the GPU."""
    return BackendDevice("cuda", ndarray_backend_numpy)


def cpu_numpy() -> BackendDevice:
    """needle's numpy reference device."""
    return BackendDevice("cpu_numpy", ndarray_backend_numpy)


_DEVICES = {"cpu": cpu, "cuda": cuda, "cpu_numpy": cpu_numpy}


def default_device() -> BackendDevice:
    """needle's default for NDArrays: its numpy device."""
    return cpu_numpy()


def all_devices() -> list:
    return [cpu(), cuda(), cpu_numpy()]


def device_named(device) -> BackendDevice:
    """A device from a device or its name ('cpu', 'cuda', 'cpu_numpy')."""
    if isinstance(device, BackendDevice):
        return device
    if device not in _DEVICES:
        raise NDArrayError(f"unknown device {device!r}: the devices are {', '.join(map(repr, _DEVICES))}")
    return _DEVICES[device]()


def _number(value, what):
    """`value` if it is a real number (a 0-d numpy array of numbers included), else an NDArrayError."""
    if isinstance(value, (numbers.Real, np.bool_)):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "biuf":
        return value
    raise NDArrayError(f"{what} takes a number here, not {type(value).__name__} {np.shape(value)}")


class NDArray:
    """An n-d array: `_handle` (flat storage), `_shape`, `_strides`, `_offset` and `_device`."""

    __array_ufunc__ = None  # numpy defers to our reflected operators: np.float32(2) * a is an NDArray

    def __init__(self, other, device=None, dtype=None):
        """A copy of an NDArray, a numpy array or anything numpy converts (float32 by default)."""
        if isinstance(other, NDArray):
            device = device_named(device) if device is not None else other.device
            source = other.numpy()
            dtype = dtype or other.dtype
        else:
            device = device_named(device) if device is not None else default_device()
            source = np.asarray(other)
            dtype = dtype or "float32"
        array = NDArray.make(source.shape, device=device, dtype=dtype)
        array.device.from_numpy(source, array._handle)
        self._init(array)

    def _init(self, other: "NDArray") -> None:
        self._shape, self._strides, self._offset = other._shape, other._strides, other._offset
        self._device, self._handle = other._device, other._handle

    compact_strides = staticmethod(compact_strides)

    @staticmethod
    def make(shape, strides=None, device=None, handle=None, offset=0, dtype="float32") -> "NDArray":
        """An NDArray over `handle` (new storage of `dtype` when None) with this layout."""
        array = NDArray.__new__(NDArray)
        array._shape = integers(shape, "an NDArray's shape")
        if min(array._shape, default=0) < 0:
            raise NDArrayError(f"an NDArray's shape {array._shape} has a negative dimension")
        array._strides = compact_strides(array._shape) if strides is None else tuple(strides)
        array._offset = int(offset)
        array._device = device_named(device) if device is not None else default_device()
        array._handle = array._device.Array(math.prod(array._shape), dtype) if handle is None else handle
        return array

    @classmethod
    def from_storage(cls, data: np.ndarray, device=None) -> "NDArray":
        """A compact NDArray sharing the memory of the C-contiguous numpy array `data`."""
        if not data.flags.c_contiguous:
            raise NDArrayError(f"NDArray.from_storage needs a C-contiguous array, got strides {data.strides}")
        handle = ndarray_backend_numpy.Array.wrap(data.reshape(-1))
        return cls.make(data.shape, device=device, handle=handle)

    # ---- properties ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def strides(self) -> tuple:
        return self._strides

    @property
    def device(self) -> BackendDevice:
        return self._device

    @property
    def dtype(self) -> str:
        return self._handle.array.dtype.name

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return math.prod(self._shape)

    def __repr__(self) -> str:
        return f"NDArray({self.numpy()}, device={self.device})"

    def __str__(self) -> str:
        return str(self.numpy())

    # ---- storage and layout -------------------------------------------------------------------
    def fill(self, value) -> None:
        """Set every element of the storage to `value`, in place."""
        self._device.fill(self._handle, value)

    def to(self, device) -> "NDArray":
        device = device_named(device)
        return self if device == self.device else NDArray(self.numpy(), device=device, dtype=self.dtype)

    def astype(self, dtype) -> "NDArray":
        """A compact copy holding the elements as `dtype` (hw2's tests cast `cached_data`, a numpy
        array under needle's numpy backend, this way)."""
        return NDArray(self.numpy().astype(dtype), device=self.device, dtype=np.dtype(dtype).name)

    def numpy(self) -> np.ndarray:
        """A numpy view of the elements (it shares the storage)."""
        return self.device.to_numpy(self._handle, self._shape, self._strides, self._offset)

    def __array__(self, dtype=None, copy=None):
        data = self.numpy()
        if dtype is not None:
            data = data.astype(dtype, copy=False)
        return np.array(data) if copy else data

    def is_compact(self) -> bool:
        """Row-major strides over storage that holds exactly these elements."""
        return self._strides == compact_strides(self._shape) and self.size == self._handle.size

    def compact(self) -> "NDArray":
        """This array when compact, else a compact copy."""
        if self.is_compact():
            return self
        out = NDArray.make(self._shape, device=self.device, dtype=self._handle.array.dtype)
        self.device.compact(self._handle, out._handle, self._shape, self._strides, self._offset)
        return out

    def as_strided(self, shape, strides) -> "NDArray":
        """The same storage seen with another shape and strides (no copy, no checks)."""
        if len(shape) != len(strides):
            raise NDArrayError(f"as_strided: shape {tuple(shape)} and strides {tuple(strides)} differ in length")
        return NDArray.make(shape, strides=strides, device=self.device, handle=self._handle, offset=self._offset)

    @property
    def flat(self) -> "NDArray":
        return self.reshape((self.size,))

    def reshape(self, new_shape) -> "NDArray":
        """A view with `new_shape` (one entry may be -1); the array must be compact."""
        new_shape = reshaped(self._shape, new_shape)
        if not self.is_compact():
            raise NDArrayError(f"reshape of a non-compact NDArray (shape {self._shape}, strides "
                               f"{self._strides}) would need a copy: call .compact() first")
        return self.as_strided(new_shape, compact_strides(new_shape))

    def permute(self, new_axes) -> "NDArray":
        """A view with the dimensions in the order `new_axes` gives (permute((1, 0)) transposes)."""
        return self.as_strided(*permuted(self._shape, self._strides, new_axes))

    def broadcast_to(self, new_shape) -> "NDArray":
        """A view repeating size-1 dimensions (stride 0) up to `new_shape`."""
        return self.as_strided(*broadcast(self._shape, self._strides, new_shape))

    # ---- indexing ----------------------------------------------------------------------------
    def process_slice(self, sl: slice, dim: int) -> slice:
        """`sl` over dimension `dim` as an explicit slice(start, stop, step)."""
        return normalised_slice(sl, self._shape[dim], dim)

    def _view(self, idxs) -> "NDArray":
        idxs = idxs if isinstance(idxs, tuple) else (idxs,)
        if len(idxs) != self.ndim:
            raise NDArrayError(f"{len(idxs)} indices for a {self.ndim}-d NDArray: give one integer or "
                               "slice per dimension")
        slices = tuple(normalised_slice(s, self._shape[i], i) for i, s in enumerate(idxs))
        shape, strides, offset = sliced(self._shape, self._strides, self._offset, slices)
        return NDArray.make(shape, strides=strides, device=self.device, handle=self._handle, offset=offset)

    def __getitem__(self, idxs) -> "NDArray":
        """A view: one integer or slice per dimension; an integer keeps its dimension (size 1)."""
        return self._view(idxs)

    def __setitem__(self, idxs, other) -> None:
        """Write an NDArray with as many elements, or a number, through the view `self[idxs]`."""
        view = self._view(idxs)
        if isinstance(other, NDArray):
            self._same_device(other)
            if other.size != view.size:
                raise NDArrayError(f"cannot set {view.shape} elements from an NDArray of shape {other.shape}")
            self.device.ewise_setitem(other.compact()._handle, view._handle, view.shape, view.strides, view._offset)
        else:
            value = _number(other, "NDArray setitem")
            self.device.scalar_setitem(view.size, value, view._handle, view.shape, view.strides, view._offset)

    def _same_device(self, other: "NDArray") -> None:
        """Refuse an operand on another device: needle's devices hold their own memory (here every
        device's is the host's, so code mixing them would run here and fail on a real GPU)."""
        if other.device != self.device:
            raise NDArrayError(f"NDArrays on different devices: {self.device} and {other.device} "
                               "(move one with .to(device))")

    # ---- elementwise and scalar functions ------------------------------------------------------
    def _result(self, shape=None) -> "NDArray":
        """New storage for a result: this array's float dtype (float32 for other dtypes, as needle)."""
        dtype = self._handle.array.dtype
        return NDArray.make(self._shape if shape is None else shape, device=self.device,
                            dtype=dtype if dtype.kind == "f" else np.float32)

    def ewise_or_scalar(self, other, ewise_func, scalar_func) -> "NDArray":
        """ewise_func with an NDArray of the same shape, scalar_func with a number."""
        out = self._result()
        if isinstance(other, NDArray):
            self._same_device(other)
            if other.shape != self.shape:
                raise NDArrayError(f"operation needs two equal-sized arrays, got {self.shape} and {other.shape}")
            ewise_func(self.compact()._handle, other.compact()._handle, out._handle)
        else:
            scalar_func(self.compact()._handle, _number(other, "NDArray arithmetic"), out._handle)
        return out

    def __add__(self, other) -> "NDArray":
        return self.ewise_or_scalar(other, self.device.ewise_add, self.device.scalar_add)

    __radd__ = __add__

    def __sub__(self, other) -> "NDArray":
        return self + (-(other if isinstance(other, NDArray) else _number(other, "NDArray arithmetic")))

    def __rsub__(self, other) -> "NDArray":
        return other + (-self)

    def __mul__(self, other) -> "NDArray":
        return self.ewise_or_scalar(other, self.device.ewise_mul, self.device.scalar_mul)

    __rmul__ = __mul__

    def __truediv__(self, other) -> "NDArray":
        return self.ewise_or_scalar(other, self.device.ewise_div, self.device.scalar_div)

    def __neg__(self) -> "NDArray":
        return self * (-1)

    def __pow__(self, other) -> "NDArray":
        out = self._result()
        self.device.scalar_power(self.compact()._handle, _number(other, "NDArray ** (power)"), out._handle)
        return out

    def maximum(self, other) -> "NDArray":
        return self.ewise_or_scalar(other, self.device.ewise_maximum, self.device.scalar_maximum)

    # comparisons give 1.0 and 0.0 in the array's float dtype, as needle's, and are built from == and
    # >= as needle's (dlsyscourse hw3 ndarray.py): where an operand is NaN, < <= and != give 1 and
    # == >= > give 0 (numpy gives 0 for < and <= too); the Tensor comparisons follow IEEE instead
    def __eq__(self, other) -> "NDArray":
        return self.ewise_or_scalar(other, self.device.ewise_eq, self.device.scalar_eq)

    def __ge__(self, other) -> "NDArray":
        return self.ewise_or_scalar(other, self.device.ewise_ge, self.device.scalar_ge)

    def __ne__(self, other) -> "NDArray":
        return 1 - (self == other)

    def __gt__(self, other) -> "NDArray":
        return (self >= other) * (self != other)

    def __lt__(self, other) -> "NDArray":
        return 1 - (self >= other)

    def __le__(self, other) -> "NDArray":
        return 1 - (self > other)

    def _unary(self, func) -> "NDArray":
        out = self._result()
        func(self.compact()._handle, out._handle)
        return out

    def log(self) -> "NDArray":
        return self._unary(self.device.ewise_log)

    def exp(self) -> "NDArray":
        return self._unary(self.device.ewise_exp)

    def tanh(self) -> "NDArray":
        return self._unary(self.device.ewise_tanh)

    def __matmul__(self, other) -> "NDArray":
        """The product of two 2-d arrays."""
        if not isinstance(other, NDArray) or self.ndim != 2 or other.ndim != 2 or self.shape[1] != other.shape[0]:
            raise NDArrayError(f"matmul needs two 2-d NDArrays (m, n) @ (n, p), got {self.shape} @ "
                               f"{getattr(other, 'shape', type(other).__name__)}")
        self._same_device(other)
        (m, n), p = self.shape, other.shape[1]
        out = self._result((m, p))
        self.device.matmul(self.compact()._handle, other.compact()._handle, out._handle, m, n, p)
        return out

    # ---- reductions --------------------------------------------------------------------------
    def reduce_view_out(self, axis, keepdims=False) -> tuple:
        """The array with the reduced axis last, and the output: shape (1,) over all elements."""
        if axis is None:
            return self.compact().reshape((1,) * (self.ndim - 1) + (self.size,)), self._result((1,))
        axis = reduction_axis(axis, self.ndim)
        view = self.permute(tuple(a for a in range(self.ndim) if a != axis) + (axis,))
        shape = tuple(1 if i == axis else n for i, n in enumerate(self._shape) if keepdims or i != axis)
        return view, self._result(shape)

    def sum(self, axis=None, keepdims=False) -> "NDArray":
        view, out = self.reduce_view_out(axis, keepdims)
        self.device.reduce_sum(view.compact()._handle, out._handle, view.shape[-1])
        return out

    def max(self, axis=None, keepdims=False) -> "NDArray":
        view, out = self.reduce_view_out(axis, keepdims)
        if view.shape[-1] == 0:
            raise NDArrayError(f"max over an empty axis of an NDArray of shape {self.shape}")
        self.device.reduce_max(view.compact()._handle, out._handle, view.shape[-1])
        return out

    def flip(self, axes) -> "NDArray":
        """A compact copy with the elements of `axes` in reverse order."""
        strides, offset = flipped(self._shape, self._strides, self._offset, axes)
        return NDArray.make(self._shape, strides, self.device, self._handle, offset).compact()

    def pad(self, axes) -> "NDArray":
        """A new array with `axes[i] = (before, after)` zeros around dimension i."""
        axes = padding(self._shape, axes)
        out = NDArray.make(tuple(n + b + a for n, (b, a) in zip(self._shape, axes)), device=self.device,
                           dtype=self.dtype)
        out.fill(0)
        inner = tuple(slice(b, b + n, 1) for n, (b, _) in zip(self._shape, axes))
        shape, strides, offset = sliced(out.shape, out.strides, 0, inner)
        self.device.ewise_setitem(self.compact()._handle, out._handle, shape, strides, offset)
        return out


__all__ = ["BackendDevice", "NDArray", "NDArrayError", "all_devices", "cpu", "cpu_numpy", "cuda", "default_device",
           "device_named"]
