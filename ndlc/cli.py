"""The `ndlc` command: `ndlc train` trains the Fashion-MNIST MLP (or `--model lenet`) compiled; `ndlc dump STAGE`
prints one compilation stage of the built-in example (the MLP's training step); `ndlc run FILE` compiles
a graph given as text (such a stage, edited or not) and runs it on .npy inputs; `ndlc bench` runs
the benchmark suite (benchmarks/suite/) and writes benchmarks/RESULTS.md."""
import argparse
import importlib
import importlib.util
import logging
import math
import os
import sys
import time
import zipfile
import zlib

import numpy as np

import ndlc as ndl
from ndlc.cli_paths import UserError, checkpoint_folder, output_file, plot_file
from ndlc.curves import History
from ndlc.distributed import Job, end_job
from ndlc.env import cores
from ndlc.examples import lenet
from ndlc.examples.train_mlp import build_mlp, training_step
from ndlc.ir.types import TensorType

# model -> (build it for images of `size` pixels, the shape it takes a batch of b in, its optimizer)
MODELS = {
    "mlp": (lambda size: build_mlp(in_features=size), lambda b: (b, -1),
            lambda params, args: ndl.optim.Adam(params, lr=args.lr or 1e-3, weight_decay=args.weight_decay)),
    "lenet": (lambda size: lenet.build_lenet(), lambda b: (b, 1, 28, 28),
              lambda params, args: ndl.optim.SGD(params, lr=args.lr or lenet.LEARNING_RATE,
                                                 weight_decay=args.weight_decay)),
}
CHECKPOINT_KEYS = ("model_name", "batch_size", "epoch", "model", "optimizer", "rng", "history")


def train(args):
    from tqdm import tqdm
    for path, option in ((args.log_json, "--log-json"), (args.plot, "--plot")):
        if path:
            output_file(path, option)
    if args.checkpoint:
        checkpoint_folder(args.checkpoint)
    try:
        train_set = ndl.data.FashionMNIST(train=True, root=args.data)
        test_set = ndl.data.FashionMNIST(train=False, root=args.data)
    except (OSError, ValueError) as e:  # missing or corrupt files: the message names them
        print(f"ndlc train: {e}", file=sys.stderr)
        return 2
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print("ndlc train: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return 2
    if args.plot:
        plot_file(args.plot)
    np.random.seed(args.seed)
    job = Job(args.distributed)  # before compiling: it sets the threads per rank
    build, batch_shape, make_optimizer = MODELS[args.model]
    model = build(train_set[0][0].size)
    optimizer = make_optimizer(model.parameters(), args)
    history = History(args.log_json if job.is_main else None)
    first = resume(args, model, optimizer, history, announce=job.is_main) if args.resume else 1
    if first > args.epochs:
        if job.is_main:
            print(f"nothing to train: {checkpoint_path(args)} already holds epoch {first - 1}, and "
                  f"--epochs is {args.epochs} (raise --epochs to train further)", flush=True)
        history.close()
        return 0
    optimizer = job.distribute(model, optimizer, args.sync_batchnorm)
    step = ndl.compile(training_step(model, optimizer), device=args.device)
    predict = ndl.compile(model, device=args.device)
    train_loader, test_loader = job.loaders(train_set, test_set, args.batch_size, args.seed)
    for epoch in range(first, args.epochs + 1):
        job.start_epoch(epoch)
        model.train()
        total, count, start = 0.0, 0, time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}", unit="step", leave=False,
                   disable=args.no_progress or not job.is_main)
        for x, y in bar:
            loss = float(step(x.numpy().reshape(batch_shape(x.shape[0])), y).numpy())
            total, count = total + loss * x.shape[0], count + x.shape[0]
            history.step(epoch, loss)
            bar.set_postfix(loss=f"{loss:.4f}")
        seconds = time.perf_counter() - start
        model.eval()
        correct = sum(int((predict(x.numpy().reshape(batch_shape(x.shape[0]))).numpy().argmax(1) == y.numpy()).sum())
                      for x, y in test_loader)
        total, count, correct = job.sum(total, count, correct)
        if not job.is_main:
            continue
        history.epoch(epoch, total / count, correct / len(test_set), seconds, len(train_loader))
        print(f"epoch {epoch}: loss {total / count:.4f}  test accuracy {correct / len(test_set):.4f}  "
              f"{len(train_loader) / seconds:.1f} steps/s", flush=True)
        if args.checkpoint:
            save_checkpoint(args, epoch, model, optimizer, history)
        if args.plot:
            history.plot(args.plot)
    history.close()
    return 0


def checkpoint_path(args):
    return os.path.join(args.checkpoint, "last.npz")


def save_checkpoint(args, epoch, model, optimizer, history):
    """Everything the next epoch depends on: weights, optimizer slots, numpy's RNG (the data
    loader's shuffle) and the curves so far; written atomically over the last one."""
    os.makedirs(args.checkpoint, exist_ok=True)
    ndl.save({"model_name": args.model, "batch_size": args.batch_size, "epoch": epoch,
              "model": model.state_dict(), "optimizer": optimizer.state_dict(),
              "rng": np.random.get_state(), "history": history.state()}, checkpoint_path(args))


def resume(args, model, optimizer, history, announce=True):
    """Load the last checkpoint into the model, optimizer, RNG and history; the next epoch."""
    path = checkpoint_path(args)
    checkpoint = ndl.load(path)
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise ndl.CheckpointError(f"{path} was not written by ndlc train (it lacks {', '.join(missing)}): "
                                  "--resume continues a run from the checkpoint its --checkpoint saved")
    for key, option in (("model_name", "model"), ("batch_size", "batch_size")):
        if checkpoint[key] != getattr(args, option):
            raise ndl.CheckpointError(f"{path} was written by a run with --{option.replace('_', '-')} "
                                      f"{checkpoint[key]}, not {getattr(args, option)}")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    try:
        np.random.set_state(checkpoint["rng"])
        history.restore(checkpoint["history"])
        epoch = int(checkpoint["epoch"])
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ndl.CheckpointError(f"{path} is not a checkpoint of ndlc train: its rng, history or epoch "
                                  f"cannot be restored ({type(e).__name__}: {e})") from None
    if announce:  # every rank of a distributed job resumes; rank 0 says so
        print(f"resumed from {path} after epoch {epoch}", flush=True)
    return epoch + 1


def dump(args):
    for path, option in ((args.output, "--output"), (args.inputs, "--inputs")):
        if path:
            output_file(path, option)
    np.random.seed(0)
    model = build_mlp(hidden=(32, 16))
    optimizer = ndl.optim.Adam(model.parameters(), lr=1e-3)
    step = ndl.compile(training_step(model, optimizer), device=args.device)
    rng = np.random.default_rng(0)
    batch = rng.random((args.batch_size, 784), dtype=np.float32), rng.integers(0, 10, args.batch_size)
    step(*batch)
    if args.inputs:  # a next step's arguments, named as in the graph stages' text (constants too)
        program = step.last.program
        arrays = dict(zip(program.kernels.inputs, step.last.captured.arguments(batch)))
        np.savez(args.inputs, **arrays, **program.kernels.constants)
    try:
        text = step.ir(args.stage, format=args.format)
    except KeyError as e:
        print(f"ndlc dump: {e.args[0]}", file=sys.stderr)
        return 2
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


def run(args):
    """Compile the graph text of `args.file` and run it on the named .npy/.npz inputs."""
    if args.output:
        output_file(args.output, "--output")
    text = read_text(args.file)
    try:
        compiled = ndl.compile_ir(text, check=args.check)
    except ndl.ir.IRParseError as e:
        print(f"ndlc run: {args.file}: {e}", file=sys.stderr)
        return 1
    arrays = {}
    for spec in args.input:
        name, _, path = spec.rpartition("=")
        loaded = read_arrays(path, spec)
        if isinstance(loaded, dict) == bool(name):
            raise UserError(f"--input {spec}: " + ("a .npz holds arrays already named: give it as FILE.npz"
                                                   if name else "a single .npy array needs a name (NAME=FILE.npy)"))
        loaded = loaded if isinstance(loaded, dict) else {name: loaded}
        twice = sorted(set(loaded) & set(arrays))
        if twice:
            raise UserError(f"--input {spec}: input {twice[0]} is given twice")
        arrays.update(loaded)
    try:
        results = dict(zip(compiled.names, compiled(**arrays)))
    except IndexError as e:  # an index input outside its table: the data's fault
        raise UserError(f"--input: {e}") from None
    for name, array in results.items():
        value = f" = {array.item():.6g}" if array.size == 1 else ""
        print(f"{name}: {TensorType.of(array)}{value}")
    if args.output:
        np.savez(args.output, **results)
    return 0


def read_text(path):
    """The text of the graph file `path` (less the byte-order mark some editors write first), or a
    UserError saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text file (byte {e.start} is not UTF-8); ndlc run reads a "
                        "graph's text, such as `ndlc dump grad -o FILE` writes") from None
    except OSError as e:
        raise UserError(f"{path}: {e.strerror}") from None


def read_arrays(path, spec):
    """The array of a .npy file, or the arrays of a .npz as a dict (all read now, so a truncated
    member fails here), or a UserError naming the --input `spec` and the problem."""
    try:
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    return {name: loaded[name] for name in loaded.files}
            return loaded
    except OSError as e:
        raise UserError(f"--input {spec}: {path}: {e.strerror or e}") from None
    except ValueError as e:
        if str(e).startswith("Object arrays"):  # an intact .npy of objects: unpickling would run code
            # (numpy calls a file that is no .npy at all "pickled (object) data" too: that one is corrupt)
            raise UserError(f"--input {spec}: {path} holds an array of Python objects, which is stored "
                            "pickled and is not read; save numbers (float32, int64, bool, ...)") from None
        raise UserError(f"--input {spec}: {path} is not a readable .npy or .npz file (truncated or "
                        f"corrupt: {e})") from None
    except (EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"--input {spec}: {path} is not a readable .npy or .npz file (truncated or "
                        f"corrupt: {e})") from None


BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def bench(args):
    """Check the device, then run the suite (benchmarks/suite/; for --device cuda the GPU check,
    benchmarks/gpu.py), which lives in the source tree beside the package."""
    ndl.compile(lambda: None, device=args.device)  # refuses a device that is not built, before any timing
    if args.output:  # a report that cannot be written is refused now, not after the timings
        output_file(args.output, "--output", create=True)
    if args.compile or args.contention:
        name = "compile_time" if args.compile else "contention"
        script = load_suite(name)
        extra = (["--quick"] if args.quick and args.contention else []) + \
            ([("--out" if args.compile else "--output"), args.output] if args.output else [])
        return 2 if script is None else script.main(extra)
    if args.device == "cuda":
        gpu = load_suite("gpu")
        return 2 if gpu is None else gpu.main(["--repeats", str(args.repeats or 20)] + ["--quick"] * bool(args.quick)
                                               + (["--output", args.output] if args.output else []))
    suite = load_suite()
    return 2 if suite is None else suite.run(args)


def load_suite(name="suite"):
    """benchmarks/<name> (a package, or a .py script) of the checkout this package runs from (it is
    not installed with the package), or None after saying why it is missing."""
    where = os.path.join(BENCHMARKS, name)
    if not (os.path.isfile(os.path.join(where, "__init__.py")) or os.path.isfile(where + ".py")):
        print(f"ndlc bench: no benchmark suite at {where}: it ships in ndlc's "
              "source tree, not in the installed package; run from a checkout installed with "
              "`pip install -e .`", file=sys.stderr)
        return None
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    return importlib.import_module(name)


def _positive(text):
    """An argparse type: a positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _seed(text):
    """An argparse type: a seed numpy accepts, an integer in [0, 2**32)."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), not {text}")
    return value


def _finite(least, inclusive):
    """An argparse type: a finite float at least `least` (above it unless `inclusive`)."""
    def number(text):
        value = float(text)
        if not math.isfinite(value) or value < least or (value == least and not inclusive):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>=' if inclusive else '>'} {least}, not {text}")
        return value
    return number


def add_bench(commands):
    """The `ndlc bench` subcommand and its options (--device is added with the others')."""
    b = commands.add_parser(
        "bench", help="benchmark ndlc's compiled kernels against numpy, PyTorch, torch.compile and JAX",
        description="Time each kernel case (BatchNorm1d and LayerNorm1d as modules and written by hand, "
        "SoftmaxLoss, a relu chain, matmul, Adam, convolutions, an LSTM and a Transformer step; forward "
        "and forward+backward) compiled by ndlc and in hand-written numpy, PyTorch eager, torch.compile "
        "and JAX where they are installed, each result checked against numpy's first; then the MLP "
        "training step (benchmarks/mlp_step.py) and the LeNet-BN and ResNet9 steps at batch 64 and 256 "
        "(benchmarks/model_steps.py). Prints every table and writes RESULTS.md and ratios.png "
        "(benchmarks/ for a full run). Exit status 1 if a result was wrong (MISMATCH) or torch.compile "
        "ran a case eagerly (FALLBACK).")
    b.add_argument("--compile", action="store_true", help="instead of the kernel cases, time to the first "
                   "compiled step of the MLP, LeNet-BN, a Transformer layer and the LSTM LM at 35 and 70 steps, "
                   "cold and warm, in fresh processes (benchmarks/compile_time.py; writes benchmarks/COMPILE.md)")
    b.add_argument("--contention", action="store_true", help="instead of the kernel cases, the MLP and "
                   "LeNet-BN steps alone, two copies at once and beside a busy process, at 1 and 2 threads, "
                   "ndlc and PyTorch (benchmarks/contention.py; writes benchmarks/CONTENTION.md)")
    b.add_argument("--quick", action="store_true",
                   help="tiny sizes and 2 calls each, a smoke test of the whole suite in seconds; "
                   "writes to a temporary folder unless --output is given")
    b.add_argument("--repeats", type=_positive, help="timed calls per case and contender, after "
                   "warm-up (default 20, 2 with --quick); fewer where calls take over 2 s in all")
    b.add_argument("--rounds", type=_positive, help="times every contender is timed on every kernel case, "
                   "contender after contender; a cell is the median of its rounds' medians (default 3, 1 "
                   "with --quick), so that the machine's speed drifting within a run falls on every contender")
    b.add_argument("--threads", type=_positive, default=cores(),
                   help="threads for every contender: NDLC_THREADS, torch.set_num_threads, OpenBLAS "
                   "through threadpoolctl if installed (default: the cores this process may use, %(default)s)")
    b.add_argument("--only", metavar="SUBSTRING", help="only the cases whose name contains SUBSTRING "
                   "(case-insensitive; 'mlp' selects the MLP step)")
    b.add_argument("--output", metavar="PATH", help="RESULTS.md to write (default: benchmarks/RESULTS.md "
                   "for a full run; a temporary folder with --quick or --only); ratios.png goes beside it")
    b.add_argument("--no-plot", dest="plot", action="store_false", help="no ratios.png")
    b.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None,
                   help="time torch.compile too (default: yes, except with --quick: it compiles each case "
                   "for seconds, the first for over 20 s on 2 cores, too slow for a smoke test)")
    b.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return b


VERBOSE = ("log to stderr what the compiler decides: each fusion decision (which nodes start or join "
           "a kernel, and why) and each recompilation of a step (its new argument types, and what changed "
           "since the last compilation); warnings (cache entries rebuilt, libraries missing) "
           "print without -v (default: off; NDLC_LOG=fusion,compile,... picks loggers)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ndlc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train", help="train a Fashion-MNIST model compiled: the MLP "
                            "(784-512-BN-ReLU-256-BN-ReLU-10, Adam) or LeNet-BN (SGD)",
                            description="Train a model on Fashion-MNIST with its training step compiled by "
                            "ndlc; after each epoch print the mean training loss, the test accuracy and the "
                            "steps per second.")
    t.add_argument("--model", choices=sorted(MODELS), default="mlp", help="mlp: 784-512-BN-ReLU-256-BN-"
                   "ReLU-10 trained by Adam; lenet: LeNet with BatchNorm (two 5x5 convolutions, average "
                   "pooling, 120 and 84 units, sigmoids) trained by SGD (default: %(default)s)")
    t.add_argument("--epochs", type=_positive, default=1, metavar="N", help="passes over the training "
                   "images in all: --resume continues up to epoch N (default: %(default)s)")
    t.add_argument("--batch-size", type=_positive, default=256, metavar="N", help="images per training step, the "
                   "global batch with --distributed; also the test batch (default: %(default)s)")
    t.add_argument("--lr", type=_finite(0, inclusive=False), default=None,
                   help="learning rate (default: 1e-3 for mlp's Adam, 1.0 for lenet's SGD)")
    t.add_argument("--weight-decay", type=_finite(0, inclusive=True), default=0.0,
                   help="L2 penalty added to each gradient, needle's form g + wd*w (default: %(default)s)")
    t.add_argument("--seed", type=_seed, default=0, metavar="N", help="seeds the initial weights and the data order "
                   "(default: %(default)s)")
    t.add_argument("--data", default=None, metavar="DIR", help="directory of the Fashion-MNIST idx .gz files "
                   "(default: $NDLC_DATA, then /usr/share/datasets/fashion-mnist)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar per epoch)")
    t.add_argument("--distributed", action="store_true", help="run as one rank of a data-parallel "
                   "job (mpirun -np N ndlc train --distributed): gradients averaged over the ranks, "
                   "--batch-size is the global batch, rank 0 prints and saves; needs mpi4py (default: off)")
    t.add_argument("--sync-batchnorm", action="store_true", help="with --distributed: BatchNorm layers "
                   "normalise with the statistics of every rank's samples together (SyncBatchNorm; default: off)")
    t.add_argument("--checkpoint", metavar="DIR", help="save the model, optimizer and data order's "
                   "RNG to DIR/last.npz after every epoch, atomically (default: no checkpoints)")
    t.add_argument("--resume", action="store_true", help="continue from DIR/last.npz of --checkpoint DIR, "
                   "written by an ndlc train run with the same --model and --batch-size, up to --epochs "
                   "epochs in all (default: start afresh)")
    t.add_argument("--plot", metavar="FILE.png", help="write the loss of every step and each epoch's "
                   "loss and test accuracy as a PNG (matplotlib), after every epoch (default: no plot)")
    t.add_argument("--log-json", metavar="FILE", help="write the same numbers as JSON lines (with "
                   "--resume, those of the checkpoint first; default: no log)")
    d = commands.add_parser("dump", help="print a compilation stage of the example training step")
    d.add_argument("stage", nargs="?", default="planned",
                   help="traced, grad, hoisted, simplified, decomposed, fused, scheduled, planned, llvm, llvm_opt, asm (default: planned)")
    d.add_argument("--batch-size", type=_positive, default=8)
    d.add_argument("--format", choices=("text", "dot"), default="text",
                   help="dot: a Graphviz picture of a graph stage, or of a kernel stage's kernels as clusters")
    d.add_argument("-o", "--output", metavar="FILE", help="write the stage to FILE instead of printing it")
    d.add_argument("--inputs", metavar="FILE.npz", help="also write the arrays of a next call of the step, "
                   "named after the graph's inputs (batch, optimizer numbers, state, constants): "
                   "`ndlc run STAGE_FILE --input FILE.npz` runs a graph stage on them")
    r = commands.add_parser("run", help="compile a graph given as text (a dumped stage, edited or not) and "
                            "run it on numpy arrays")
    r.add_argument("file", help="the graph's text: a traced, grad, hoisted, simplified or decomposed stage")
    r.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy|FILE.npz",
                   help="the array of input %%NAME (every input, state and constants too, is needed), "
                   "or a .npz of arrays named after inputs; repeatable")
    r.add_argument("--output", metavar="FILE.npz", help="write the results: out0, out1, ... and "
                   "new.<state input> for each updated state")
    r.add_argument("--check", action="store_true", help="compare every kernel with the interpreter "
                   "(check mode) and name the first that computes a wrong value")
    b = add_bench(commands)
    for sub in (t, d, b):
        sub.add_argument("--device", default="cpu", help="cpu, or cuda: an NVIDIA GPU, which needs pycuda "
                         "and nvcc (default: %(default)s)")
    for sub in (t, d, r, b):
        sub.add_argument("-v", "--verbose", action="store_true", help=VERBOSE)
    args = parser.parse_args(argv)
    if args.command == "train" and args.resume and not args.checkpoint:
        parser.error("--resume needs --checkpoint DIR (where the last checkpoint is)")
    if args.command == "train" and args.sync_batchnorm and not args.distributed:
        parser.error("--sync-batchnorm needs --distributed (it spans the ranks of a distributed job)")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    try:
        return {"train": train, "dump": dump, "run": run, "bench": bench}[args.command](args)
    except (UserError, ndl.CheckpointError, ndl.StateDictError) as e:  # the user's files: exit 2
        print(f"ndlc {args.command}: {e}", file=sys.stderr)
        end_job(2)
        return 2
    except BrokenPipeError:  # `ndlc dump llvm | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if e.filename is None:
            raise
        print(f"ndlc {args.command}: {e.filename}: {e.strerror}", file=sys.stderr)
        end_job(2)
        return 2
    except ndl.NdlcError as e:
        print(f"ndlc {args.command}: {e}", file=sys.stderr)
        end_job(1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
