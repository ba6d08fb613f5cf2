"""The `ndlc` command: `ndlc train` trains the Fashion-MNIST MLP compiled; `ndlc dump STAGE`
prints one compilation stage of the built-in example (the MLP's training step)."""
import argparse
import logging
import os
import sys
import time

import numpy as np

import ndlc as ndl
from ndlc.examples.train_mlp import build_mlp, training_step


def train(args):
    from tqdm import tqdm
    try:
        train_set = ndl.data.FashionMNIST(train=True, root=args.data)
        test_set = ndl.data.FashionMNIST(train=False, root=args.data)
    except FileNotFoundError as e:
        print(f"ndlc train: {e}", file=sys.stderr)
        return 2
    np.random.seed(args.seed)
    model = build_mlp(in_features=train_set[0][0].size)
    optimizer = ndl.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step = ndl.compile(training_step(model, optimizer), device=args.device)
    predict = ndl.compile(model, device=args.device)
    train_loader = ndl.data.DataLoader(train_set, args.batch_size, shuffle=True)
    test_loader = ndl.data.DataLoader(test_set, args.batch_size)
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, count, start = 0.0, 0, time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}", unit="step", leave=False,
                   disable=args.no_progress)
        for x, y in bar:
            loss = float(step(x, y).numpy())
            total, count = total + loss * x.shape[0], count + x.shape[0]
            bar.set_postfix(loss=f"{loss:.4f}")
        seconds = time.perf_counter() - start
        model.eval()
        correct = sum(int((predict(x).numpy().argmax(1) == y.numpy()).sum()) for x, y in test_loader)
        print(f"epoch {epoch}: loss {total / count:.4f}  test accuracy {correct / len(test_set):.4f}  "
              f"{len(train_loader) / seconds:.1f} steps/s", flush=True)
    return 0


def dump(args):
    np.random.seed(0)
    model = build_mlp(hidden=(32, 16))
    optimizer = ndl.optim.Adam(model.parameters(), lr=1e-3)
    step = ndl.compile(training_step(model, optimizer), device=args.device)
    rng = np.random.default_rng(0)
    step(rng.random((args.batch_size, 784), dtype=np.float32), rng.integers(0, 10, args.batch_size))
    try:
        print(step.ir(args.stage))
    except KeyError as e:
        print(f"ndlc dump: {e.args[0]}", file=sys.stderr)
        return 2
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ndlc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train", help="train the Fashion-MNIST MLP (784-512-BN-ReLU-256-BN-ReLU-10), compiled")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data", default=None, help="directory of the Fashion-MNIST idx .gz files "
                   "(default: $NDLC_DATA, then /usr/share/datasets/fashion-mnist)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    d = commands.add_parser("dump", help="print a compilation stage of the example training step")
    d.add_argument("stage", nargs="?", default="planned",
                   help="traced, grad, simplified, decomposed, fused, scheduled, planned, llvm, llvm_opt, asm (default: planned)")
    d.add_argument("--batch-size", type=int, default=8)
    for sub in (t, d):
        sub.add_argument("--device", default="cpu")
        sub.add_argument("-v", "--verbose", action="store_true", help="log compilations")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    try:
        return {"train": train, "dump": dump}[args.command](args)
    except ndl.NdlcError as e:
        print(f"ndlc {args.command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `ndlc dump llvm | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
