"""A data-parallel training job that test_mpi.py runs under `mpirun -np 2`, and whose
model, data and step it imports for the one-process reference.

    python mpi_job.py OUT.npy [--model mlp|bn-mlp|lenet] [--sync] [--eager] [--fail-at STEP] [--uneven]

Each rank takes its half of every global batch of 64, runs STEPS compiled steps, and after every
step checks (on rank 0) that all ranks hold bit-identical parameters and buffers; rank 0 saves the final
parameters. `--sync`: BatchNorm layers become SyncBatchNorm. `--eager`: the step runs uncompiled.
`--fail-at`: rank 1 raises at that step (the job must end non-zero, not hang). `--uneven`: rank 1
takes one sample fewer, so it compiles another program (the ranks' check must refuse to start).
"""
import argparse
import sys

import numpy as np

import ndlc as ndl
from ndlc.examples.lenet import build_lenet
from ndlc.examples.train_mlp import training_step

GLOBAL_BATCH, STEPS = 64, 10


def build(model_name):
    """The model and its optimizer, seeded: every process builds the same ones."""
    np.random.seed(0)
    if model_name == "lenet":
        model = build_lenet()
        return model, ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if model_name == "bn-mlp":
        model = ndl.nn.Sequential(ndl.nn.Linear(20, 32), ndl.nn.BatchNorm1d(32), ndl.nn.ReLU(),
                                  ndl.nn.Linear(32, 10))
        return model, ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model = ndl.nn.Sequential(ndl.nn.Linear(20, 32), ndl.nn.ReLU(), ndl.nn.Linear(32, 32),
                              ndl.nn.ReLU(), ndl.nn.Linear(32, 10))
    return model, ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def batches(model_name):
    """STEPS global batches of GLOBAL_BATCH (inputs, labels), the same in every process."""
    rng = np.random.default_rng(1)
    shape = (GLOBAL_BATCH, 1, 28, 28) if model_name == "lenet" else (GLOBAL_BATCH, 20)
    return [(rng.standard_normal(shape, dtype=np.float32), rng.integers(0, 10, GLOBAL_BATCH))
            for _ in range(STEPS)]


def parameters(model):
    return np.concatenate([p.numpy().ravel() for p in model.parameters()])


def state(model):
    """Parameters and buffers (BatchNorm's running statistics), as bytes."""
    return b"".join(t.numpy().tobytes() for t in model.state_dict().values())


def train(args):
    import ndlc.distributed as dist
    world = dist.init()
    model, optimizer = build(args.model)
    if world.rank != 0:  # differently initialised: the broadcast from rank 0 must fix it
        for p in model.parameters():
            p.numpy()[...] += 1
    if args.sync:
        dist.convert_sync_batchnorm(model)
    optimizer = dist.DistributedOptimizer(optimizer, model)
    step = training_step(model, optimizer)
    if not args.eager:
        step = ndl.compile(step)
    share = GLOBAL_BATCH // world.size
    for i, (x, y) in enumerate(batches(args.model)):
        if i == args.fail_at and world.rank == 1:
            raise RuntimeError(f"planted failure at step {i}")
        mine = slice(world.rank * share, (world.rank + 1) * share - (args.uneven and world.rank == 1))
        step(x[mine], y[mine])
        everyone = world.comm.gather(state(model), root=0)
        if world.is_main and any(p != everyone[0] for p in everyone):
            raise AssertionError(f"ranks hold different parameters or buffers after step {i}")
    if world.is_main:
        np.save(args.out, parameters(model))
        print(f"{world.size} ranks, {STEPS} steps: parameters bit-identical after every step")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--model", choices=("mlp", "bn-mlp", "lenet"), default="mlp")
    parser.add_argument("--sync", action="store_true")
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--uneven", action="store_true")
    parser.add_argument("--fail-at", type=int, default=-1)
    train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
