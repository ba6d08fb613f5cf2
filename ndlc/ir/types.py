"""Tensor types of the graph IR: a static shape and one of a small set of dtypes."""
import functools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError

# IR short name -> numpy dtype. The order is also the promotion order within a kind.
_DTYPES = {
    "bool": np.dtype(np.bool_),
    "u8": np.dtype(np.uint8),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
}
_BY_NUMPY = {v: k for k, v in _DTYPES.items()}
DTYPES = tuple(_DTYPES)
# Bytes one tensor may span: the 48-bit virtual address space of x86-64 and ARM64 (numpy's own
# limit, 2**63, is far beyond it); element counts and offsets then fit in int64 with room to spare.
ADDRESSABLE = 1 << 48


def dtype_name(dtype) -> str:
    """The IR name ('f32', ...) of a dtype given as IR name, numpy dtype or numpy name ('float32')."""
    if isinstance(dtype, str) and dtype in _DTYPES:
        return dtype
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise ShapeError(f"unknown dtype {dtype!r}; supported: {', '.join(DTYPES)}") from None
    if np_dtype not in _BY_NUMPY:
        given = f"{dtype!r} (numpy's {np_dtype.name})" if isinstance(dtype, str) and dtype != np_dtype.name \
            else np_dtype.name  # numpy reads 'f16' as a 16-byte float
        given += {"O": " (Python objects such as None or ragged lists, not numbers)",
                  "U": " (text, not numbers)", "S": " (bytes, not numbers)"}.get(np_dtype.kind, "")
        raise ShapeError(f"unsupported dtype {given}; supported: " + ", ".join(d.name for d in _BY_NUMPY))
    return _BY_NUMPY[np_dtype]


def numpy_dtype(name: str) -> np.dtype:
    return _DTYPES[dtype_name(name)]


def is_float(dtype: str) -> bool:
    return dtype in ("f32", "f64")


def is_integer(dtype: str) -> bool:
    return dtype in ("u8", "i32", "i64")


@dataclass(frozen=True)
class TensorType:
    """A tensor's static type: shape (tuple of non-negative ints) and IR dtype name. A shape whose
    elements would span more than ADDRESSABLE bytes is refused here, where every shape rule and
    the parser make types, so the error names the node or line (its dimensions other than 0 count,
    as numpy counts them: an empty tensor's strides must fit too)."""
    shape: tuple
    dtype: str = "f32"

    def __post_init__(self):
        shape = self.shape
        if type(shape) is not tuple or not all(type(d) is int and d >= 0 for d in shape):
            shape = tuple(shape)
            if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
                raise ShapeError(f"bad shape {shape}: dimensions must be non-negative integers")
            object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        if self.dtype not in _DTYPES:
            object.__setattr__(self, "dtype", dtype_name(self.dtype))
        span = math.prod(d for d in self.shape if d) * _DTYPES[self.dtype].itemsize
        if span > ADDRESSABLE:
            raise ShapeError(f"shape {self.shape} of {self.dtype} would span {span} bytes, more than a "
                             "machine can address (2**48 bytes, the virtual address space of x86-64 and ARM64)")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def np_dtype(self) -> np.dtype:
        return _DTYPES[self.dtype]

    def __str__(self):
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"

    @classmethod
    def of(cls, array) -> "TensorType":
        array = np.asarray(array)
        return _type_of(array.shape, array.dtype) if cls is TensorType else cls(array.shape, dtype_name(array.dtype))


@functools.lru_cache(maxsize=1024)
def _type_of(shape, dtype) -> TensorType:
    """The (immutable) type of arrays of `shape` and numpy `dtype`, made once: a compiled call asks
    for its arguments' and results' types every time (5 us of a 0.1 ms call)."""
    return TensorType(shape, dtype_name(dtype))
