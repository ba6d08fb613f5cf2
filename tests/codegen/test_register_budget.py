"""Register tiles leave one vector register spare: a tile that filled all of AVX2's 16 (4 x 24 or
2 x 40 float32 outputs) kept its accumulators in memory, 20-50x slower (ir/tiles.py)."""
import re

import numpy as np
import pytest

from ndlc.ir import interpret, parse
from ndlc.ir.tiles import register_tile
from ndlc.jit.compile import compile_graph


@pytest.mark.parametrize("rows,columns,ragged,tile", [
    (16, 48, False, (4, 16)),  # not 4 x 24: 12 accumulators + 3 loads + 1 broadcast
    (16, 40, False, (8, 8)),  # not 2 x 40: 10 + 5 + 1
    (16, 33, True, (8, 8)),  # a ragged row of 33: not 4 x 24 either
])
def test_no_tile_fills_every_vector_register(rows, columns, ragged, tile):
    assert register_tile(rows, columns, 4, ragged=ragged, budget=15) == tile


def test_a_conv_over_rows_of_48_keeps_its_tile_in_registers(avx2_tiles):
    """3 -> 16 channels over rows of 48 pixels: blocks of 16 by 4, whose taps (the optimised
    kernel's blocks of fused multiply-adds) neither load nor store an accumulator (4 x 24 kept them
    in memory), results equal the interpreter's."""
    graph = parse("""
graph @c(%x: f32[2,6,50,3], %w: f32[3,3,3,16]) {
  %0 = conv(%x, %w, stride=1, padding=0) : f32[2,4,48,16]
  return %0
}""")
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((2, 6, 50, 3)).astype(np.float32),
              rng.standard_normal((3, 3, 3, 16)).astype(np.float32)]
    program = compile_graph(graph)
    np.testing.assert_allclose(program.run(*inputs)[0], interpret(graph, *inputs)[0], rtol=1e-4, atol=1e-4)
    assert "blocks of 16 i3 by 4 i2" in program.ir("scheduled")
    bodies = [f for f in program.ir("llvm_opt").split("\ndefine ") if ".body(" in f.splitlines()[0]]
    taps = [block for body in bodies for block in re.split(r"\n(?=[\w.]+:)", body) if "@llvm.fma" in block]
    assert taps and not any(re.search(r"(load|store) [^\n]*ptr %(acc|sunkaddr)", block) for block in taps)
