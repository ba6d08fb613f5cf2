"""'chunks' kernels (column sums over a long reduced loop) combine their partials in blocks of
columns (codegen/llvm_chunks.py COMBINE_BLOCK): every column of a partial block is combined, in chunk
order, whatever the team; a chunk's rows add into its partials ROWS_AT_ONCE at a time, in order."""
import re

import numpy as np
import pytest

from ndlc.codegen.llvm_chunks import COMBINE_BLOCK, PARTIALS_BYTES, ROWS_AT_ONCE
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


def _chunked_sum(x, chunks):
    """Column sums of float32 `x` as a 'chunks' kernel orders them: each chunk's rows one after
    another, then the chunks' partials in chunk order."""
    n = len(x)
    size = -(-n // chunks)
    partials = []
    for c in range(chunks):
        partial = np.zeros(x.shape[1], np.float32)
        for i in range(c * size, min(n, (c + 1) * size)):
            partial = partial + x[i]
        partials.append(partial)
    total = partials[0]
    for partial in partials[1:]:
        total = total + partial
    return total


@pytest.mark.parametrize("n, d", [(300, 9000), (4096, 1024), (2 * ROWS_AT_ONCE * 16 + 3, PARTIALS_BYTES // 4)])
def test_rows_added_at_once_keep_each_columns_order_bit_for_bit(two_threads, n, d):
    """Wide rows (partials past PARTIALS_BYTES) add into the partials in groups of ROWS_AT_ONCE
    and the chunk's rest one at a time (300 rows: chunks of 19, two groups and 3 rows; the last
    chunk 15 rows), narrow ones one at a time: each column's partial adds the rows in order, the
    bits of the rows one at a time, on any team."""
    program = compile_graph(parse(COLUMN_SUM.format(n=n, d=d)))
    (kernel,) = program.kernels.kernels
    assert kernel.strategy == Strategy.CHUNKS, str(kernel)
    x = np.random.default_rng(n).standard_normal((n, d), dtype=np.float32)
    expected = _chunked_sum(x, kernel.chunks)
    for team in (1, 2):
        program.team.current = team
        (total,) = program.run(x)
        assert total.tobytes() == expected.tobytes(), f"team {team}: {np.abs(total - expected).max()}"
    np.testing.assert_allclose(total, x.astype(np.float64).sum(0), rtol=1e-4, atol=1e-4)


COLUMN_SUM = """
graph @columns(%x: f32[{n},{d}]) {{
  %0 = summation(%x, axes=(0,)) : f32[{d}]
  return %0
}}"""
PRODUCT_SUM = """
graph @columns(%x: f32[{n},{d}], %y: f32[{n},{d}]) {{
  %0 = multiply(%x, %y) : f32[{n},{d}]
  %1 = summation(%0, axes=(0,)) : f32[{d}]
  return %1
}}"""


@pytest.mark.parametrize("graph, d, rows", [(COLUMN_SUM, 8192, ROWS_AT_ONCE), (PRODUCT_SUM, 8192, ROWS_AT_ONCE // 2),
                                            (COLUMN_SUM, 1024, 0)])
def test_wide_rows_add_into_a_loaded_partial_at_once(graph, d, rows):
    """The LLVM IR adds `rows` rows' vectors to a loaded partial in one basic block, a chain of
    plain fadds (with `reassoc`, LLVM could reorder the rows): ROWS_AT_ONCE rows of one array, half
    as many of two (each row of each a stream), none where a row's partials fit in PARTIALS_BYTES."""
    program = compile_graph(parse(graph.format(n=256, d=d)))
    optimized = program.ir("llvm_opt")
    (body,) = re.findall(r'define internal \w* ?void @"?ndlc_k\w+\.body"?\(.*?\n}', optimized, re.S)
    assert max(len(re.findall(r"fadd <\d+ x float>", block)) for block in body.split("\n\n")) == rows
