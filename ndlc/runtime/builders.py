"""Modules compiled by this process and processes forked from it (runtime/native.py: a program's
new kernels when they are many): llvmlite holds one lock around every call into LLVM, so threads
would take turns, while forked builders run LLVM side by side on the thread budget.
Plain `os.fork` and pipes, not multiprocessing: its shared counter, queue and process objects
cost the compiling process 4-6 ms of CPU before its first module (importing sharedctypes, heap,
synchronize and queues on first use), and each builder a feeder thread."""
import logging
import os
import pickle
import select
import signal
import struct

from ..errors import NdlcError
from . import libraries

log = logging.getLogger("ndlc.native")
_INDEX = struct.Struct("<i")  # a job's index in the job pipe


def built_in_processes(build, jobs, builders, store) -> list:
    """`build(job)` of each of `jobs` (whose [1] names its module), by this process and `builders`
    - 1 processes forked from it, all taking jobs in order from one pipe holding every job's
    index (`_taken`): a builder that finishes early takes the next job, so the modules' measured
    cost, not their number, is what is shared. Forked before this process calls LLVM (a fork
    inherits llvmlite's lock as it is). `store(job, result)` (the disk cache's writes) runs in the
    process that built the job, once its results are handed over: a forked builder's while this
    process stores its own or loads the code, not after the last builder, on the critical path."""
    taken, ready = os.pipe()
    os.write(ready, b"".join(_INDEX.pack(index) for index in range(len(jobs))))  # a few bytes: never blocks
    os.close(ready)  # the last index read, a read finds the pipe's end
    children = {}  # pid -> the read end of its results' pipe
    try:
        with _llvm_calls():  # no other thread inside LLVM while forking: a builder would inherit llvmlite's
            for _ in range(builders - 1):  # lock held by a thread it does not have, and wait for it forever
                results, written = os.pipe()
                try:
                    pid = os.fork()
                except OSError:  # no process to be had: the error, no pipe left open
                    os.close(results)
                    os.close(written)
                    raise
                if pid == 0:
                    os.close(results)
                    _builder(build, store, taken, jobs, written)
                children[pid] = results
                os.close(written)
        libraries.restart_blas_pool()  # the forks shut OpenBLAS's threads down here too
        log.info("building and optimising %d modules in %d processes", len(jobs), builders)
        done = {index: build(jobs[index]) for index in _taken(taken, len(jobs))}
        building = _handing_over(children.values()) < len(children)  # a builder has not handed its results
        if building:  # over: this process stores its own while it waits, else once it has them (they store theirs)
            _stored(store, jobs, done)
        handed = {}  # pid -> its results, read whole
        for pid, results in children.items():
            children[pid] = None  # closed by _read
            handed[pid] = _read(results)
        if not building:
            _stored(store, jobs, done)
        while children:
            pid, _ = children.popitem()
            done.update(_received(pid, handed[pid], jobs))
    finally:
        os.close(taken)
        for pid, results in children.items():  # this process failed first: the others are not waited for
            if results is not None:
                os.close(results)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return [done[index] for index in range(len(jobs))]


def _handing_over(pipes) -> int:
    """How many of the results' `pipes` have something to read or are closed (poll, not select:
    a descriptor past 1023 is fine)."""
    poller = select.poll()
    for pipe in pipes:
        poller.register(pipe, select.POLLIN)
    return len(poller.poll(0))


def _stored(store, jobs, done):
    """`store` of each job's result in `done` ({index: result})."""
    for index, result in done.items():
        store(jobs[index], result)


def _read(results) -> list:
    """The chunks read from pipe `results` to its end (closed)."""
    chunks = []
    try:
        while chunk := os.read(results, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(results)
    return chunks


def _received(pid, chunks, jobs) -> dict:
    """{index: result} of the jobs forked builder `pid` did, from `chunks` (its pipe's, `_read`),
    once it has ended (its stores done); an error naming the module where one failed, or where
    it died before handing its results over."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code or not chunks:
        raise NdlcError(f"a process compiling native code ended (exit code {code}) before its modules were done")
    done = pickle.loads(b"".join(chunks))
    for index, result in done.items():
        if isinstance(result, str):
            raise NdlcError(f"compiling module {jobs[index][1]!r} failed in a forked process: {result}")
    return done


def _llvm_calls():
    """llvmlite's lock around every call into LLVM (the lock of its library's functions): held while
    forking, so that no thread of this process is inside LLVM then. A program cache's writer thread
    (program_cache.save) links and compiles while the next program forks its builders: a builder once
    hung on the lock it inherited, held (the module fuzzer of tests/test_op_input_fuzz.py)."""
    from llvmlite.binding import ffi
    return ffi.lib._lock


def _builder(build, store, taken, jobs, written):
    """A forked builder (the program is its parent's, as it was at the fork): `build` of each job
    it takes, or the error's text where one fails (it takes no more then), all written to the
    pipe `written` when no job is left (written as they finish, a result larger than the pipe
    would wait for its reader, busy building), then, the pipe closed, `store` of each job built
    (a failure logged: the parent has the code); it ends without Python's exit handlers, which
    are its parent's."""
    code = 0
    try:
        done = {}
        for index in _taken(taken, len(jobs)):
            try:
                done[index] = build(jobs[index])
            except Exception as e:  # the parent raises it, naming the module
                done[index] = f"{type(e).__name__}: {e}"
                break
        data = memoryview(pickle.dumps(done, pickle.HIGHEST_PROTOCOL))
        while data:
            data = data[os.write(written, data):]
        os.close(written)
        for index, result in done.items():
            if not isinstance(result, str):
                try:
                    store(jobs[index], result)
                except Exception:  # the parent holds the code: it runs, compiled again next time
                    log.warning("cannot store module %r in the disk cache", jobs[index][1], exc_info=True)
    except BaseException:  # noqa: B036 (the parent reports the exit code)
        code = 1
    finally:
        os._exit(code)


def _taken(taken, count):
    """The job indices this process takes from the pipe `taken` (a read of a few bytes from a
    pipe is atomic), until it is empty or `count` are taken."""
    for _ in range(count):
        data = os.read(taken, _INDEX.size)
        if not data:
            return
        yield _INDEX.unpack(data)[0]
