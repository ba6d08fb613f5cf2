"""Whether two versions of ndlc's CPU code generator give the same optimised code: each distinct
kernel of a model's training step (compile_time.py's models) compiled alone, in a module of its
own, through ndlc's pipeline (runtime/native.py `optimise`), and the digests of its LLVM IR, its
optimised IR (as printed, and with each function's local names numbered in order of first use,
so that IR differing only in value names compares equal) and its object code written per kernel
symbol (the kernel's structural key: the same in both versions where the passes are the same).

    python benchmarks/llvm_identity.py --models mlp,lenet,transformer --out after.json
    python benchmarks/llvm_identity.py --compare before.json after.json
    python benchmarks/llvm_identity.py --models lenet --out x.json --dump DIR  (each kernel's optimised IR)

Run the first with each version on PYTHONPATH (e.g. a worktree of the commit before), then
compare: it lists the kernels whose optimised IR or object code differ, and exits 1 if any does."""
import argparse
import hashlib
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compile_time  # noqa: E402 (the models, from the benchmark beside this file)

_LOCAL = re.compile(r'%(?:"(?:[^"\\]|\\.)*"|[-a-zA-Z$._0-9]+)|^([-a-zA-Z$._0-9]+|"[^"]*"):', re.M)


def normalised(text) -> str:
    """Optimised IR with each function's local values and blocks renamed %v0, %v1, ... in order
    of first appearance, and comments dropped (LLVM's `; preds = ...` name the blocks)."""
    out = []
    for function in re.split(r"(?m)^(?=define )", text):
        names = {}

        def rename(match):
            name = match.group(1)
            key = "%" + name.strip('"') if name else "%" + match.group(0)[1:].strip('"')
            new = names.setdefault(key, f"%v{len(names)}")
            return f"{new[1:]}:" if name else new
        body = re.sub(r"[ \t]*;[^\n]*", "", function)
        out.append(_LOCAL.sub(rename, body))
    return "".join(out)


def digests(model, dump=None) -> dict:
    """symbol -> {ir, optimised, normalised, object}: sha256 digests of each distinct kernel of
    `model`'s step, compiled alone (`dump`: a directory to write each one's optimised IR into,
    normalised, as SYMBOL.ll)."""
    import llvmlite.binding as llvm
    import ndlc as ndl
    from ndlc.codegen.llvm_program import lower_to_llvm
    from ndlc.runtime import native
    fn, args = compile_time.BUILDERS[model]()
    step = ndl.compile(fn)
    step(*args)
    program = lower_to_llvm(step.last.program.kernels, *native.host_target(), fma=native.host_fma(),
                            avx512=native.host_avx512())
    result = {}
    for symbol in program.kernels:
        text, tm = program.module([symbol], symbol), native.target_machine()
        module = llvm.parse_assembly(text)
        native.optimise(module, tm, not program.vectorised(symbol))
        optimised = str(module)
        if dump:
            with open(os.path.join(dump, f"{symbol}.ll"), "w") as f:
                f.write(normalised(optimised))
        result[symbol] = {name: hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]
                          for name, data in (("ir", text), ("optimised", optimised),
                                             ("normalised", normalised(optimised)),
                                             ("object", tm.emit_object(module)))}
    return result


def compare(before, after) -> list:
    """Lines naming each model's kernels whose optimised code differs between two digest files."""
    lines = []
    for model in sorted(set(before) | set(after)):
        a, b = before.get(model, {}), after.get(model, {})
        if set(a) != set(b):
            lines.append(f"{model}: different kernels ({len(set(a) ^ set(b))} in one only): the passes differ")
            continue
        emitted = sum(a[s]["ir"] != b[s]["ir"] for s in a)
        differ = [s for s in a if a[s]["normalised"] != b[s]["normalised"] or a[s]["object"] != b[s]["object"]]
        named = sum(a[s]["optimised"] != b[s]["optimised"] and s not in differ for s in a)
        lines.append(f"{model}: {len(a)} kernels, LLVM IR differs in {emitted}, optimised IR in value names "
                     f"only in {named}, optimised IR or object code in {len(differ)}")
        lines += [f"  {s}: optimised IR {a[s]['normalised'] != b[s]['normalised']}, "
                  f"object {a[s]['object'] != b[s]['object']}" for s in differ]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,lenet,transformer")
    parser.add_argument("--out", help="write the digests of this version's kernels here (JSON)")
    parser.add_argument("--dump", help="with --out: write each kernel's optimised IR, normalised, into this directory")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="two digest files")
    args = parser.parse_args(argv)
    if args.compare:
        files = []
        for path in args.compare:
            with open(path) as f:
                files.append(json.load(f))
        lines = compare(*files)
        print("\n".join(lines))
        return 1 if any(line.startswith("  ") or "passes differ" in line for line in lines) else 0
    if not args.out:
        parser.error("give --out FILE (to write digests) or --compare BEFORE AFTER")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(compile_time.MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; models: {', '.join(compile_time.MODELS)}")
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ndlc-identity-") as cache:
        os.environ["NDLC_CACHE_DIR"] = cache  # every step compiled: a program read back from the cache
        # is its parsed Kernel IR, whose kernels may key differently
        found = {model: digests(model, args.dump) for model in models}
    with open(args.out, "w") as f:
        json.dump(found, f, indent=1, sort_keys=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
