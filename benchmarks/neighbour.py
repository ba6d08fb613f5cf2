"""Benchmark: ndlc's calls beside a busy neighbour (issue 20), at 1 and 2 ndlc threads. Each case
(LayerNorm 33x4097, softmax 1000x77, SoftmaxLoss 590x30, matmul 127x129x65, all forward, and the
MLP training step) is timed in a child process with NDLC_TEAM=budget (the team fixed, so the pool's
own behaviour shows, not the adaptive team's choice) in three settings:

  alone    ndlc's calls back to back;
  after    each ndlc call right after PyTorch's call of the same case (2 threads, no pause: its
           OpenMP threads still spin when ndlc's call starts, as in a side-by-side harness);
  beside   ndlc's calls beside another process spinning on one core (`while True: pass`).

It prints, per case and setting, the median and fastest microseconds of an ndlc call on each team,
2 threads over 1 (medians), and the pool's counts over the timed calls (regions, joined, crowded
joins, moves). A ratio above 1 is a setting where 2 threads were worse than 1. The load average is
printed beside the numbers: on shared cores, run it a few times.

    python3 benchmarks/neighbour.py [--calls N] [--only TEXT] [--settings alone,after,beside]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
SETTINGS = ("alone", "after", "beside")
NAMES = ("LayerNorm 33x4097", "softmax 1000x77", "SoftmaxLoss 590x30", "matmul 127x129x65", "MLP step")
BUSY = "while True: pass"
WARMUP = 20


def cases():
    """name -> (ndlc callable, PyTorch callable) of the benchmark's cases, built and warmed up."""
    from contention import batch, ndlc_step, torch_step
    from suite.cases.base import OpCase
    from suite.cases.kernels import SoftmaxLoss
    from suite.cases.norms import LayerNorm
    from suite.cases.sweep_ops import Product, Softmax
    ops = dict(zip(NAMES, (LayerNorm((33, 4097), (5, 33)), Softmax((1000, 77), (5, 7)),
                           SoftmaxLoss((590, 30), (5, 4)), Product(((127, 129), (129, 65)), ((3, 5), (5, 7))))))
    built = {}
    for name, op in ops.items():
        case = OpCase(op)
        a = case.arrays(np.random.default_rng(0), False)
        built[name] = (case.ndlc(a, "cpu"), case.torch(a))
    x, y = batch("mlp")
    step, reference = ndlc_step("mlp"), torch_step("mlp", 2)
    built["MLP step"] = (lambda: step(x, y), lambda: reference(x, y))
    return built


def child(calls, only):
    """In a child (NDLC_THREADS set): one line of JSON per case: its ndlc call's seconds alone and
    after PyTorch's (`after`), and the pool's counts over them."""
    import torch
    from ndlc.runtime import libraries, pool
    torch.set_num_threads(2)
    after = os.environ["NEIGHBOUR_SETTING"] == "after"
    for name, (ours, theirs) in cases().items():
        if only not in name:
            continue
        for _ in range(WARMUP):
            theirs()
            ours()
        before = pool.counts() if libraries.team_runs() else {}
        seconds = []
        for _ in range(calls):
            if after:
                theirs()
            start = time.perf_counter()
            ours()
            seconds.append(time.perf_counter() - start)
        counts = {k: v - before[k] for k, v in pool.counts().items()} if before else {}
        print(json.dumps(dict(name=name, seconds=seconds, counts=counts)), flush=True)


def measure(setting, threads, calls, only):
    """{case name: (seconds, counts)} of a child at `threads` ndlc threads in `setting`."""
    env = dict(os.environ, NDLC_THREADS=str(threads), NDLC_TEAM="budget", NEIGHBOUR_SETTING=setting,
               OMP_NUM_THREADS="2")
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if setting == "beside" else None
    try:
        done = subprocess.run([sys.executable, __file__, "--child", "--calls", str(calls), "--only", only],
                              env=env, capture_output=True, text=True, check=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {row["name"]: (row["seconds"], row["counts"]) for row in rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="timed calls per case, setting and team")
    parser.add_argument("--only", default="", help="cases whose name contains this text")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.calls, args.only)
        return
    print(f"load average {os.getloadavg()[0]:.2f} at the start; {args.calls} calls a case")
    print("| case | setting | 1 thread median (min) us | 2 threads median (min) us | 2/1 | "
          "2-thread regions, joined, crowded, late, moves |")
    print("|---|---|---|---|---|---|")
    for setting in args.settings.split(","):
        runs = {threads: measure(setting, threads, args.calls, args.only) for threads in (1, 2)}
        for name in runs[1]:
            (one, _), (two, counts) = runs[1][name], runs[2][name]
            m1, m2 = statistics.median(one), statistics.median(two)
            pool = ", ".join(str(counts.get(k, "-")) for k in ("regions", "joined", "crowded_joins", "late", "moves"))
            print(f"| {name} | {setting} | {m1 * 1e6:.1f} ({min(one) * 1e6:.1f}) | {m2 * 1e6:.1f} "
                  f"({min(two) * 1e6:.1f}) | {m2 / m1:.2f} | {pool} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
