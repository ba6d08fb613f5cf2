"""ndlc's own thread team (runtime/pool.py, codegen/llvm_pool.py): a call does not wait for a
worker that lost its core, a worker on its caller's core neither spins nor is spun for, callers on several Python threads share the team, a forked child
starts workers of its own, the pool's IR is valid on every machine it runs on, and it reads the
machine's runnable threads (whether a crowded worker may move off its caller's core) from /proc/loadavg."""
import ctypes
import json
import os
import platform
import subprocess
import sys
import threading

import numpy as np
import pytest

from ndlc.codegen.llvm_pool import FUTEX, pool_module, runs_on
from ndlc.ir import parse
from ndlc.jit.compile import compile_graph
from ndlc.runtime import libraries, pool

needs_team = pytest.mark.skipif(not libraries.team_runs(), reason="ndlc's thread team does not run here")
BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")
TICK = 8e-3  # the stall of issue 20: a call waiting a scheduler tick or two (8 or 16 ms) for a worker

STARVED_SCRIPT = """
import json, os, sys
os.environ.update(NDLC_THREADS="2", NDLC_TEAM="budget", NDLC_PROGRAM_CACHE="0")
sys.path.insert(0, {benchmarks!r})
import spread
from ndlc.runtime import pool
program, x = spread.starved_program()
samples = []  # every 997th element of each result: from both threads' pieces, and cheap to keep
run = lambda: samples.append(program.run(x)[0].reshape(-1)[::997].tobytes().hex())
seconds = spread.starved(run, 40)
counts = pool.counts()
program.team.current = 1
run()
print(json.dumps(dict(seconds=seconds, counts=counts, samples=samples)))
"""


@needs_team
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_a_call_does_not_wait_for_a_worker_that_lost_its_core():
    done = subprocess.run([sys.executable, "-c", STARVED_SCRIPT.format(benchmarks=BENCHMARKS)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    counts, seconds = result["counts"], sorted(result["seconds"])
    assert counts["regions"] == 41  # the first call and the 40 timed: each one region on 2 threads
    assert seconds[len(seconds) // 2] < TICK  # no call waited for the worker (libgomp: ~0.7 s a call)
    assert len(set(result["samples"])) == 1  # the same bits as on one thread, whoever ran the pieces
    if counts["joined"] == counts["regions"]:  # (seen on Linux's EEVDF scheduler in a 2-core VM)
        pytest.skip("the worker at SCHED_IDLE beside a busy process joined every region: the scheduler "
                    "gave it its core, so no call had a worker to wait for")


ONE_CORE_SCRIPT = """
import json, os, sys, threading
os.environ.update(NDLC_THREADS="2", NDLC_TEAM="budget", NDLC_PROGRAM_CACHE="0")
sys.path.insert(0, {benchmarks!r})
os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})  # the worker, started later, inherits it
import spread
from ndlc.runtime import pool
program, x = spread.starved_program()
before = spread.tasks()
expected = program.run(x)[0].reshape(-1)[::997].tobytes()  # from both threads' pieces, and cheap
(worker,) = spread.tasks() - before
caller = threading.get_native_id()


def ran(task):  # nanoseconds the thread ran on a core (not counting the time it waited for one)
    with open(f"/proc/self/task/{{task}}/schedstat") as f:
        return int(f.read().split()[0])


def calls(team):
    program.team.current = team
    start, crowded = [ran(caller), ran(worker)], pool.counts()["crowded_joins"]
    results = [program.run(x)[0].reshape(-1)[::997].tobytes() for _ in range(40)]
    return [ran(caller) - start[0], ran(worker) - start[1], pool.counts()["crowded_joins"] - crowded,
            all(result == expected for result in results)]
one, two = calls(1), calls(2)
print(json.dumps(dict(one=one, two=two, counts=pool.counts())))
"""


@needs_team
@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="needs Linux's schedstat")
def test_a_worker_on_its_callers_core_neither_spins_nor_is_spun_for():
    """Caller and worker on one core (where a busy machine's scheduler puts a woken worker): a worker
    that joins counts the region crowded and gives its pieces back (the caller runs every piece, with
    the same bits), no one spins in it and an idle worker sleeps, so the worker runs on the core only
    for the handshake, a small part of one thread's call per region (before: 2.3x, its spins between
    regions taking the caller's turns); and after crowded regions the caller opens the next ones
    without waking it, longer and longer (1, 2, 4, ... regions)."""
    done = subprocess.run([sys.executable, "-c", ONE_CORE_SCRIPT.format(benchmarks=BENCHMARKS)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    (alone, _, _, same_one), (_, worker, crowded, same_two) = result["one"], result["two"]
    assert same_one and same_two  # the same bits on 1 and 2 threads
    assert result["counts"]["joined"] == 0 and crowded > 0  # the caller ran every piece alone
    assert worker / crowded < 0.5 * alone / 40  # CPU time (the load does not move it): ~0.1 now, ~1 running pieces
    assert crowded < 40 // 4  # woken for about 5 of the 40 regions, the gaps between doubling


SUMS = """
graph @sums(%x: f32[2048,512]) {
  %0 = summation(%x, axes=(0,)) : f32[512]
  %1 = exp(%x) : f32[2048,512]
  return %0, %1
}"""


@needs_team
def test_callers_on_several_threads_share_the_team(monkeypatch):
    monkeypatch.setenv("NDLC_THREADS", "2")
    monkeypatch.setenv("NDLC_TEAM", "budget")
    programs = [compile_graph(parse(SUMS)) for _ in range(2)]
    x = np.random.default_rng(0).random((2048, 512), dtype=np.float32)
    expected = [output.tobytes() for output in programs[0].run(x)]
    wrong = []

    def calls(program):
        for _ in range(30):
            if [output.tobytes() for output in program.run(x)] != expected:
                wrong.append(program)
    threads = [threading.Thread(target=calls, args=(program,)) for program in programs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong and pool.workers() >= 1  # a region starting while another runs runs on its caller alone


FORKED_SCRIPT = """
import json, os
os.environ.update(NDLC_THREADS="2", NDLC_TEAM="budget", NDLC_PROGRAM_CACHE="0")
import numpy as np
from ndlc.ir import parse
from ndlc.jit.compile import compile_graph
from ndlc.runtime import pool
program = compile_graph(parse({graph!r}))
x = np.random.default_rng(0).random((2048, 512), dtype=np.float32)
expected = [output.tobytes() for output in program.run(x)]
reading, writing = os.pipe()
child = os.fork()
if child == 0:
    before = pool.workers()
    same = all([output.tobytes() for output in program.run(x)] == expected for _ in range(20))
    os.write(writing, json.dumps([before, pool.workers(), same, pool.counts()["regions"]]).encode())
    os._exit(0)
os.waitpid(child, 0)
print(os.read(reading, 1000).decode())
"""


@needs_team
def test_a_forked_child_starts_workers_of_its_own():
    done = subprocess.run([sys.executable, "-c", FORKED_SCRIPT.format(graph=SUMS)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    before, after, same, regions = json.loads(done.stdout)
    assert (before, after, same) == (0, 1, True)  # the parent's worker is not in the child: one started
    assert regions >= 20  # counted from 0 in the child, every call on 2 threads


@pytest.mark.parametrize("machine", sorted(FUTEX))
def test_the_pools_ir_is_valid_on_every_machine_it_runs_on(machine):
    llvm = pytest.importorskip("llvmlite.binding")
    llvm.parse_assembly(pool_module(machine)).verify()
    assert runs_on("linux", machine) and not runs_on("darwin", machine) and not runs_on("linux", "riscv64")


@pytest.mark.parametrize("text, runnable", [
    ("0.52 0.58 0.59 2/116 28441\n", 2),  # the caller and its worker: the worker may move off
    ("7.05 6.10 5.12 13/170 9\n", 13),
    ("0.00 0.00 0.00 1/1 1", 1),
    ("garbage without fields\n", 1 << 40),  # unknown: as busy, so the worker stays
    (None, 1 << 40),  # no file
])
def test_the_worker_reads_the_runnable_threads_from_loadavg(tmp_path, text, runnable):
    llvm = pytest.importorskip("llvmlite.binding")
    if platform.machine() not in FUTEX:
        pytest.skip("the pool does not run on this machine")
    path = tmp_path / "loadavg"
    if text is not None:
        path.write_text(text)
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    module = llvm.parse_assembly(pool_module(platform.machine(), loadavg=str(path)))
    engine = llvm.create_mcjit_compiler(module, llvm.Target.from_default_triple().create_target_machine())
    engine.finalize_object()
    read = ctypes.CFUNCTYPE(ctypes.c_int64)(engine.get_function_address("ndlc_pool_runnable"))
    assert read() == runnable
