"""The BLAS that compiled matmuls call: the gemm of the OpenBLAS bundled with numpy, found at run time.

Generated code calls `ndlc_sgemm` / `ndlc_dgemm` (CBLAS gemm with 64-bit integers) by name, never
by address: `register()` binds the names in LLVM's symbol table before native code is loaded, so
object code cached on disk links in any process. Whether BLAS is used shows in the LLVM IR (the
declarations), which keys the cache. NDLC_BLAS=0 turns it off (matmul lowers to a loop nest), as
does a numpy without a 64-bit-integer OpenBLAS (logged once). OpenBLAS runs its own thread pool,
the one numpy's matmul uses (`threads()`).
"""
import ctypes
import functools
import glob
import logging
import os

import numpy as np

from .kernel import GEMMS

log = logging.getLogger("ndlc.blas")
SYMBOLS = {dtype: f"ndlc_{routine}" for dtype, routine in GEMMS.items()}
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enum values
# (single, double) precision CBLAS gemm, and the thread count, exported with 64-bit integers by
# numpy 2.x, then 1.x wheels
_EXPORTS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "scipy_openblas_get_num_threads64_"),
            ("cblas_sgemm64_", "cblas_dgemm64_", "openblas_get_num_threads64_"))


def available() -> bool:
    """Whether numpy's OpenBLAS gemm was found in this process."""
    return bool(_functions())


def enabled() -> bool:
    """Whether matmuls should call BLAS: NDLC_BLAS is not '0' and numpy's OpenBLAS was found."""
    return os.environ.get("NDLC_BLAS", "1") != "0" and available()


def threads() -> int:
    """How many threads OpenBLAS runs a call on now (1 where it was not found)."""
    functions = _functions()
    return functions[-1]() if functions else 1


def register(llvm):
    """Bind the gemm symbols in llvmlite.binding `llvm`'s process-wide symbol table."""
    for dtype, fn in zip(GEMMS, _functions()):
        llvm.add_symbol(SYMBOLS[dtype], ctypes.cast(fn, ctypes.c_void_p).value)


@functools.lru_cache(maxsize=None)
def _functions() -> tuple:
    """numpy's OpenBLAS sgemm, dgemm and thread count functions (ctypes); () where none is found."""
    for path in _libraries():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for exports in _EXPORTS:
            if all(hasattr(library, name) for name in exports):
                log.debug("BLAS gemm from %s (%s)", path, ", ".join(exports))
                return tuple(getattr(library, name) for name in exports)
    log.warning("numpy ships no OpenBLAS with 64-bit-integer CBLAS gemm here; compiled matmuls "
                "run as loop nests (correct, slower)")
    return ()


def _libraries():
    """Paths of the OpenBLAS libraries bundled in numpy's wheel (Linux, then macOS layout)."""
    root = os.path.dirname(np.__file__)
    patterns = (root + ".libs/*openblas*", os.path.join(root, ".dylibs", "*openblas*"))
    return sorted(path for pattern in patterns for path in glob.glob(pattern))
