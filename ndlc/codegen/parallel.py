"""Large kernels on all cores through OpenMP's runtime (libgomp): which kernels split, and how many threads.

A kernel whose `work` (iterations times body cost) reaches THRESHOLD runs one non-reduced loop (the
outermost with at least as many iterations as threads, else the longest) cut into contiguous
ranges, one per thread, inside one `GOMP_parallel` call from the entry point (codegen/llvm.py).
Each output element is computed by one thread in the serial order, so results equal the serial
code's bit for bit. Gemm kernels stay serial (OpenBLAS runs its own threads), as do kernels
without a non-reduced loop (full reductions) and small ones; the kernel dump says which and why.
A program that calls a multi-threaded OpenBLAS keeps all its kernels serial: OpenBLAS's idle
workers spin on the cores ~0.1 s after each call and libgomp's spin a while after each region, so
the two pools slow each other (measured on 2 cores: MLP step 10.6 ms serial, 11.0 threaded with
OMP_WAIT_POLICY=passive, 65 ms with libgomp's default spinning).

NDLC_THREADS sets the thread count; by default libgomp's (`omp_get_max_threads`: OMP_NUM_THREADS,
else the CPUs this process may use). 1 generates serial code, as does a missing libgomp (logged
once). Generated code calls libgomp's functions by name; `register()` binds the names to the
library loaded here before native code is loaded, so object code cached on disk links in any
process. The count is a constant in the LLVM IR, hence part of the cache key.
"""
import ctypes
import ctypes.util
import functools
import logging
import math
import os

from ..ir.errors import NdlcError
from . import blas
from .kernel import ACC, OP_COSTS, Program, Split

log = logging.getLogger("ndlc.parallel")
SYMBOLS = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
# Work from which 2 threads beat 1 (measured, 2 cores: x+y breaks even near 2**16, x+y, exp(x)*y and
# row sums are 10-15% faster at 2**17; a region costs ~2 us with libgomp's default spin-waiting)
THRESHOLD = 1 << 17


class ThreadsError(NdlcError, ValueError):
    """NDLC_THREADS is not a positive integer."""


def threads() -> int:
    """Threads large kernels run on: NDLC_THREADS, else libgomp's default; 1 without libgomp."""
    text = os.environ.get("NDLC_THREADS", "").strip()
    if text and (not text.isdigit() or int(text) < 1):
        raise ThreadsError(f"NDLC_THREADS must be a positive integer, not {text!r}")
    if text == "1" or _library() is None:
        return 1
    return int(text) if text else max(1, _library().omp_get_max_threads())


def parallelise(program: Program, count=None) -> Program:
    """Marks each kernel of `program` with the loop it splits over `count` threads (default:
    threads()), or why it runs serially; returns the program."""
    count = threads() if count is None else count
    beside_blas = any(kernel.gemm for kernel in program.kernels) and blas.threads() > 1
    for kernel in program.kernels:
        kernel.split, kernel.serial_why = None, _serial_why(kernel, count, beside_blas)
        if not kernel.serial_why:
            kept = kernel.kept_extents
            longest = kept.index(max(kept))
            loop = next((i for i, n in enumerate(kept) if n >= count), longest)
            kernel.split = Split(loop, min(count, kept[loop]))
    return program


def work(kernel) -> int:
    """Estimated cost of a loop-nest kernel: iterations times body cost, plus per output element
    the epilogue's cost and a store."""
    body = math.prod(kernel.extents) * _cost(kernel.body)
    return body + math.prod(kernel.kept_extents) * (1 + (_cost(kernel.epilogue) if kernel.epilogue else 0))


def register(llvm):
    """Bind libgomp's SYMBOLS in llvmlite.binding `llvm`'s process-wide symbol table (if loaded)."""
    library = _library()
    if library is not None:
        for name in SYMBOLS:
            llvm.add_symbol(name, ctypes.cast(getattr(library, name), ctypes.c_void_p).value)


def _serial_why(kernel, count, beside_blas):
    if count == 1:
        return "one thread (NDLC_THREADS=1 or no libgomp)"
    if kernel.gemm is not None:
        return "a BLAS call (OpenBLAS runs its own threads)"
    if beside_blas:
        return "the program calls OpenBLAS, whose idle threads keep the cores busy"
    if max(kernel.kept_extents, default=1) == 1:
        return "no non-reduced loop to split"
    if work(kernel) < THRESHOLD:
        return f"too small (work {work(kernel)} < {THRESHOLD})"
    return ""


def _cost(expr):
    """Loads and operations of a scalar expression, shared nodes once, OP_COSTS weighing ops."""
    seen, total, stack = set(), 0, [expr]
    while stack:
        e = stack.pop()
        if id(e) not in seen:
            seen.add(id(e))
            if e.prim == "arg":
                total += e.payload != ACC
            elif e.prim != "const":
                total += OP_COSTS.get(e.prim, 1)
            stack.extend(e.args)
    return total


@functools.lru_cache(maxsize=None)
def _library():
    """libgomp loaded with ctypes, or None where it cannot be (logged once)."""
    for name in _candidates():
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        if all(hasattr(library, symbol) for symbol in SYMBOLS + ("omp_get_max_threads",)):
            log.debug("OpenMP runtime from %s", name)
            return library
    log.warning("libgomp (OpenMP's runtime, shipped with gcc) cannot be loaded here; compiled kernels "
                "run on one thread (correct, slower on large inputs)")
    return None


def _candidates():
    yield "libgomp.so.1"
    found = ctypes.util.find_library("gomp")  # slower (runs ldconfig or the compiler): second
    if found:
        yield found
