"""The native libraries compiled code calls, found and loaded at run time: the gemm of the OpenBLAS
bundled with numpy, and ndlc's own thread team (runtime/pool.py).

Generated code calls them by name, never by address (`ndlc_sgemm`/`ndlc_dgemm`: CBLAS gemm with
64-bit integers; the team's `ndlc_parallel`, `ndlc_wait` and `ndlc_done`):
`register()` binds the names in LLVM's symbol table before native code is loaded, so object code
cached on disk links in any process. The pipeline asks here what the machine offers
(`blas_enabled()`, `threads()`, `blas_core()`) and passes it to the passes as plain options.
`check_gemms` refuses, before any native code runs, a program whose BLAS call disagrees with its
buffers' dtypes or sizes (a compiler bug becomes an error, never a write past a buffer).
NDLC_BLAS=0 turns BLAS off (matmul lowers to a loop nest), as does a numpy without a
64-bit-integer OpenBLAS (logged once).

One thread budget (NDLC_THREADS, env.thread_budget): `threads()` sizes ndlc's own team and holds
numpy's OpenBLAS to the same count the first time it is read (lowering it, never raising it past
where OpenBLAS stood), so at 1 exactly one thread works, and numpy's matmuls in the same process
(eager execution) stay within it. OpenBLAS is reached through the symbols of the very library whose
gemm ndlc calls (`scipy_openblas_set_num_threads64_` in numpy 2's scipy-openblas64, the unprefixed
name in numpy 1's), so no other copy in the process is touched and no dependency is needed.
Inside a compiled program every gemm runs on its calling thread (`single_threaded_blas`): ndlc
splits the rows itself (passes/schedule.py), where OpenBLAS's own threads would sum differently.
How many threads split kernels run on is the i32 `ndlc_team` bound here (`set_team`; runtime/team.py
chooses it per call): MCJIT's code reads this module's; a shared library (runtime/shared.py)
defines its own, which `bind_team` adds to those `set_team` writes.
"""
import ctypes
import functools
import glob
import logging
import os
import platform
import sys

import numpy as np

from ..env import ThreadsError, flag, thread_budget  # noqa: F401 (threads() raises ThreadsError)
from ..errors import VerifyError
from ..ir.kernel import GEMMS, TEAM, gemm_symbol
from ..ir.kernel_verifier import gemm_problem
from ..codegen.llvm_pool import FUNCTIONS, runs_on

log = logging.getLogger("ndlc.libraries")
TEAM_SYMBOLS = FUNCTIONS[:3]  # ndlc_parallel, ndlc_wait, ndlc_done (codegen/llvm_pool.py)
IMPORTED = (*(gemm_symbol(dtype) for dtype in GEMMS), *TEAM_SYMBOLS)  # the functions generated code calls
# (single, double) precision CBLAS gemm, then the get/set thread count functions, exported with
# 64-bit integers by numpy 2.x, then 1.x wheels
_BLAS_EXPORTS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "scipy_openblas_get_num_threads64_",
                  "scipy_openblas_set_num_threads64_"),
                 ("cblas_sgemm64_", "cblas_dgemm64_", "openblas_get_num_threads64_",
                  "openblas_set_num_threads64_"))
_CORE_EXPORTS = ("scipy_openblas_get_corename64_", "openblas_get_corename64_")  # the core its kernels are for
_held = {}  # "budget": the budget OpenBLAS was last held to
_team = ctypes.c_int32(1)  # TEAM: how many threads split kernels run on now (set before each call)
_teams = [_team]  # every TEAM native code reads: MCJIT's (_team), each loaded shared library's
_pool = {}  # "functions": the team's (name -> address), "grow": starts its workers (runtime/pool.py: provide)


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


def blas_core() -> str:
    """The core numpy's OpenBLAS chose its kernels for, lowercase ('skylakex', 'haswell'), '' where none
    was found or it does not say: where a gemm may be cut into row pieces that keep one call's bits
    depends on it (passes/gemm_pieces.py)."""
    functions = _blas()
    if not functions or functions[4] is None:
        return ""
    functions[4].restype = ctypes.c_char_p
    return (functions[4]() or b"").decode(errors="replace").strip().lower()


def single_threaded_blas(fn, *args):
    """fn(*args) with OpenBLAS held to one thread meanwhile (the budget's count restored after):
    a compiled program's gemms run on the threads ndlc gives them, each on one core, split at row
    boundaries that keep OpenBLAS's summation order (OpenBLAS's own threads split it differently).
    A call rather than a context manager: it wraps every run of a program that calls BLAS, and
    contextlib's three Python frames were more than its own."""
    functions = _blas()
    before = functions[2]() if functions else 1
    if before > 1:
        functions[3](1)
    try:
        return fn(*args)
    finally:
        if before > 1:
            functions[3](before)


def restart_blas_pool():
    """Start OpenBLAS's threads again now. Its fork handler shuts them down in the forking process
    too, and the next call that sets its thread count (every compiled run's, after the run) starts
    new ones that busy-wait ~0.1 s for work before sleeping: started right after forking compiling
    workers, that wait overlaps compilation instead of the first steps (where it took the second
    core from a 2-thread MLP step once or twice: 5 -> 50 ms)."""
    functions = _blas()
    if functions:
        functions[3](functions[2]())


def threads() -> int:
    """Threads ndlc's large kernels run on: the budget (NDLC_THREADS, else the cores this process
    may use), 1 where ndlc's team does not run (codegen/llvm_pool.py: Linux on x86-64 or AArch64);
    numpy's OpenBLAS is held to the budget too (`_hold_blas`)."""
    budget = thread_budget()
    _hold_blas(budget)
    if budget == 1 or team_runs():
        return budget
    _say_serial()
    return 1


def team_runs() -> bool:
    """Whether ndlc's thread team runs on this system (codegen/llvm_pool.py: runs_on)."""
    return runs_on(sys.platform, platform.machine())


@functools.lru_cache(maxsize=None)
def _say_serial():
    log.warning("ndlc's thread team does not run on %s %s: compiled kernels run on one thread (correct, "
                "slower on large inputs)", sys.platform, platform.machine())


def set_team(count):
    """Split kernels run on `count` threads from now on (each at most on those it was scheduled for)."""
    if count != _team.value:
        for cell in _teams:
            cell.value = count
        if count > 1 and _pool:
            _pool["grow"](count - 1)


def provide(functions, grow):
    """The team's functions (name -> address) for imported(), and `grow(workers)`, which starts
    its workers (runtime/pool.py binds them before native code loads)."""
    _pool.update(functions=functions, grow=grow)
    if _team.value > 1:
        grow(_team.value - 1)


def bind_team(cell):
    """`cell` (a ctypes i32: a shared library's TEAM) is set with the others from now on."""
    cell.value = _team.value
    if all(ctypes.addressof(cell) != ctypes.addressof(bound) for bound in _teams):
        _teams.append(cell)


def team() -> int:
    """How many threads split kernels run on now."""
    return _team.value


def _hold_blas(budget):
    """OpenBLAS's thread count set to `budget` when the budget changed (not on every read: that
    would undo the user's own later setting), never above its count before ndlc touched it
    (OPENBLAS_NUM_THREADS)."""
    functions = _blas()
    if functions and _held.get("budget") != budget:
        functions[3](min(budget, _blas_default()))
    _held["budget"] = budget


@functools.lru_cache(maxsize=None)
def _blas_default() -> int:
    """OpenBLAS's thread count before ndlc first changed it."""
    functions = _blas()
    return functions[2]() if functions else 1


def check_gemms(program):
    """Raise VerifyError naming the kernel whose BLAS call does not fit its buffers (gemm_problem);
    a loop over the kernels, so it runs for every program, verified or not."""
    for kernel in program.kernels:
        problem = kernel.gemm and gemm_problem(kernel, program.buffers)
        if problem:
            raise VerifyError(f"@{program.name}: kernel {kernel.name}: {problem} (a compiler bug, "
                              "refused before any native code runs)")


def register(llvm):
    """Bind the gemm and team symbols and the team i32 in llvmlite.binding `llvm`'s process-wide
    symbol table."""
    llvm.add_symbol(TEAM, ctypes.addressof(_team))
    for name, address in imported().items():
        llvm.add_symbol(name, address)


def imported() -> dict:
    """The address of each of IMPORTED that this process has: the gemms where numpy's OpenBLAS
    was found, the team's functions once runtime/pool.py provided them."""
    functions = dict(zip((gemm_symbol(dtype) for dtype in GEMMS), _blas()[:2]))
    addresses = {name: ctypes.cast(fn, ctypes.c_void_p).value for name, fn in functions.items()}
    return {**addresses, **{name: _pool["functions"][name] for name in TEAM_SYMBOLS if _pool}}


@functools.lru_cache(maxsize=None)
def _blas() -> tuple:
    """numpy's OpenBLAS sgemm, dgemm, thread count functions and core name function (None where it has
    none) (ctypes); () where none is found."""
    for path in _blas_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for exports in _BLAS_EXPORTS:
            if all(hasattr(library, name) for name in exports):
                log.debug("BLAS gemm from %s (%s)", path, ", ".join(exports))
                core = next((getattr(library, name) for name in _CORE_EXPORTS if hasattr(library, name)), None)
                return (*(getattr(library, name) for name in exports), core)
    log.warning("numpy ships no OpenBLAS with 64-bit-integer CBLAS gemm here; compiled matmuls "
                "run as loop nests (correct, slower)")
    return ()


def _blas_paths():
    """Paths of the OpenBLAS libraries bundled in numpy's wheel (Linux, then macOS layout)."""
    root = os.path.dirname(np.__file__)
    patterns = (root + ".libs/*openblas*", os.path.join(root, ".dylibs", "*openblas*"))
    return sorted(path for pattern in patterns for path in glob.glob(pattern))
