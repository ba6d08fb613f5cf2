"""Benchmark: training steps on shared cores. The MLP step (784-512-BN-ReLU-256-BN-ReLU-10, Adam,
batch 256) and the LeNet-BN step (SGD, batch 256), compiled by ndlc and in PyTorch eager, each in a
process of its own: alone, two copies of the same job at once, and beside one busy Python process,
at 1 and 2 threads (NDLC_THREADS; torch.set_num_threads), median and p90 ms per step. Writes the
table to benchmarks/CONTENTION.md.

    python3 benchmarks/contention.py [--quick] [--seconds S] [--threads 1,2] [--env NAME=VALUE ...]

A job's process builds and warms its step, says it is ready, and starts timing when every process
of the scenario is ready, so the timed steps overlap; each times steps for --seconds. Nothing else
should run meanwhile: the machine's load average is written beside the numbers.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # beside mlp_step.py
from mlp_step import machine  # noqa: E402

BATCH = 256
STEPS = ("mlp", "lenet")
FRAMEWORKS = ("ndlc", "torch")
NAMES = {"mlp": "MLP", "lenet": "LeNet-BN", "ndlc": "ndlc compiled", "torch": "PyTorch eager"}
SCENARIOS = ("alone", "two copies", "beside busy")
WARMUP = 3
MIN_STEPS = 5
# variables that would set a job's threads behind the benchmark's back
THREAD_VARIABLES = ("NDLC_THREADS", "NDLC_TEAM", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
BUSY = "while True: pass"
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "CONTENTION.md")


def batch(step, seed=0):
    rng = np.random.default_rng(seed)
    shape = (BATCH, 784) if step == "mlp" else (BATCH, 1, 28, 28)
    return rng.random(shape, dtype=np.float32), rng.integers(0, 10, BATCH)


def ndlc_step(step):
    """The step compiled by ndlc, as `ndlc train` builds it; NDLC_THREADS comes from the environment."""
    import ndlc as ndl
    from ndlc.examples.lenet import LEARNING_RATE, build_lenet
    from ndlc.examples.train_mlp import build_mlp, training_step
    np.random.seed(0)
    if step == "mlp":
        model = build_mlp()
        optimizer = ndl.optim.Adam(model.parameters(), lr=1e-3)
    else:
        model = build_lenet()
        optimizer = ndl.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    compiled = ndl.compile(training_step(model, optimizer))
    return lambda x, y: float(compiled(x, y).numpy())


def torch_step(step, threads):
    """The same layers and optimizer in PyTorch eager, on `threads` threads."""
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nn = torch.nn
    if step == "mlp":
        model = nn.Sequential(nn.Linear(784, 512), nn.BatchNorm1d(512), nn.ReLU(),
                              nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.Sigmoid(), nn.AvgPool2d(2),
                              nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(),
                              nn.Linear(400, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
                              nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(), nn.Linear(84, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)

    def run(x, y):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
        return float(loss.detach())
    return run


def job(framework, step, threads, seconds):
    """One process's part: build and warm the step, print 'ready', wait for 'go' on stdin, then time
    steps for `seconds` (at least MIN_STEPS) and print their milliseconds as JSON."""
    run = ndlc_step(step) if framework == "ndlc" else torch_step(step, threads)
    x, y = batch(step)
    for _ in range(WARMUP):
        run(x, y)
    print("ready", flush=True)
    sys.stdin.readline()
    times, end = [], time.perf_counter() + seconds
    while len(times) < MIN_STEPS or time.perf_counter() < end:
        start = time.perf_counter()
        run(x, y)
        times.append((time.perf_counter() - start) * 1e3)
    print(json.dumps(times), flush=True)


def job_environment(framework, threads, extra):
    """The parent's environment without thread settings, then NDLC_THREADS for ndlc, then `extra`."""
    environment = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if framework == "ndlc":
        environment["NDLC_THREADS"] = str(threads)
    environment.update(extra)
    return environment


def scenario(framework, step, threads, kind, seconds, extra):
    """[milliseconds per step of each copy] of one scenario: one job alone, two copies at once, or
    one job beside a busy Python process."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if kind == "beside busy" else None
    command = [sys.executable, os.path.abspath(__file__), "--job", framework, step, str(threads), str(seconds)]
    jobs = [subprocess.Popen(command, env=job_environment(framework, threads, extra), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True) for _ in range(2 if kind == "two copies" else 1)]
    try:
        for process in jobs:
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{framework} {step} job failed before its first timed step")
        for process in jobs:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [json.loads(process.stdout.readline()) for process in jobs]
        for process in jobs:
            process.wait(timeout=60)
        return results
    finally:
        for process in jobs + ([busy] if busy else []):
            if process.poll() is None:
                process.kill()
                process.wait()


def summary(times):
    """(median, p90) of a list of milliseconds."""
    return statistics.median(times), float(np.percentile(times, 90))


def measure(steps, frameworks, threads_list, seconds, extra, progress):
    """{(step, framework, threads, scenario): [(median, p90) of each copy]}."""
    results = {}
    for step in steps:
        for framework in frameworks:
            for threads in threads_list:
                for kind in SCENARIOS:
                    key = (step, framework, threads, kind)
                    results[key] = [summary(t) for t in scenario(framework, step, threads, kind, seconds, extra)]
                    progress(key, results[key])
    return results


def cell(copies, alone=None):
    """'median (p90)' of each copy, and the ratio of the slowest median to the job alone."""
    text = ", ".join(f"{m:.2f} ({p:.2f})" for m, p in copies)
    if alone is not None:
        text += f": {max(m for m, _ in copies) / alone:.2f}x"
    return text


def table(results, steps, frameworks, threads_list):
    lines = ["| step | framework | threads | alone | two copies at once (each) | beside one busy process |",
             "|---|---|---:|---|---|---|"]
    for step in steps:
        for framework in frameworks:
            for threads in threads_list:
                alone, copies, busy = (results[(step, framework, threads, kind)] for kind in SCENARIOS)
                lines.append(f"| {NAMES[step]} | {NAMES[framework]} | {threads} | {cell(alone)} | "
                             f"{cell(copies, alone[0][0])} | {cell(busy, alone[0][0])} |")
    return lines


def targets(results, threads_list):
    """Issue 19's targets for ndlc's MLP step, each with its measured value and whether it is met."""
    checks = []
    if ("mlp", "ndlc", 1, "alone") in results:
        alone = results[("mlp", "ndlc", 1, "alone")][0][0]
        for m, p in results[("mlp", "ndlc", 1, "two copies")]:
            checks.append((f"1 thread, two copies: median {m / alone:.2f}x alone (<= 1.3x), p90 {p / m:.2f}x "
                           f"median (<= 2x)", m <= 1.3 * alone and p <= 2 * m))
    top = max(threads_list)
    if top > 1 and ("mlp", "ndlc", top, "alone") in results:
        alone = results[("mlp", "ndlc", top, "alone")][0][0]
        for kind in ("two copies", "beside busy"):
            for m, p in results[("mlp", "ndlc", top, kind)]:
                checks.append((f"{top} threads, {kind}: median {m / alone:.2f}x alone (<= 2.2x), p90 {p / m:.2f}x "
                               f"median (<= 3x)", m <= 2.2 * alone and p <= 3 * m))
    return [f"- {'met' if ok else 'MISSED'}: {text}" for text, ok in checks]


def report(results, args, threads_list, load_before, load_after):
    lines = ["# Training steps on shared cores", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}",
             f"- machine: {machine()}",
             f"- load average (1 min) before: {load_before:.2f}, after: {load_after:.2f} "
             "(above 0 means other work shared the cores: compare only rows of one run)",
             f"- each job in its own process, {WARMUP} warm-up steps, then steps for {args.seconds:g} s "
             f"(at least {MIN_STEPS}); cells: median (p90) ms per step, and the slowest copy's median "
             "against the job alone",
             "- threads: NDLC_THREADS for ndlc (nothing else set: each program picks its team within it by timing, "
             "runtime/team.py), torch.set_num_threads for PyTorch"
             + (f"; ndlc jobs also ran with {' '.join(args.env)}" if args.env else ""),
             "- command: `python3 benchmarks/contention.py" + (" --quick" if args.quick else "")
             + f" --seconds {args.seconds:g}`", "",
             *table(results, args.steps, args.frameworks, threads_list), "",
             "Targets (issue 19, on a quiet 2-core machine):", "", *targets(results, threads_list), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s of steps per job instead of --seconds")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each job times steps (default 5)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help=f"comma-separated, of {', '.join(FRAMEWORKS)}")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set this in ndlc's jobs too (to compare a setting, e.g. GOMP_SPINCOUNT=300000)")
    parser.add_argument("--output", default=OUTPUT, help="where to write the table (default benchmarks/CONTENTION.md)")
    parser.add_argument("--job", nargs=4, metavar=("FRAMEWORK", "STEP", "THREADS", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        framework, step, threads, seconds = args.job
        job(framework, step, int(threads), float(seconds))
        return 0
    if args.quick:
        args.seconds = 1.0
    args.steps, args.frameworks = args.steps.split(","), args.frameworks.split(",")
    for value, known, option in ((args.steps, STEPS, "--steps"), (args.frameworks, FRAMEWORKS, "--frameworks")):
        if not set(value) <= set(known):
            parser.error(f"{option}: {', '.join(sorted(set(value) - set(known)))} unknown; choose from {', '.join(known)}")
    bad = [pair for pair in args.env if "=" not in pair]
    if bad:
        parser.error(f"--env takes NAME=VALUE, not {bad[0]!r}")
    try:
        threads_list = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads takes comma-separated positive integers, not {args.threads!r}")
    if min(threads_list) < 1:
        parser.error(f"--threads takes comma-separated positive integers, not {args.threads!r}")
    extra = dict(pair.split("=", 1) for pair in args.env)

    def progress(key, copies):
        step, framework, threads, kind = key
        print(f"{NAMES[step]:9s} {NAMES[framework]:14s} {threads} thread(s) {kind:12s} {cell(copies)}", flush=True)
    load_before = os.getloadavg()[0]
    results = measure(args.steps, args.frameworks, threads_list, args.seconds, extra, progress)
    text = report(results, args, threads_list, load_before, os.getloadavg()[0])
    print(text)
    with open(args.output, "w") as f:
        f.write(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
