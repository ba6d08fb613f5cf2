"""Benchmark: one training step of the convolutional models, LeNet-BN (the batch-norm notebook's:
SGD lr 1.0, 1x28x28) and needle's ResNet9 (SGD lr 0.01, 3x32x32), at batch 64 and 256, compiled by
ndlc beside PyTorch eager and torch.compile, timed in interleaved blocks in one process. Every
contender starts from ndlc's initial weights (converted to PyTorch's layouts) and its first loss
must equal ndlc's (else MISMATCH); a torch.compile step that dynamo ran eagerly is FALLBACK.
`ndlc bench` puts this table into benchmarks/RESULTS.md.

    python benchmarks/model_steps.py [--repeats N] [--models lenet,resnet9] [--batch 64,256]
"""
import argparse
import functools
import statistics
import sys

import numpy as np

import mlp_step
import ndlc as ndl
from ndlc.examples.lenet import LEARNING_RATE, build_lenet
from ndlc.examples.resnet9 import build_resnet9
from ndlc.examples.train_mlp import training_step
from suite.torch_runner import compiled

MODELS = {"lenet": (build_lenet, (1, 28, 28), LEARNING_RATE), "resnet9": (build_resnet9, (3, 32, 32), 0.01)}
RTOL = 1e-3  # first-step losses of the contenders against ndlc's


def data(model, batch, seed=0):
    rng = np.random.default_rng(seed)
    shape = MODELS[model][1]
    return rng.standard_normal((batch, *shape), dtype=np.float32), rng.integers(0, 10, batch)


def ndlc_model(model):
    np.random.seed(0)
    build, _, lr = MODELS[model]
    net = build()
    return net, ndl.optim.SGD(net.parameters(), lr=lr)


def ndlc_compiled(model):
    """ndlc's step: the loss as a float; `kernels()` counts the kernels its program runs."""
    net, optimizer = ndlc_model(model)
    step = ndl.compile(training_step(net, optimizer))

    def run(x, y):
        return float(step(x, y).numpy())
    run.kernels = lambda: sum(line.startswith("kernel ") for line in step.ir("fused").splitlines())
    return run


def torch_model(torch, model):
    """The same layers in PyTorch, holding ndlc's initial weights (NCHW/OIHW and (out, in) layouts)."""
    net, _ = ndlc_model(model)
    nn = torch.nn

    def conv_bn(a, b, k, s, act):
        return [nn.Conv2d(a, b, k, s, k // 2), nn.BatchNorm2d(b), act()]
    if model == "lenet":
        layers = [nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.Sigmoid(), nn.AvgPool2d(2),
                  nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(),
                  nn.Linear(400, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
                  nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(), nn.Linear(84, 10)]
        torch_net = nn.Sequential(*layers)
    else:
        class Residual(nn.Module):
            def __init__(self, *inner):
                super().__init__()
                self.inner = nn.Sequential(*inner)

            def forward(self, x):
                return self.inner(x) + x
        torch_net = nn.Sequential(*conv_bn(3, 16, 7, 4, nn.ReLU), *conv_bn(16, 32, 3, 2, nn.ReLU),
                                  Residual(*conv_bn(32, 32, 3, 1, nn.ReLU), *conv_bn(32, 32, 3, 1, nn.ReLU)),
                                  *conv_bn(32, 64, 3, 2, nn.ReLU), *conv_bn(64, 128, 3, 2, nn.ReLU),
                                  Residual(*conv_bn(128, 128, 3, 1, nn.ReLU), *conv_bn(128, 128, 3, 1, nn.ReLU)),
                                  nn.Flatten(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    with torch.no_grad():
        for ours, theirs in zip(net.parameters(), torch_net.parameters(), strict=True):
            value = ours.numpy()
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T if value.ndim == 2 and \
                value.shape[0] != 1 else value
            theirs.copy_(torch.from_numpy(np.ascontiguousarray(value).reshape(theirs.shape)))
    return torch_net, MODELS[model][2]


def torch_step(model, compile=False):
    import torch
    torch.manual_seed(0)
    net, lr = torch_model(torch, model)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)

    def step(x, y):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss
    call = compiled(step) if compile else step

    def timed(x, y):
        return float(call(torch.from_numpy(x), torch.from_numpy(y)).detach())
    timed.fallback = call.fallback if compile else lambda: None
    return timed


CONTENDERS = {"ndlc compiled (CPU)": ndlc_compiled, "PyTorch eager": torch_step,
              "torch.compile": lambda model: torch_step(model, compile=True)}


def prepared(make, model, batch, warmup=2):
    """(a call of one step of `make(model)` on one fixed batch, after `warmup` steps, its first loss)."""
    step = make(model)
    x, y = data(model, batch)
    first = step(x, y)
    for _ in range(warmup - 1):
        step(x, y)
    return functools.partial(step, x, y), first


def run(models, batches, repeats, progress=lambda name: None, torch_compile=True):
    """Rows (model, batch, contender, median ms or None, note, kernels or None: ndlc's count) for
    every model, batch size and contender (torch.compile only with `torch_compile`): per model and
    batch the contenders' steps are timed in mlp_step.BLOCKS interleaved blocks, each contender's
    time the median of its blocks' medians."""
    rows = []
    for model in models:
        for batch in batches:
            calls, firsts, missing = {}, {}, {}
            for name, make in CONTENDERS.items():
                if name == "torch.compile" and not torch_compile:
                    continue
                try:
                    calls[name], firsts[name] = prepared(make, model, batch)
                except ImportError as e:
                    missing[name] = (model, batch, name, None, f"not installed ({e.name})", None)
                finally:
                    progress(f"{model} at {batch}: {name}")
            blocks = mlp_step.interleaved(calls, mlp_step.BLOCKS, max(3, -(-repeats // mlp_step.BLOCKS)))
            reference = next(iter(firsts.values()), None)
            for name in CONTENDERS:
                if name in missing:
                    rows.append(missing[name])
                elif name in calls:
                    step = calls[name].func
                    fallback = getattr(step, "fallback", lambda: None)()
                    rows.append((model, batch, name, statistics.median(blocks[name]),
                                 _verdict(firsts[name], reference, fallback), getattr(step, "kernels", lambda: None)()))
    return rows


def _verdict(first, reference, fallback):
    """The row's note: MISMATCH if the first loss is not ndlc's, FALLBACK if dynamo ran eagerly."""
    if abs(first - reference) > RTOL * abs(reference):
        return f"MISMATCH: first loss {first:.5f}, ndlc's {reference:.5f}"
    return f"FALLBACK ({fallback})" if fallback else ""


def section(rows, repeats):
    """The markdown section of RESULTS.md: per model and batch, each contender's median, ndlc's
    ratio and the kernels ndlc compiled the step to."""
    lines = ["## Convolutional training steps (float32, SGD)", "",
             f"- per contender, the median of its medians over {mlp_step.BLOCKS} interleaved blocks of "
             f"{max(3, -(-repeats // mlp_step.BLOCKS))} steps (the contenders in turn, the order rotating) "
             "after 2 warm-up steps; every contender starts from ndlc's initial "
             "weights and its first loss equals ndlc's (else MISMATCH); torch.compile compiles each step "
             "afresh and shows FALLBACK where dynamo ran it eagerly; the last column counts the kernels "
             "ndlc compiled the step to", "",
             "| model | batch | implementation | median ms/step | ndlc / it | ndlc kernels |",
             "|---|---:|---|---:|---:|---:|"]
    ours = {(model, batch): ms for model, batch, name, ms, *_ in rows if name.startswith("ndlc")}
    for model, batch, name, ms, note, kernels in rows:
        ratio = f"{ours[model, batch] / ms:.2f}x" if ms and ours.get((model, batch)) else ""
        lines.append(f"| {model} | {batch} | {name} | {f'{ms:.2f}' if ms else ''} {note} | {ratio} | "
                     f"{'' if kernels is None else kernels} |")
    return lines + [""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", default="64,256", help="batch sizes, comma-separated (default %(default)s)")
    parser.add_argument("--models", default="lenet,resnet9")
    args = parser.parse_args(argv)
    rows = run(args.models.split(","), [int(b) for b in args.batch.split(",")], args.repeats)
    print("\n".join(section(rows, args.repeats)))
    return 1 if any(note.startswith(("MISMATCH", "FALLBACK")) for *_, note, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
