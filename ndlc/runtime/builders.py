"""Modules compiled by this process and processes forked from it (runtime/native.py: a program's
new kernels when they are many): llvmlite holds one lock around every call into LLVM, so threads
would take turns, while forked builders run LLVM side by side on the thread budget."""
import logging
import multiprocessing
import queue

from ..errors import NdlcError
from . import libraries

log = logging.getLogger("ndlc.native")
POLL = 0.5  # seconds between checks that the forked builders are alive


def built_in_processes(build, jobs, builders) -> list:
    """`build(job)` of each of `jobs` (whose [1] names its module), by this process and `builders`
    - 1 processes forked from it, all taking jobs in order from a shared counter: a builder that
    finishes early takes the next job, so the modules' measured cost, not their number, is what
    is shared. Forked before this process calls LLVM (a fork inherits llvmlite's lock as it is)."""
    context = multiprocessing.get_context("fork")
    taken, finished = context.Value("i", 0), context.Queue()  # a queue: a builder never waits for its reader
    others = [context.Process(target=_builder, args=(build, taken, jobs, finished), daemon=True)
              for _ in range(builders - 1)]
    with _llvm_calls():  # no other thread inside LLVM while forking: a builder would inherit llvmlite's
        for process in others:  # lock held by a thread it does not have, and wait for it forever
            process.start()
    libraries.restart_blas_pool()  # the forks shut OpenBLAS's threads down here too
    log.info("building and optimising %d modules in %d processes", len(jobs), builders)
    results = {}
    try:
        for index in _taken(taken, len(jobs)):
            results[index] = build(jobs[index])
        while len(results) < len(jobs):
            index, result = _finished(finished, others)
            if isinstance(result, str):
                raise NdlcError(f"compiling module {jobs[index][1]!r} failed in a forked process: {result}")
            results[index] = result
    finally:
        for process in others:
            if len(results) < len(jobs):
                process.terminate()
            process.join()
    return [results[index] for index in range(len(jobs))]


def _finished(finished, others):
    """The next (index, result) a forked builder put on `finished`; an error where one died, or
    all ended, instead."""
    ended = False
    while True:
        try:
            return finished.get(timeout=POLL)
        except queue.Empty:
            codes = [p.exitcode for p in others]
            failed = [code for code in codes if code not in (None, 0)]
            if failed or ended:
                raise NdlcError(f"a process compiling native code ended (exit code {(failed or codes)[0]}) "
                                f"before its modules were done") from None
            ended = None not in codes  # all ended: what they put is read within one more wait


def _llvm_calls():
    """llvmlite's lock around every call into LLVM (the lock of its library's functions): held while
    forking, so that no thread of this process is inside LLVM then. A program cache's writer thread
    (program_cache.save) links and compiles while the next program forks its builders: a builder once
    hung on the lock it inherited, held (the module fuzzer of tests/test_op_input_fuzz.py)."""
    from llvmlite.binding import ffi
    return ffi.lib._lock


def _builder(build, taken, jobs, finished):
    """A forked builder (the program is its parent's, as it was at the fork): `build` of each
    job it takes, put on `finished` as (index, result), or (index, the error's text) where one fails."""
    for index in _taken(taken, len(jobs)):
        try:
            finished.put((index, build(jobs[index])))
        except Exception as e:  # the parent raises it, naming the module
            finished.put((index, f"{type(e).__name__}: {e}"))
            return


def _taken(taken, count):
    """The job indices this process takes from the shared counter `taken`, until `count`."""
    while True:
        with taken.get_lock():
            index = taken.value
            taken.value += 1
        if index >= count:
            return
        yield index
