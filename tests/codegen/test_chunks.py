"""'chunks' kernels (column sums over a long reduced loop) combine their partials in blocks of
columns (codegen/llvm.py COMBINE_BLOCK): every column of a partial block is combined, in chunk
order, whatever the team."""
import re

import numpy as np
import pytest

from ndlc.codegen.llvm import COMBINE_BLOCK
from ndlc.ir import parse
from ndlc.ir.kernel import Strategy
from ndlc.jit.compile import compile_graph

BATCHNORM = """
graph @stats(%x: f32[{n},{d}]) {{
  %0 = summation(%x, axes=(0,)) : f32[{d}]
  %1 = divide_scalar(%0, scalar={n}.0) : f32[{d}]
  %2 = reshape(%1, shape=(1, {d})) : f32[1,{d}]
  %3 = broadcast_to(%2, shape=({n}, {d})) : f32[{n},{d}]
  %4 = negate(%3) : f32[{n},{d}]
  %5 = add(%x, %4) : f32[{n},{d}]
  %6 = power_scalar(%5, scalar=2) : f32[{n},{d}]
  %7 = summation(%6, axes=(0,)) : f32[{d}]
  %8 = divide_scalar(%7, scalar={n}.0) : f32[{d}]
  %9 = sqrt(%8) : f32[{d}]
  %10 = reshape(%9, shape=(1, {d})) : f32[1,{d}]
  %11 = broadcast_to(%10, shape=({n}, {d})) : f32[{n},{d}]
  %12 = divide(%5, %11) : f32[{n},{d}]
  return %1, %8, %12
}}"""


@pytest.mark.parametrize("d", [COMBINE_BLOCK - 27, 2 * COMBINE_BLOCK, 3 * COMBINE_BLOCK + 5])
def test_partial_blocks_of_columns_are_combined_in_chunk_order_on_any_team(two_threads, d):
    n = 4096  # work past 2**17: split over the team
    program = compile_graph(parse(BATCHNORM.format(n=n, d=d)))
    (kernel,) = [k for k in program.kernels.kernels if k.strategy == Strategy.CHUNKS]
    assert kernel.split is not None and kernel.split.threads == 2, str(kernel)
    x = (np.random.default_rng(d).standard_normal((n, d)) * 3 + 5).astype(np.float32)
    runs = {}
    for team in (1, 2, 1):
        program.team.current = team
        runs[team] = [out.copy() for out in program.run(x)]
    mean, var, normalised = runs[1]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(runs[1], runs[2])), "the team changed the bits"
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(0), rtol=1e-5)
    np.testing.assert_allclose(var, x64.var(0), rtol=1e-4)
    np.testing.assert_allclose(normalised, (x64 - x64.mean(0)) / x64.std(0), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("d, remainder", [(2 * COMBINE_BLOCK, False), (3 * COMBINE_BLOCK + 5, True)])
def test_whole_blocks_of_columns_vectorise_without_a_scalar_remainder(d, remainder):
    """Columns in whole blocks: every loop of the kernel has a trip count that is a multiple of the
    vector width, and LLVM makes no scalar copy of a loop's body (its stores of one float)."""
    program = compile_graph(parse(BATCHNORM.format(n=4096, d=d)))
    optimized = program.ir("llvm_opt")
    (body,) = re.findall(r'define internal \w* ?void @"?ndlc_k\w+\.body"?\(.*?\n}', optimized, re.S)
    assert re.search(r"store <\d+ x float>", body)
    assert bool(re.search(r"store float ", body)) == remainder
