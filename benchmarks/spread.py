"""Counts per steady call of each `ndlc bench` case, which the machine's load does not change
(issue 20: where ndlc's run-to-run spread comes from): minor page faults and Python allocations,
measured in this process, and, with --external, context switches and system calls (futex waits
and wakes among them) of a child process under `perf stat` and `strace -f -c`, each
the difference between a child making CALLS calls and one making none after the same warm-up, so
that compiling and loading cancel out.

    python benchmarks/spread.py [--only TEXT] [--calls N] [--external]
    python benchmarks/spread.py --starved   # a call beside a worker that lost its core
    python benchmarks/spread.py --rounds 3  # wall clock: medians of 20 calls a round, each case's
                                            # slowest round over its fastest (ndlc bench's spread)
    python benchmarks/spread.py --parts     # a call's parts: the entry, the steady run, the native
                                            # call on each team; a 1-element program's as the floor

`--starved` (and tests/runtime/test_pool.py) times a 2-thread program's calls while its team's
worker shares a core with a busy process at SCHED_IDLE priority (it runs a few ms a second) and
the caller has another core to itself: the descheduled thread of issue 20, made to happen on
every call rather than by chance under load.
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the suite's cases
from suite.cases import CASES  # noqa: E402

WARMUP = 5  # calls before counting: the first compiles, the next bind spare outputs


def build(case):
    """ndlc's callable for `case` (full size), warmed up."""
    call = case.ndlc(case.arrays(np.random.default_rng(0), False), "cpu")
    for _ in range(WARMUP):
        call()
    return call


def in_process(call, calls):
    """(minor page faults, voluntary and involuntary context switches of all this process's
    threads, per call; Python blocks left allocated per call, peak Python bytes)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        call()
    after = resource.getrusage(resource.RUSAGE_SELF)
    faults, voluntary, involuntary = (getattr(after, f) - getattr(before, f)
                                      for f in ("ru_minflt", "ru_nvcsw", "ru_nivcsw"))
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    blocks = len(tracemalloc.take_snapshot().traces)
    tracemalloc.reset_peak()
    for _ in range(calls):
        call()
    _, peak = tracemalloc.get_traced_memory()
    left = len(tracemalloc.take_snapshot().traces) - blocks
    tracemalloc.stop()
    return faults / calls, voluntary / calls, involuntary / calls, left / calls, max(0, peak - start)


def child(index, calls):
    """The child of --external: case `index` built and warmed up, then `calls` calls."""
    call = build(CASES[index])
    for _ in range(calls):
        call()


def _perf(index, calls):
    """{event: count} of a child making `calls` calls (perf stat, user and kernel)."""
    events = "context-switches,cpu-migrations"  # (instructions: not counted in this VM)
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
        subprocess.run(["perf", "stat", "-x,", "-o", out.name, "-e", events, sys.executable, __file__,
                        "--child", str(index), "--calls", str(calls)], check=True)
        counts = {}
        for line in out.read().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].strip().isdigit():
                counts[fields[2].split(":")[0]] = int(fields[0])
        return counts


def _strace(index, calls):
    """{system call: count} of a child making `calls` calls (strace -f -c, every thread)."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
        subprocess.run(["strace", "-f", "-c", "-o", out.name, sys.executable, __file__, "--child", str(index),
                        "--calls", str(calls)], check=True)
        counts = {}
        for line in out.read().splitlines():
            match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if match and match.group(2) != "total":
                counts[match.group(2)] = int(match.group(1))
        return counts


def external(index, calls):
    """Per call: context switches, futex calls and all system calls, each the
    difference between a child making `calls` calls and one making none."""
    perf = [_perf(index, n) for n in (0, calls)]
    trace = [_strace(index, n) for n in (0, calls)]
    per = {name: (perf[1].get(name, 0) - perf[0].get(name, 0)) / calls for name in perf[1]}
    per["futex"] = (trace[1].get("futex", 0) - trace[0].get("futex", 0)) / calls
    per["syscalls"] = (sum(trace[1].values()) - sum(trace[0].values())) / calls
    return per


STARVED_GRAPH = "graph @starved(%x: f32[1024,1024]) {\n  %0 = exp(%x) : f32[1024,1024]\n  return %0\n}"
BUSY = "import os\nos.sched_setaffinity(0, {%d})\nwhile True:\n    pass\n"


def tasks() -> set:
    """The ids of this process's threads."""
    return {int(task) for task in os.listdir("/proc/self/task")}


def starved(run, calls):
    """Seconds of each of `calls` calls of run(), after its first call, while the thread that
    first call started (the team's worker) runs at SCHED_IDLE on a core a busy process holds, and
    this thread has another core; with --starved's program on 2 threads, the first call starts
    exactly one thread. None where fewer than two cores are ours."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    before = tasks()
    run()
    (worker,) = tasks() - before
    os.sched_setaffinity(worker, {cores[1]})
    os.sched_setscheduler(worker, os.SCHED_IDLE, os.sched_param(0))
    os.sched_setaffinity(0, {cores[0]})
    busy = subprocess.Popen([sys.executable, "-c", BUSY % cores[1]])
    try:
        time.sleep(0.2)  # the busy process on its core
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        return seconds
    finally:
        busy.kill()
        busy.wait()


def starved_program():
    """--starved's program on a team of 2 (NDLC_THREADS=2 NDLC_TEAM=budget) and its input."""
    from ndlc.ir import parse
    from ndlc.jit.compile import compile_graph
    program = compile_graph(parse(STARVED_GRAPH))
    x = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    return program, x


FLOOR_GRAPH = "graph @floor(%x: f32[1]) {\n  %0 = exp(%x) : f32[1]\n  return %0\n}"


def minimum_us(fn, calls):
    """The fastest of `calls` calls of fn(), in microseconds (the parts are timed alternately)."""
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def parts(call, calls):
    """{part: fastest microseconds} of a warmed-up case's call: the whole call (the compiled
    function's entry, its checks, the Tensors it returns), `steady` (Program.steady, the run the
    entry has written in, as a function of its own: the inputs' and spare outputs' checks, the pointer table, the team's timing), `native` (the entry point on
    the team the program chose) and `native on 1` (on one thread: what the team's wake-up, pieces
    and join cost or save)."""
    from ndlc.runtime import libraries
    program = call.compiled.last.program
    call()
    arrays = list(program.bound)  # the entry's steady run (written into it) ran on the arrays bound
    program.steady(*arrays)  # Program.steady, its own function, generated on its first run
    team = program.team.current

    def native(threads):
        libraries.set_team(threads)
        program.native_call()
    ways = {"call": call, "steady": lambda: program.steady(*arrays), "native": lambda: native(team),
            "native on 1": lambda: native(1)}
    best = {name: float("inf") for name in ways}
    for _ in range(5):  # alternating, so that the machine's drift falls on every part
        for name, fn in ways.items():
            best[name] = min(best[name], minimum_us(fn, calls // 5))
    return best, team


def floor(calls):
    """parts() of a compiled function whose program is one kernel over one element: the cost of a
    call that computes nothing."""
    import ndlc as ndl
    from suite.ndlc_runner import Calls
    x = np.ones(1, np.float32)
    call = Calls(ndl.compile(lambda t: ndl.ops.exp(t)), [x])
    for _ in range(WARMUP):
        call()
    return parts(call, calls)


def rounds(cases, count, calls=20):
    """{case name: [median seconds of `calls` calls in each of `count` rounds]}: every case built
    (and warmed up) first, then each round times every case in turn, as `ndlc bench` does."""
    built = {case.name(False): build(case) for case in cases}
    medians = {name: [] for name in built}
    for _ in range(count):
        for name, call in built.items():
            seconds = []
            for _ in range(calls):
                start = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - start)
            medians[name].append(statistics.median(seconds))
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="cases whose name contains this text")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--external", action="store_true", help="perf and strace counts too (slower)")
    parser.add_argument("--starved", action="store_true", help="time calls beside a worker that lost its core")
    parser.add_argument("--rounds", type=int, help="wall clock: this many rounds of medians of 20 calls")
    parser.add_argument("--parts", action="store_true", help="time a call's parts (fastest of --calls)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.calls)
        return
    if args.starved:
        os.environ.update(NDLC_THREADS="2", NDLC_TEAM="budget")
        program, x = starved_program()
        seconds = starved(lambda: program.run(x), args.calls)
        if seconds is None:
            print("--starved needs two cores")
            return
        print(f"{args.calls} calls beside a starved worker: median {statistics.median(seconds) * 1e3:.3f} ms, "
              f"slowest {max(seconds) * 1e3:.3f} ms, total {sum(seconds) * 1e3:.1f} ms")
        return
    cases = [case for case in CASES if args.only.lower() in case.name(False).lower()]
    if args.parts:
        print("| case | team | call us | steady us | native us | native on 1 us | entry us | steady's own us |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, (best, team) in [("1-element exp (the floor)", floor(args.calls))] + \
                [(case.name(False), parts(build(case), args.calls)) for case in cases]:
            print(f"| {name} | {team} | {best['call']:.1f} | {best['steady']:.1f} | {best['native']:.1f} | "
                  f"{best['native on 1']:.1f} | {best['call'] - best['steady']:.1f} | "
                  f"{best['steady'] - best['native']:.1f} |", flush=True)
        return
    if args.rounds:
        print("| case | median ms | rounds' medians (ms) | slowest round / fastest |")
        print("|---|---:|---|---:|")
        for name, medians in rounds(cases, args.rounds).items():
            print(f"| {name} | {statistics.median(medians) * 1e3:.3f} | "
                  f"{', '.join(f'{m * 1e3:.3f}' for m in medians)} | {max(medians) / min(medians):.2f}x |")
        return
    print("| case | minor faults/call | voluntary switches/call | involuntary switches/call "
          "| Python blocks kept/call | peak Python bytes | context switches/call (perf) | futex/call "
          "| system calls/call |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        index, name = CASES.index(case), case.name(False)
        faults, voluntary, involuntary, kept, peak = in_process(build(case), args.calls)
        cells = [f"{faults:.2f}", f"{voluntary:.3f}", f"{involuntary:.3f}", f"{kept:.3f}", f"{peak}"]
        if args.external:
            per = external(index, args.calls)
            cells += [f"{per.get('context-switches', 0):.2f}",
                      f"{per['futex']:.2f}", f"{per['syscalls']:.2f}"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
