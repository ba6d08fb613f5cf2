"""needle's `cpu` device module: the numpy storage functions, plus the tiled matmul of needle's
C++ backend (`matmul_tiled` over `__tile_size__` x `__tile_size__` tiles), which needle's
tests call directly."""
import numpy as np

from .ndarray_backend_numpy import *  # noqa: F401,F403  (the same storage and functions)
from .ndarray_backend_numpy import __all__ as _storage_names

__device_name__ = "cpu"
__tile_size__ = 8


def matmul_tiled(a, b, out, m, n, p):
    """out = a @ b where each holds its matrix as compact tiles: a is (m/T, n/T, T, T), b is
    (n/T, p/T, T, T), out is (m/T, p/T, T, T), T = __tile_size__ (one BLAS call on the untiled
    matrices, then retiled)."""
    t = __tile_size__
    left = a.array.reshape(m // t, n // t, t, t).transpose(0, 2, 1, 3).reshape(m, n)
    right = b.array.reshape(n // t, p // t, t, t).transpose(0, 2, 1, 3).reshape(n, p)
    product = (left @ right).reshape(m // t, t, p // t, t).transpose(0, 2, 1, 3)
    np.copyto(out.array.reshape(m // t, p // t, t, t), product)


__all__ = [*_storage_names, "matmul_tiled"]
