"""Benchmark: data-parallel training steps over MPI against one process, on this machine.

    python benchmarks/distributed.py                      # writes benchmarks/DISTRIBUTED.md
    python benchmarks/distributed.py --output FILE.md --steps 10

Times the compiled training step of the MLP (784-512-BN-ReLU-256-BN-ReLU-10, Adam) and LeNet-BN
(SGD) at a global batch of 256: one process on 1 thread, one process on 2 threads, and 2 ranks
(`mpirun -np 2`, 1 thread each, 128 samples per rank), with the time each step spends in its
exchanges (which includes waiting for the slower rank); then the all-reduce alone (ndlc.distributed's
deterministic average, ranks lined up first) on buffers of the models' gradient sizes to 64 MB at
2 ranks, the numbers docs/DISTRIBUTED.md's scaling section extrapolates from; and whether running the average
on a second thread during a step (overlap) saves anything here. Each configuration runs in its
own process (`--worker`), so thread counts are set before anything starts.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH = 256
SIZES = {"LeNet-BN's gradients": 62_158 * 4, "the MLP's gradients": 537_354 * 4,
         "4 MB": 4 * 2**20, "16 MB": 16 * 2**20, "64 MB": 64 * 2**20}


def build(model_name):
    """(model, optimizer, batch shape) as `ndlc train` builds them, seeded."""
    import ndlc as ndl
    from ndlc.examples import lenet
    from ndlc.examples.train_mlp import build_mlp
    np.random.seed(0)
    if model_name == "lenet":
        model = lenet.build_lenet()
        return model, ndl.optim.SGD(model.parameters(), lr=lenet.LEARNING_RATE), (1, 28, 28)
    model = build_mlp()
    return model, ndl.optim.Adam(model.parameters(), lr=1e-3), (784,)


def time_steps(model_name, steps, distributed):
    """Median seconds per step, parameters, and (distributed) median all-reduce seconds per step."""
    import ndlc as ndl
    from ndlc.examples.train_mlp import training_step
    world = None
    if distributed:
        import ndlc.distributed as dist
        world = dist.init()
    model, optimizer, shape = build(model_name)
    if world is not None:
        optimizer = dist.DistributedOptimizer(optimizer, model)
    step = ndl.compile(training_step(model, optimizer))
    share = BATCH // (world.size if world else 1)
    rng = np.random.default_rng(world.rank if world else 0)
    x, y = rng.random((share, *shape), dtype=np.float32), rng.integers(0, 10, share)
    for _ in range(3):
        step(x, y)
    times, reduces = [], []
    for _ in range(steps):
        if world is not None:
            world.comm.Barrier()
            before = world.reduce_seconds
        start = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - start)
        if world is not None:
            reduces.append(world.reduce_seconds - before)
    parameters = sum(p.numpy().size for p in model.parameters())
    return {"seconds": statistics.median(times), "best": min(times), "parameters": parameters,
            "reduce_seconds": statistics.median(reduces) if reduces else None,
            "reduce_best": min(reduces) if reduces else None}


def time_reduce(repeats):
    """Median seconds of one deterministic average of a float32 buffer of each of SIZES, the
    ranks lined up by a barrier first (no waiting for a slower rank inside the time)."""
    import ndlc.distributed as dist
    world = dist.init()
    result = {}
    for name, size in SIZES.items():
        buffer = np.ones(size // 4, np.float32)
        world.average([buffer])
        times = []
        for _ in range(repeats):
            world.comm.Barrier()
            start = time.perf_counter()
            world.average([buffer])
            times.append(time.perf_counter() - start)
        result[name] = (statistics.median(times), min(times))
    return result


def time_overlap(repeats):
    """Would overlapping the gradient all-reduce with computation pay here? Seconds (median, best)
    of one rank's MLP training step on 128 samples, of averaging the MLP's 2.1 MB of gradients,
    and of the two at once, the average on a second thread (what overlapping it with backward
    would do at best: here it does not wait for the gradients)."""
    import threading
    import ndlc as ndl
    import ndlc.distributed as dist
    from ndlc.examples.train_mlp import training_step
    world = dist.init()
    model, optimizer, shape = build("mlp")
    step = ndl.compile(training_step(model, optimizer))
    rng = np.random.default_rng(world.rank)
    x, y = rng.random((BATCH // 2, *shape), dtype=np.float32), rng.integers(0, 10, BATCH // 2)
    gradients = np.ones(537_354, np.float32)

    def compute():
        step(x, y)

    def average():
        world.average([gradients])

    def overlapped():
        thread = threading.Thread(target=average)
        thread.start()
        compute()
        thread.join()

    result = {}
    for name, fn in (("step", compute), ("average", average), ("both at once", overlapped)):
        fn()
        times = []
        for _ in range(repeats):
            world.comm.Barrier()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        result[name] = (statistics.median(times), min(times))
    return result


def worker(args):
    """One configuration, its results as one JSON line on stdout (rank 0's)."""
    if args.worker == "reduce":
        result = time_reduce(args.steps)
    elif args.worker == "overlap":
        result = time_overlap(args.steps)
    else:
        result = time_steps(args.worker, args.steps, args.distributed)
    if not args.distributed or int(os.environ.get("OMPI_COMM_WORLD_RANK", "0")) == 0:
        print(json.dumps(result))


def run(worker_args, threads, ranks=None):
    """Run a worker (under mpirun with `ranks`) on `threads` threads; its JSON result."""
    env = dict(os.environ, NDLC_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, os.path.abspath(__file__), "--worker", *worker_args]
    if ranks:
        command = ["mpirun", "-np", str(ranks), "--oversubscribe", "--allow-run-as-root", *command, "--distributed"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark worker {' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rate(result):
    """'median steps/s (best steps/s)'."""
    return f"{1 / result['seconds']:.1f} ({1 / result['best']:.1f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join(HERE, "DISTRIBUTED.md"))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration (default 20)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    load = [os.getloadavg()[0]]
    rows = []
    for model_name, label in (("mlp", "MLP 784-512-BN-256-BN-10, Adam"), ("lenet", "LeNet-BN, SGD")):
        one = run([model_name, "--steps", str(args.steps)], 1)
        two = run([model_name, "--steps", str(args.steps)], 2)
        ranks = run([model_name, "--steps", str(args.steps)], 1, ranks=2)
        rows.append((label, one, two, ranks))
        print(f"{label}: {1 / one['seconds']:.1f} / {1 / two['seconds']:.1f} / {1 / ranks['seconds']:.1f} steps/s, "
              f"exchanges {ranks['reduce_seconds'] * 1e3:.2f} ms", flush=True)
    reduce = run(["reduce", "--steps", str(args.steps)], 1, ranks=2)
    overlap = run(["overlap", "--steps", str(args.steps)], 1, ranks=2)
    load.append(os.getloadavg()[0])
    lines = [
        "# Data-parallel training on this machine",
        "",
        f"`python benchmarks/distributed.py`, {datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Open MPI through mpi4py; load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after. Global batch {BATCH}; steps/s of the whole (global) step from the median "
        f"of {args.steps} steps after 3 warm-up steps, the best step in brackets. With other work on "
        "the 2 cores, a rank or thread that loses its core for a time slice stalls everyone waiting "
        "for it (10-25 ms): the medians carry that, the best steps show the machine undisturbed.",
        "",
        "| model | parameters | 1 process, 1 thread | 1 process, 2 threads | 2 ranks x 1 thread | ms/step in exchanges (2 ranks, with waiting) | their share of the step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, one, two, ranks in rows:
        lines.append(f"| {label} | {one['parameters']:,} | {_rate(one)} | {_rate(two)} | {_rate(ranks)} | "
                     f"{ranks['reduce_seconds'] * 1e3:.2f} ({ranks['reduce_best'] * 1e3:.2f}) | "
                     f"{ranks['reduce_seconds'] / ranks['seconds']:.0%} |")
    lines += ["", "The all-reduce alone (deterministic average of one float32 buffer, 2 ranks on this machine, "
              "lined up by a barrier first; median, best in brackets):", "",
              "| buffer | bytes | ms | GB/s of buffer (best) |", "|---|---:|---:|---:|"]
    for name, (seconds, best) in reduce.items():
        lines.append(f"| {name} | {SIZES[name]:,} | {seconds * 1e3:.3f} ({best * 1e3:.3f}) | {SIZES[name] / best / 1e9:.2f} |")
    (step, best_step), (average, best_average), (both, best_both) = overlap.values()
    lines += ["", "Overlap, measured (2 ranks, 1 thread each): a rank's MLP training step on 128 samples, the "
              "average of the MLP's 2.1 MB of gradients, and both at once with the average on a second "
              "thread, the most that overlapping it with backward could hide (ms, median and best):", "",
              "| step | average | step + average | both at once |", "|---:|---:|---:|---:|",
              f"| {step * 1e3:.2f} ({best_step * 1e3:.2f}) | {average * 1e3:.2f} ({best_average * 1e3:.2f}) | "
              f"{(step + average) * 1e3:.2f} ({(best_step + best_average) * 1e3:.2f}) | "
              f"{both * 1e3:.2f} ({best_both * 1e3:.2f}) |"]
    with open(args.output, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
