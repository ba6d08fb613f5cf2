"""A register tile of pixels x channels (an NHWC conv nest) whose stores write NCHW planes (the
permute back folded into them, passes/permuted_stores.py) stores each channel's run of pixels as
vectors, its rows transposed in registers (codegen/llvm_rows.py), where a lane's element each took a
scalar store: the same values, so the same bits as the tile storing NHWC."""
import numpy as np
import pytest

from ndlc.ir import interpret, parse, tiles
from ndlc.jit.compile import compile_graph


def conv_graph(n, cin, h, cout, k, padding, nchw):
    ho = h + 2 * padding - k + 1
    back = f"""
  %2 = permute(%1, axes=(0, 3, 1, 2)) : f32[{n},{cout},{ho},{ho}]
  return %2""" if nchw else "\n  return %1"
    return parse(f"""
graph @c(%x: f32[{n},{cin},{h},{h}], %w: f32[{k},{k},{cin},{cout}]) {{
  %0 = permute(%x, axes=(0, 2, 3, 1)) : f32[{n},{h},{h},{cin}]
  %1 = conv(%0, %w, stride=1, padding={padding}) : f32[{n},{ho},{ho},{cout}]{back}
}}""")


# (N, Cin, H, Cout, K, padding, register budget, the tile's rows of pixels): LeNet's conv2 (rows of
# 10: a transposed group of 8 and one of 2), ResNet9's 4x4 layer (4: half a group), rows of 6
@pytest.mark.parametrize("shape,budget,rows", [((4, 6, 14, 16, 5, 0), 31, 10), ((4, 6, 14, 16, 5, 0), 15, 5),
                                               ((3, 32, 4, 32, 3, 1), 31, 4), ((2, 4, 8, 16, 3, 0), 31, 6)])
def test_a_tile_storing_nchw_planes_stores_its_rows_transposed(monkeypatch, shape, budget, rows):
    monkeypatch.setattr(tiles, "registers", lambda: budget)
    n, cin, h, cout, k, p = shape
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, cin, h, h)).astype(np.float32)
    w = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
    graph = conv_graph(*shape, nchw=True)
    program = compile_graph(graph)
    scheduled = program.ir("scheduled")
    # one kernel, beside a padded conv's padding_nan kernels over the weight (ir/ops/conv_adjoint.py)
    own = [k for k in scheduled.split("\n\n") if k.startswith("kernel ") and "(padding_nan)\n  stored" not in k]
    assert len(own) == 1 and f"by {rows} i2 accumulate side by side" in scheduled, scheduled
    (out,) = program.run(x, w)
    np.testing.assert_allclose(out, interpret(graph, x, w)[0], rtol=1e-4, atol=1e-4)
    (nhwc,) = compile_graph(conv_graph(*shape, nchw=False)).run(x, w)
    assert np.array_equal(out.view(np.uint32), nhwc.transpose(0, 3, 1, 2).view(np.uint32))
    llvm = program.ir("llvm")  # a group of up to 8 rows a vector of each channel's pixels
    assert "shufflevector" in llvm and f"store <{rows % 8 or 8} x float>" in llvm


def test_a_tile_whose_stores_read_a_guarded_load_stores_lane_by_lane(monkeypatch):
    """Stores whose values read what codegen's vectors do not compute along the block (a load
    guarded by a padding) keep a lane's element each; results equal the interpreter's."""
    monkeypatch.setattr(tiles, "registers", lambda: 31)
    graph = parse("""
graph @c(%x: f32[2,4,4,32], %w: f32[3,3,32,32], %y: f32[2,32,2,2]) {
  %0 = conv(%x, %w, stride=1, padding=1) : f32[2,4,4,32]
  %1 = permute(%0, axes=(0, 3, 1, 2)) : f32[2,32,4,4]
  %2 = pad(%y, widths=((0, 0), (0, 0), (1, 1), (1, 1))) : f32[2,32,4,4]
  %3 = add(%1, %2) : f32[2,32,4,4]
  return %3
}""")
    rng = np.random.default_rng(6)
    inputs = [rng.standard_normal(shape).astype(np.float32) for shape in ((2, 4, 4, 32), (3, 3, 32, 32), (2, 32, 2, 2))]
    program = compile_graph(graph)
    scheduled = program.ir("scheduled")
    assert "by 4 i2 accumulate side by side" in scheduled and "i2 - 1 < 2]" in scheduled
    np.testing.assert_allclose(program.run(*inputs)[0], interpret(graph, *inputs)[0], rtol=1e-4, atol=1e-4)
    assert "store <4 x float>" not in program.ir("llvm")
