"""Each kernel of a model's step on codegen's vectors against the same kernel left to LLVM's
vectoriser (O3), in one process, interleaved: the step compiled twice (the second time with every
kernel's lane loop refused, as before codegen wrote its vectors), then blocks of steps of each
in turn, and each kernel's fastest block's cycles per step from the profile's cycle counter.

    NDLC_THREADS=1 python benchmarks/lane_ab.py --model lenet --rounds 7

Prints, for the kernels whose pipeline differs, cycles per step both ways and their ratio."""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compile_time  # noqa: E402 (the models)


def _compiled(model, scalar):
    """The model's compiled step (with every lane loop refused where `scalar`) and its inputs."""
    import ndlc as ndl
    from ndlc.codegen import llvm, llvm_lanes, llvm_program
    before = llvm.lane_loop, llvm_program.lane_loop
    if scalar:
        llvm.lane_loop = llvm_program.lane_loop = lambda kernel, debug=None: None
    try:
        np.random.seed(0)
        fn, args = compile_time.BUILDERS[model]()
        step = ndl.compile(fn)
        step(*args)
        return step, args, step.last.program
    finally:
        llvm.lane_loop, llvm_program.lane_loop = before
        assert llvm_lanes.lane_loop is before[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet", choices=list(compile_time.BUILDERS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    args = parser.parse_args(argv)
    os.environ["NDLC_PROFILE"] = "1"
    from ndlc.codegen.llvm_lanes import lane_loop
    runs = [_compiled(args.model, scalar) for scalar in (False, True)]
    best = [None, None]
    for r in range(args.rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):  # each first in every other round
            step, inputs, program = runs[i]
            start = program.kernel_cycles.copy()
            for _ in range(args.steps):
                step(*inputs)
            block = (program.kernel_cycles - start) / args.steps
            best[i] = block if best[i] is None else np.minimum(best[i], block)
    kernels = runs[0][2].kernels.kernels
    print(f"{args.model}: kernel, cycles per step on codegen's vectors / left to LLVM (O3), ratio "
          f"(fastest of {args.rounds} blocks of {args.steps} steps)")
    for k, lanes, o3 in zip(kernels, *best):
        if lane_loop(k) is not None and k.gemm is None:
            print(f"  {k.name:4} {k.strategy:6} {str(list(k.extents)):28} {lanes / 1e3:10.1f}k {o3 / 1e3:10.1f}k "
                  f"{lanes / o3:6.2f}")


if __name__ == "__main__":
    main()
