"""passes/gemm_pieces.py's model of SkylakeX's OpenBLAS, checked against numpy's OpenBLAS itself: its
small-matrix permit (packed_rows) and the bits of gemms cut where the model allows (FINE_ROWS)."""
import ctypes
import functools
from types import SimpleNamespace

import numpy as np
import pytest

from ndlc.passes.gemm_pieces import FINE_CORES, fewest_calls, gemm_rows, packed_rows
from ndlc.runtime import libraries

on_skylakex = pytest.mark.skipif(libraries.blas_core() not in FINE_CORES, reason="the model is of SkylakeX's kernels")
DTYPES = {"f32": (np.float32, ctypes.c_float, 0, "s"), "f64": (np.float64, ctypes.c_double, 1, "d")}  # BLAS's
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _gemm(dtype, n, k, a, b):
    return SimpleNamespace(a=SimpleNamespace(transposed=a), b=SimpleNamespace(transposed=b), n=n, k=k, dtype=dtype)


def _shapes(count, seed):
    """(dtype, rows, columns, reduced, left transposed, right transposed) of random products."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        scale = int(rng.choice([40, 300, 1200]))
        yield (str(rng.choice(list(DTYPES))), int(rng.integers(1, 1200)), int(rng.integers(1, scale)),
               int(rng.integers(1, scale)), bool(rng.integers(2)), bool(rng.integers(2)))


@on_skylakex
def test_packed_rows_is_where_openblas_permits_its_small_matrix_kernels_no_more():
    """packed_rows against OpenBLAS's own permit, called in its column-major terms (a row-major call's
    rows are its N, its right operand its A), around the bounds (1e6 multiply-adds, 1200 outputs)."""
    library = ctypes.CDLL(libraries._blas_paths()[0])
    for dtype, (_, scalar, _, letter) in DTYPES.items():
        permit = getattr(library, f"{letter}gemm_small_matrix_permit_SKYLAKEX")
        permit.argtypes = [ctypes.c_int, ctypes.c_int] + [ctypes.c_int64] * 3 + [scalar, scalar]
        for _, rows, n, k, a, b in _shapes(3000, 1):
            for m in {rows, packed_rows(_gemm(dtype, n, k, a, b)), packed_rows(_gemm(dtype, n, k, a, b)) - 1} - {0}:
                small = bool(permit(int(b), int(a), n, m, k, 1.0, 0.0))
                assert small == (m < packed_rows(_gemm(dtype, n, k, a, b))), (dtype, m, n, k, a, b)


@functools.lru_cache(maxsize=None)
def _blas_gemm(dtype):
    """OpenBLAS's row-major gemm for `dtype`, typed here on its address (numpy's OpenBLAS function
    objects, which runtime/libraries.py shares, keep their own argument types)."""
    _, scalar, which, _ = DTYPES[dtype]
    prototype = ctypes.CFUNCTYPE(None, *[ctypes.c_int32] * 3, *[ctypes.c_int64] * 3, scalar, ctypes.c_void_p,
                                 ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, scalar, ctypes.c_void_p, ctypes.c_int64)
    return prototype(ctypes.cast(libraries._blas()[which], ctypes.c_void_p).value)


def _call(dtype, x, w, k, first, stop, a, b, out):
    """OpenBLAS's row-major gemm of rows first..stop of x @ w into out, as generated code calls it."""
    numpy_dtype, gemm = DTYPES[dtype][0], _blas_gemm(dtype)
    size, n = np.dtype(numpy_dtype).itemsize, out.shape[1]
    gemm(ROW_MAJOR, TRANS if a else NO_TRANS, TRANS if b else NO_TRANS, stop - first, n, k, 1.0,
         x.ctypes.data + first * (1 if a else x.shape[1]) * size, x.shape[1], w.ctypes.data, w.shape[1], 0.0,
         out.ctypes.data + first * n * size, n)


@on_skylakex
def test_gemms_cut_where_the_model_allows_give_one_calls_bits():
    """Random products (transposed operands or not), cut as gemm_rows and fewest_calls choose for 2 to
    4 threads, each piece one call on one OpenBLAS thread: the bits of one call over all rows."""
    rng = np.random.default_rng(2)
    held = libraries.blas_threads()
    libraries._blas()[3](1)
    try:
        cut = 0
        for dtype, m, n, k, a, b in _shapes(200, 3):
            unit, least, _ = gemm_rows(_gemm(dtype, n, k, a, b), m, "skylakex")
            piece = fewest_calls(m, unit, int(rng.integers(2, 5)), least)
            if piece is None:
                continue
            numpy_dtype = DTYPES[dtype][0]
            x = rng.standard_normal((k, m) if a else (m, k)).astype(numpy_dtype)
            w = rng.standard_normal((n, k) if b else (k, n)).astype(numpy_dtype)
            whole, pieces = np.zeros((m, n), numpy_dtype), np.zeros((m, n), numpy_dtype)
            _call(dtype, x, w, k, 0, m, a, b, whole)
            for first in range(0, m, piece):
                _call(dtype, x, w, k, first, min(m, first + piece), a, b, pieces)
            assert whole.tobytes() == pieces.tobytes(), (dtype, m, n, k, a, b, piece)
            cut += 1
        assert cut > 150
    finally:
        libraries._blas()[3](held)
