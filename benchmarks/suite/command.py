"""`ndlc bench` (ndlc/cli.py calls `run(args)`): choose the cases and contenders, measure them,
print every table and write RESULTS.md and ratios.png."""
import os
import sys
import tempfile

import mlp_step
import model_steps
from suite import chart, report
from suite.cases import CASES
from suite.contenders import CONTENDERS
from suite.measure import measure_cases, sgemm_rate, stream_bandwidth, threads

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP_NAME = "MLP training step"
STEP_BATCHES = {False: (64, 256), True: (4, 8)}  # the convolutional models' training steps, by --quick


def output_path(args, name="RESULTS.md"):
    """Where the report `name` goes: --output; else benchmarks/`name` for a full, unfiltered run, and
    a new temporary folder for --quick or --only (which must not overwrite the committed one)."""
    if args.output:
        return args.output
    if args.quick or args.only:
        return os.path.join(tempfile.mkdtemp(prefix="ndlc-bench-"), name)
    return os.path.join(HERE, name)


def choose(args):
    """The cases --only selects, whether the MLP step is among them, the contenders that run and
    why the others do not."""
    only = (args.only or "").lower()
    cases = [case for case in CASES if only in case.name(args.quick).lower()]
    contenders, not_run = [], {}
    for contender in CONTENDERS:
        why = contender.missing()
        if contender.name == "torch.compile" and not args.torch_compile and not why:
            why = "left out by --quick or --no-torch-compile; --torch-compile runs it"
        if why:
            not_run[contender.name] = why
        else:
            contenders.append(contender)
    return cases, only in MLP_NAME.lower(), contenders, not_run


def run(args):
    """`ndlc bench` (args from ndlc/cli.py: quick, repeats, rounds, threads, only, output, plot, device,
    torch_compile, progress): measure, print every table, write RESULTS.md and ratios.png; 1 if a
    result was wrong, torch.compile fell back to eager, or ndlc or numpy could not run a case; 2 if
    --only selects nothing."""
    args.repeats = args.repeats or (2 if args.quick else 20)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.torch_compile = not args.quick if args.torch_compile is None else args.torch_compile
    cases, with_mlp, contenders, not_run = choose(args)
    models = [m for m in model_steps.MODELS if (args.only or "").lower() in f"{m} training step"]
    if not cases and not with_mlp and not models:
        print(f"ndlc bench: no case matches --only {args.only!r}", file=sys.stderr)
        return 2
    machine, rows, mlp = measure_all(args, cases, with_mlp, contenders)
    steps = measure_models(args, models)
    write(args, machine, rows, contenders, not_run, mlp, steps)
    failed = [(row.name, name, cell.note) for row in rows for name, cell in row.cells.items() if cell.bad]
    failed += [(f"{model} training step, batch {batch}", name, note) for model, batch, name, _, note, _ in steps
               if note.startswith(("MISMATCH", "FALLBACK"))]
    for case, name, note in failed:
        print(f"ndlc bench: {case}: {name}: {note}", file=sys.stderr)
    return 1 if failed else 0


def measure_all(args, cases, with_mlp, contenders):
    """The machine's yardsticks (stream bandwidth, sgemm GFLOP/s, the 1-minute load average before
    and after), the kernel rows and the MLP step, on args.threads threads under a progress bar."""
    from tqdm import tqdm
    runs = sum(1 if contender.lingers else args.rounds for contender in contenders)
    steps = len(cases) * runs + (len(mlp_step.CONTENDERS) + 1) * with_mlp + 2
    machine = {"load": [os.getloadavg()[0]]}
    with threads(args.threads), tqdm(total=steps, unit="run", file=sys.stderr, leave=False,
                                     disable=not args.progress) as bar:
        for name, measure in (("bandwidth", stream_bandwidth), ("sgemm", sgemm_rate)):
            bar.set_description(name)
            machine[name] = measure(args.quick)
            bar.update()
        mlp = measure_mlp(args.repeats, bar) if with_mlp else None  # before JAX's pool exists
        rows = measure_cases(cases, contenders, args.quick, args.repeats, args.device, bar, args.rounds)
    machine["load"].append(os.getloadavg()[0])
    return machine, rows, mlp


def measure_models(args, models):
    """The LeNet-BN and ResNet9 training steps' rows (model_steps.py) at batch 64 and 256 (4 and 8
    with --quick)."""
    if not models:
        return []
    with threads(args.threads):
        return model_steps.run(models, STEP_BATCHES[args.quick], args.repeats, torch_compile=args.torch_compile)


def write(args, machine, rows, contenders, not_run, mlp, steps):
    """Print every table RESULTS.md gets (the kernels with their notes, the MLP step, the models'
    steps); write RESULTS.md and, beside it, ratios.png."""
    table_lines, note_lines = report.table(rows, contenders), report.notes(rows, not_run, machine)
    spread_lines = report.spread_table(rows)
    mlp_lines = mlp_step.section(*mlp, args.repeats) if mlp else []
    step_lines = model_steps.section(steps, args.repeats) if steps else []
    print("\n".join(table_lines + [""] + note_lines + [""] + (spread_lines + [""] if spread_lines else [])
                    + mlp_lines + step_lines))
    path = os.path.abspath(output_path(args))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    plotted = bool(rows) and args.plot and chart.plot(rows, os.path.join(os.path.dirname(path), "ratios.png"))
    kernels = report.kernel_section(args, table_lines, note_lines, plotted, spread_lines) if rows else []
    with open(path, "w") as f:
        f.write(report.document(args, machine, kernels, mlp_lines, step_lines))
    print(f"wrote {path}" + (" and ratios.png beside it" if plotted else ""))


def measure_mlp(repeats, bar):
    """The MLP step's rows and compile times, by mlp_step's own contenders and timing."""
    bar.set_description(MLP_NAME)
    rows = mlp_step.run(repeats, progress=lambda name: bar.update())
    compile_seconds = mlp_step.compile_times()
    bar.update()
    return rows, compile_seconds
