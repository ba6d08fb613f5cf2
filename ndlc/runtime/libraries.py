"""The native libraries compiled code calls, found and loaded at run time: the gemm of the OpenBLAS
bundled with numpy, and OpenMP's runtime (libgomp).

Generated code calls them by name, never by address (`ndlc_sgemm`/`ndlc_dgemm`: CBLAS gemm with
64-bit integers; libgomp's `GOMP_parallel`, `omp_get_thread_num`, `omp_get_num_threads`):
`register()` binds the names in LLVM's symbol table before native code is loaded, so object code
cached on disk links in any process. The pipeline asks here what the machine offers
(`blas_enabled()`, `threads()`) and passes it to the passes as plain options; a threaded program
holds OpenBLAS to one thread while it runs (`single_threaded_blas`).
`check_gemms` refuses, before any native code runs, a program whose BLAS call disagrees with its
buffers' dtypes or sizes (a compiler bug becomes an error, never a write past a buffer).
NDLC_BLAS=0 turns BLAS off (matmul lowers to a loop nest), as does a numpy without a
64-bit-integer OpenBLAS (logged once); NDLC_THREADS sets the thread count of ndlc's own kernels.
"""
import contextlib
import ctypes
import ctypes.util
import functools
import glob
import logging
import os

import numpy as np

from ..env import flag
from ..errors import NdlcError, VerifyError
from ..ir.kernel import GEMMS, gemm_symbol
from ..ir.kernel_verifier import gemm_problem

log = logging.getLogger("ndlc.libraries")
OPENMP_SYMBOLS = ("GOMP_parallel", "GOMP_barrier", "omp_get_thread_num", "omp_get_num_threads")
# (single, double) precision CBLAS gemm, then the get/set thread count functions, exported with
# 64-bit integers by numpy 2.x, then 1.x wheels
_BLAS_EXPORTS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "scipy_openblas_get_num_threads64_",
                  "scipy_openblas_set_num_threads64_"),
                 ("cblas_sgemm64_", "cblas_dgemm64_", "openblas_get_num_threads64_",
                  "openblas_set_num_threads64_"))


class ThreadsError(NdlcError, ValueError):
    """NDLC_THREADS is not a positive integer."""


def blas_available() -> bool:
    """Whether numpy's OpenBLAS gemm was found in this process."""
    return bool(_blas())


def blas_enabled() -> bool:
    """Whether matmuls should call BLAS: NDLC_BLAS is not '0' and numpy's OpenBLAS was found."""
    return flag("NDLC_BLAS", default=True) and blas_available()


def blas_threads() -> int:
    """How many threads OpenBLAS runs a call on now (1 where it was not found)."""
    functions = _blas()
    return functions[2]() if functions else 1


@contextlib.contextmanager
def single_threaded_blas():
    """OpenBLAS held to one thread meanwhile (numpy's count restored after): compiled programs that
    run on several threads split their gemms themselves, one pool for the whole program."""
    functions = _blas()
    before = functions[2]() if functions else 1
    if before > 1:
        functions[3](1)
    try:
        yield
    finally:
        if before > 1:
            functions[3](before)


def set_blas_threads(count):
    """Hold numpy's OpenBLAS to `count` threads from now on (where numpy bundles OpenBLAS): the
    processes of a distributed job on one machine share its cores."""
    functions = _blas()
    if functions:
        functions[3](count)


def threads() -> int:
    """Threads ndlc's large kernels run on: NDLC_THREADS, else libgomp's default; 1 without libgomp."""
    text = os.environ.get("NDLC_THREADS", "").strip()
    if text and (not text.isdigit() or int(text) < 1):
        raise ThreadsError(f"NDLC_THREADS must be a positive integer, not {text!r}")
    if text == "1" or _openmp() is None:
        return 1
    return int(text) if text else max(1, _openmp().omp_get_max_threads())


def check_gemms(program):
    """Raise VerifyError naming the kernel whose BLAS call does not fit its buffers (gemm_problem);
    a loop over the kernels, so it runs for every program, verified or not."""
    for kernel in program.kernels:
        problem = kernel.gemm and gemm_problem(kernel, program.buffers)
        if problem:
            raise VerifyError(f"@{program.name}: kernel {kernel.name}: {problem} (a compiler bug, "
                              "refused before any native code runs)")


def register(llvm):
    """Bind the gemm and libgomp symbols in llvmlite.binding `llvm`'s process-wide symbol table."""
    for dtype, fn in zip(GEMMS, _blas()[:2]):
        llvm.add_symbol(gemm_symbol(dtype), ctypes.cast(fn, ctypes.c_void_p).value)
    library = _openmp()
    if library is not None:
        for name in OPENMP_SYMBOLS:
            llvm.add_symbol(name, ctypes.cast(getattr(library, name), ctypes.c_void_p).value)


@functools.lru_cache(maxsize=None)
def _blas() -> tuple:
    """numpy's OpenBLAS sgemm, dgemm and thread count functions (ctypes); () where none is found."""
    for path in _blas_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for exports in _BLAS_EXPORTS:
            if all(hasattr(library, name) for name in exports):
                log.debug("BLAS gemm from %s (%s)", path, ", ".join(exports))
                return tuple(getattr(library, name) for name in exports)
    log.warning("numpy ships no OpenBLAS with 64-bit-integer CBLAS gemm here; compiled matmuls "
                "run as loop nests (correct, slower)")
    return ()


def _blas_paths():
    """Paths of the OpenBLAS libraries bundled in numpy's wheel (Linux, then macOS layout)."""
    root = os.path.dirname(np.__file__)
    patterns = (root + ".libs/*openblas*", os.path.join(root, ".dylibs", "*openblas*"))
    return sorted(path for pattern in patterns for path in glob.glob(pattern))


@functools.lru_cache(maxsize=None)
def _openmp():
    """libgomp loaded with ctypes, or None where it cannot be (logged once)."""
    for name in _openmp_candidates():
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        if all(hasattr(library, symbol) for symbol in OPENMP_SYMBOLS + ("omp_get_max_threads",)):
            log.debug("OpenMP runtime from %s", name)
            return library
    log.warning("libgomp (OpenMP's runtime, shipped with gcc) cannot be loaded here; compiled kernels "
                "run on one thread (correct, slower on large inputs)")
    return None


def _openmp_candidates():
    yield "libgomp.so.1"
    found = ctypes.util.find_library("gomp")  # slower (runs ldconfig or the compiler): second
    if found:
        yield found
