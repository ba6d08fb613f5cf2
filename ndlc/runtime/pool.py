"""ndlc's own thread team in this process (codegen/llvm_pool.py says why not libgomp's): its
native code compiled once per machine (runtime/machine.py), linked by `ld` into a shared
library that a later process loads without llvmlite (else run by an MCJIT engine), loaded once
and kept for the process's life (its workers run it); the workers started as the team grows (`grow`), none in a
forked child until it needs them."""
import ctypes
import functools
import logging
import os
import platform
import signal
import threading

from ..codegen.llvm_pool import FIELDS, FUNCTIONS, STATE, WORDS, pool_module
from . import libraries, shared

log = logging.getLogger("ndlc.pool")
_workers = [0]  # worker threads started in this process
_growing = [threading.Lock()]  # held while workers start (made anew in a forked child)


def bind():
    """The pool loaded (once) and its functions handed to libraries.imported(), which binds them
    to generated code's calls; nothing where the team does not run (libraries.threads() is 1)."""
    if not libraries.team_runs():
        return
    functions, _, _ = _loaded()
    libraries.provide(functions, grow)


def grow(workers):
    """At least `workers` worker threads started (a team of workers + 1 with the caller). They take
    no signals (Python handles its signals on its own threads) and are never joined: they sleep
    on a futex between regions, and end with the process."""
    if _workers[0] >= workers:
        return
    functions, _, _ = _loaded()
    libc = ctypes.CDLL(None)
    libc.pthread_create.argtypes = [ctypes.POINTER(ctypes.c_ulong), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    libc.pthread_detach.argtypes = [ctypes.c_ulong]
    with _growing[0]:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            while _workers[0] < workers:
                handle = ctypes.c_ulong()
                error = libc.pthread_create(ctypes.byref(handle), None, functions["ndlc_pool_worker"], None)
                if error:
                    log.warning("cannot start a thread of ndlc's team (%s): split kernels run on %d threads",
                                os.strerror(error), _workers[0] + 1)
                    return
                libc.pthread_detach(handle)
                _workers[0] += 1
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def counts() -> dict:
    """The pool's counts so far: `regions` run on more than one thread, of them `joined` by a
    worker (ran its pieces), `late`: a worker arrived after its region had closed, and `crowded_joins`:
    a worker joined a region on its caller's core (codegen/llvm_pool.py: it gives its pieces back,
    and neither thread spins), `moves`: a
    worker moved off its caller's core, the machine otherwise idle."""
    _, state, _ = _loaded()
    return {name: ctypes.c_int64.from_address(state + 8 * FIELDS[name]).value
            for name in ("regions", "joined", "late", "crowded_joins", "moves")}


def workers() -> int:
    """How many worker threads this process started."""
    return _workers[0]


@functools.lru_cache(maxsize=None)
def _loaded():
    """(function name -> address, the state's address, the library or engine that holds them:
    kept, never unloaded)."""
    native = shared.machine_library("pool", pool_module(platform.machine()), "ndlc's thread team")
    functions = {name: shared.symbol(native, name) for name in FUNCTIONS}
    return functions, shared.symbol(native, STATE, function=False), native


def _forked():
    """In a forked child: no worker runs, no region is open; workers start again when needed."""
    if _loaded.cache_info().currsize:
        ctypes.memset(_loaded()[1], 0, 8 * WORDS)
    _workers[0] = 0
    _growing[0] = threading.Lock()
    libraries.set_team(1)


os.register_at_fork(after_in_child=_forked)
