"""Benchmark: time to the first compiled training step, each model in a fresh process, on a new
machine (nothing cached: also the per-machine folder of what every program shares,
runtime/machine.py), cold (an empty NDLC_CACHE_DIR: every kernel optimised and compiled by LLVM;
the per-machine folder kept, as on any machine after its first compilation) and warm (the same directory again: native code from the disk cache), with the step time after it
and the number of kernels.
"First step" is ndlc's own time: from the first call of the compiled step (trace, passes, LLVM,
load) to its first result; building the model and importing ndlc are left out. ndlc's modules are
compiled to bytecode first, as pip does when it installs a package, so that a first step does not
pay for compiling the modules it imports late (where PYTHONDONTWRITEBYTECODE is set, as on the
project's machines, it would: ~20-80 ms). Its CPU seconds
(the measuring process and the builders it forks) are reported beside it: on shared cores the
wall-clock time is mostly the other processes' (a cold MLP took 0.8 s at load 1 and 2-4 s at load
5-6), its CPU time much less so.

    python benchmarks/compile_time.py [--models mlp,lenet,transformer,lstm35,lstm70] [--rounds 5] [--out FILE]
    python benchmarks/compile_time.py --kernels MODEL

Writes benchmarks/COMPILE.md (or --out) with the load average the numbers were taken under.
`--kernels` prints where LLVM's time goes instead: each distinct kernel of the model's step
compiled alone, and the optimiser's costliest passes.
`--child MODEL` is the measurement itself (one process, one model; prints one JSON line)."""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

MODELS = ("mlp", "lenet", "transformer", "lstm35", "lstm70")
DESCRIPTIONS = {
    "mlp": "MLP 784-512-BN-256-BN-10, Adam, batch 256",
    "lenet": "LeNet-BN, SGD, batch 256",
    "transformer": "TransformerLayer 8x64x128, 8 heads, Adam",
    "lstm35": "LSTM LM 35 steps x batch 16, 2 layers, hidden 128, vocab 1000, SGD",
    "lstm70": "the same LSTM LM at 70 steps",
}
STEPS = 15  # step times after the first: their median is reported (the first few after a cold compile run slow)
ROUNDS = 5  # every model, cold and warm, this many times over


def _mlp():
    import ndlc as ndl
    from ndlc.examples.train_mlp import build_mlp, training_step
    model = build_mlp()
    step = training_step(model, ndl.optim.Adam(model.parameters(), lr=1e-3))
    rng = np.random.default_rng(0)
    return step, (rng.standard_normal((256, 784), dtype=np.float32), rng.integers(0, 10, 256))


def _lenet():
    import ndlc as ndl
    from ndlc.examples.lenet import LEARNING_RATE, build_lenet
    from ndlc.examples.train_mlp import training_step
    model = build_lenet()
    step = training_step(model, ndl.optim.SGD(model.parameters(), lr=LEARNING_RATE))
    rng = np.random.default_rng(0)
    return step, (rng.standard_normal((256, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 256))


def _transformer():
    import ndlc as ndl
    layer = ndl.nn.TransformerLayer(128, 8, 16, 256)
    optimizer = ndl.optim.Adam(layer.parameters(), lr=1e-3)

    def step(x, target):
        optimizer.reset_grad()
        loss = ((layer(x) - target) ** 2).sum() / target.size
        loss.backward()
        optimizer.step()
        return loss
    rng = np.random.default_rng(0)
    return step, (rng.standard_normal((8, 64, 128), dtype=np.float32),
                  rng.standard_normal((8, 64, 128), dtype=np.float32))


def _lstm(seq_len, vocab=1000, batch=16, hidden=128, layers=2):
    import ndlc as ndl
    nn = ndl.nn
    embedding, lstm, linear = nn.Embedding(vocab, hidden), nn.LSTM(hidden, hidden, layers), nn.Linear(hidden, vocab)
    params = embedding.parameters() + lstm.parameters() + linear.parameters()
    optimizer, loss_fn = ndl.optim.SGD(params, lr=1.0), nn.SoftmaxLoss()

    def step(x, y, h0, c0):
        optimizer.reset_grad()
        out, (h, c) = lstm(embedding(x), (h0, c0))
        loss = loss_fn(linear(out.reshape((seq_len * batch, hidden))), y)
        loss.backward()
        optimizer.step()
        return loss, h.detach(), c.detach()
    rng = np.random.default_rng(0)
    state = np.zeros((layers, batch, hidden), np.float32)
    return step, (rng.integers(0, vocab, (seq_len, batch)).astype(np.float32),
                  rng.integers(0, vocab, seq_len * batch), state, state)


BUILDERS = {"mlp": _mlp, "lenet": _lenet, "transformer": _transformer,
            "lstm35": lambda: _lstm(35), "lstm70": lambda: _lstm(70)}


def child(model):
    """One model measured in this process: {first, cpu, step_ms, kernels, llvm, stages, path}; `path`,
    the critical path in CPU seconds, robust to the load where wall-clock times are not: this
    thread's outside its share of the LLVM work (the passes before the builders fork, loading and
    the first run after them), and the costliest share of a builder (this thread's or a forked one's)."""
    import ndlc as ndl
    from ndlc.runtime.native import llvm_compilations
    np.random.seed(0)
    fn, args = BUILDERS[model]()
    step = ndl.compile(fn)
    cpu, thread = _cpu_seconds(), time.thread_time()
    start = time.perf_counter()
    step(*args)
    first = time.perf_counter() - start
    cpu, thread = _cpu_seconds() - cpu, time.thread_time() - thread
    times = []
    for _ in range(STEPS):
        start = time.perf_counter()
        step(*args)
        times.append((time.perf_counter() - start) * 1e3)
    program = step.last.program
    stages = {**getattr(step.last.captured, "seconds", {}), **getattr(program, "stage_seconds", {})}
    shares = program.native.builder_cpu  # this thread's share of the LLVM work, then each forked builder's
    return {"first": first, "cpu": cpu, "step_ms": statistics.median(times), "kernels": len(program.kernels.kernels),
            "llvm": llvm_compilations(), "stages": stages,
            "path": (thread - shares[0], max(shares)) if shares else (thread, 0.0)}


def _cpu_seconds():
    """User and system CPU seconds of this process and of its children that ended (the forked
    builders: joined before the first step returns)."""
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def measure(model, cache, machine, bytecode):
    """The child's result for `model` in a fresh process whose NDLC_CACHE_DIR is `cache` and whose
    per-machine folder (runtime/machine.py) is under `machine`, reading ndlc's compiled modules
    from `bytecode` (`compiled_ndlc`)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(NDLC_CACHE_DIR=cache, XDG_CACHE_HOME=machine, PYTHONPYCACHEPREFIX=bytecode)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", model], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{model}: the measuring process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compiled_ndlc(bytecode):
    """ndlc's modules compiled to bytecode under the directory `bytecode` (PYTHONPYCACHEPREFIX)."""
    import ndlc
    env = dict(os.environ, PYTHONPYCACHEPREFIX=bytecode)
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(ndlc.__file__)], env=env, check=True)


def run(models, rounds=ROUNDS, progress=lambda line: print(line, flush=True)):
    """{model: {"new": result, "cold": result, "warm": result, "range": {run: (fastest, slowest)}}}:
    every model on a new machine (the per-machine folder empty too), then cold (that folder kept,
    an empty cache directory), then warm (the same cache directory) in each of `rounds` rounds, the
    models in turn, so that the machine's speed drifting over the run (up to 30% within minutes
    on this VM) falls on every model; each run's result is that of its median round."""
    rounds_of = {model: [] for model in models}
    with tempfile.TemporaryDirectory(prefix="ndlc-bytecode-") as bytecode:
        compiled_ndlc(bytecode)
        for _ in range(rounds):
            for model in models:
                with tempfile.TemporaryDirectory(prefix="ndlc-compile-") as scratch:
                    cache, first_cache, machine = (os.path.join(scratch, name) for name in ("cache", "first", "xdg"))
                    new = measure(model, first_cache, machine, bytecode)
                    cold = measure(model, cache, machine, bytecode)
                    warm = measure(model, cache, machine, bytecode)
                rounds_of[model].append({"new": new, "cold": cold, "warm": warm})
                progress(f"{model}: new machine {new['first']:.2f} s, cold {cold['first']:.2f} s "
                         f"({cold['cpu']:.2f} s CPU), "
                         f"critical path CPU {cold['path'][0]:.2f} + {cold['path'][1]:.2f} s, warm {warm['first']:.2f} s, "
                         f"step {cold['step_ms']:.1f} ms, {cold['kernels']} kernels, {cold['llvm']} LLVM modules")
    return {model: {**{run: _median_round(results, run) for run in ("new", "cold", "warm")},
                    "range": {run: _range(results, run) for run in ("cold", "warm")}}
            for model, results in rounds_of.items()}


def _median_round(results, run):
    """The `run` ('cold' or 'warm') result of the round whose first step took the median time."""
    ordered = sorted((r[run] for r in results), key=lambda result: result["first"])
    return ordered[(len(ordered) - 1) // 2]


def _range(results, run):
    """The fastest and slowest first step of `run` over the rounds."""
    firsts = [r[run]["first"] for r in results]
    return min(firsts), max(firsts)


def report(results, load, rounds) -> str:
    """COMPILE.md: one row per model, and the stage times of each cold compilation."""
    lines = ["# Time to the first compiled training step", "",
             f"Fresh process per measurement; new machine = an empty NDLC_CACHE_DIR and an empty per-machine "
             f"folder (runtime/machine.py: the host's description, the runner, the thread team's library, "
             f"compiled once per machine); cold = another empty NDLC_CACHE_DIR, the per-machine folder kept; "
             f"warm = that NDLC_CACHE_DIR again; "
             f"every model on a new machine, cold and warm in each of {rounds} rounds, the models in turn: "
             f"the median round's "
             f"time, the fastest and slowest round's beside it, and the CPU seconds of the median cold round "
             f"(the process and its forked builders), and its critical path in CPU seconds: the compiling "
             f"thread's outside its share of LLVM's work (passes, fork, load, first run) + the costliest "
             f"builder's share (the compiling thread's or a forked builder's); step: the median of {STEPS} steps after the "
             f"first, in the median cold round. ndlc's modules compiled to bytecode beforehand, as an "
             f"installed package's are. Load average while measured: {load}. Written by "
             "`python benchmarks/compile_time.py`.", "",
             "| model | new machine s | cold s | cold range | cold CPU s | cold critical path CPU s | warm s | warm range | "
             "step ms | kernels | LLVM modules compiled new machine / cold / warm |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model, r in results.items():
        new, cold, warm = r["new"], r["cold"], r["warm"]
        (cold_low, cold_high), (warm_low, warm_high) = r["range"].values()
        lines.append(f"| {DESCRIPTIONS[model]} | {new['first']:.2f} | {cold['first']:.2f} | "
                     f"{cold_low:.2f}-{cold_high:.2f} | "
                     f"{cold['cpu']:.2f} | {cold['path'][0]:.2f} + {cold['path'][1]:.2f} | {warm['first']:.2f} | "
                     f"{warm_low:.2f}-{warm_high:.2f} | "
                     f"{cold['step_ms']:.1f} | {cold['kernels']} | {new['llvm']} / {cold['llvm']} / {warm['llvm']} |")
    if "lstm35" in results and "lstm70" in results:
        ratio = results["lstm70"]["cold"]["first"] / results["lstm35"]["cold"]["first"]
        lines += ["", f"LSTM cold at 70 steps / at 35 steps: {ratio:.2f}x"]
    lines += ["", "## Stage times of the cold compilations (s)", "",
              "'record': verifying and keeping the traced graphs' texts; 'host': the host CPU's description (read "
              "from the disk cache; cold, asked of LLVM); 'import': importing the code generator and llvmlite, "
              "done at the first compilation that needs them; 'LLVM IR': llvmlite building the new "
              "kernels' IR; LLVM's times are wall-clock (its modules are built and compile in parallel where there "
              "are many new kernels).", ""]
    lines += _stage_table(results, "cold")
    lines += ["", "## Stage times of the warm compilations (s)", "",
              "The program cache holds each step: 'program cache' is keying it (hashing the graph's text), reading the entry and checking its layout and plan, "
              "its Kernel IR left unparsed until read (cold: keying it, linking the shared library and writing the "
              "entry); 'load', loading the program's shared library (MCJIT where there is none) and allocating "
              "the buffers.", ""]
    lines += _stage_table(results, "warm")
    return "\n".join(lines) + "\n"


def _stage_table(results, run):
    """Markdown rows of each model's stage times in its `run` ('cold' or 'warm')."""
    stages = list(dict.fromkeys(s for r in results.values() for s in r[run]["stages"]))
    lines = ["| model | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
    for model, r in results.items():
        lines.append(f"| {model} | " + " | ".join(f"{r[run]['stages'].get(s, 0):.3f}" for s in stages) + " |")
    return lines


def kernel_costs(model, passes=8) -> str:
    """Where LLVM's time goes in `model`'s step: each distinct kernel compiled alone in this
    process (its own module, ndlc's pipeline), CPU seconds optimising and making machine code and
    its LLVM IR before and after, costliest first; then the optimiser's `passes` costliest passes.
    A module costs a few ms more than its kernel: the sum is above the step's own LLVM time."""
    import llvmlite.binding as llvm
    import ndlc as ndl
    from ndlc.codegen.llvm_lanes import lane_loop
    from ndlc.codegen.llvm_program import lower_to_llvm
    from ndlc.runtime import native
    fn, args = BUILDERS[model]()
    step = ndl.compile(fn)
    step(*args)
    program = lower_to_llvm(step.last.program.kernels, *native.host_target(), fma=native.host_fma(),
                            avx512=native.host_avx512())
    rows, by_pass = [], {}
    for symbol, (kernel, _, debug) in program.kernels.items():
        text, tm = program.module([symbol], symbol), native.target_machine()
        start = time.process_time()
        module = llvm.parse_assembly(text)
        timing = []
        native.optimise(module, tm, lane_loop(kernel, debug) is None, timing)
        for name, seconds in _pass_seconds(timing[0]):
            by_pass[name] = by_pass.get(name, 0.0) + seconds
        optimised = time.process_time()
        tm.emit_object(module)
        rows.append((optimised - start, time.process_time() - optimised, len(text), len(str(module)), kernel))
    rows.sort(key=lambda row: row[0] + row[1], reverse=True)
    sums = [sum(row[i] for row in rows) for i in range(4)]
    lines = [f"{model}: {len(rows)} distinct kernels, LLVM CPU {sums[0] + sums[1]:.3f} s (optimise {sums[0]:.3f}, "
             f"machine code {sums[1]:.3f}), LLVM IR {sums[2] / 1e3:.0f} KB, optimised {sums[3] / 1e3:.0f} KB",
             "  opt s   mc s  IR KB  opt KB  kernel"]
    for opt, mc, ir, optimised_ir, kernel in rows:
        how = f"{kernel.strategy}{' split' if kernel.split else ''}{' lanes' if lane_loop(kernel) is not None else ''}"
        lines.append(f"  {opt:5.3f}  {mc:5.3f}  {ir / 1e3:5.1f}  {optimised_ir / 1e3:6.1f}  {kernel.name} {how} "
                     f"{tuple(kernel.extents)}")
    costliest = sorted(by_pass.items(), key=lambda item: item[1], reverse=True)[:passes]
    lines.append("optimiser passes (CPU s): " + ", ".join(f"{name} {seconds:.3f}" for name, seconds in costliest))
    return "\n".join(lines)


def _pass_seconds(report):
    """(pass, CPU seconds) per run of a pass in LLVM's pass timing report, which lists each run
    twice with the same times (its timer and one nested in it of the same name): halved."""
    for line in report.splitlines():
        numbers = re.findall(r"([\d.]+) \(", line)
        name = line.rsplit(")", 1)[-1].strip()
        if len(numbers) >= 2 and name != "Total":
            yield name, float(numbers[2] if len(numbers) == 4 else numbers[-1]) / 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="times every model is measured, cold "
                        "and warm, the models in turn; each run reports its median round (default %(default)s)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "COMPILE.md"))
    parser.add_argument("--kernels", choices=MODELS, help="where LLVM's time goes in this model's step")
    parser.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kernels:
        print(kernel_costs(args.kernels))
        return 0
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; models: {', '.join(MODELS)}")
    load_before = os.getloadavg()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    results = run(models, args.rounds)
    load = ", ".join(f"{a:.2f}-{b:.2f}" for a, b in zip(load_before, os.getloadavg()))
    with open(args.out, "w") as f:
        f.write(report(results, f"1/5/15 min {load}", args.rounds))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
