"""Every registry op compiled for the CPU equals the reference interpreter, forward (float32 and
float64) and through autodiff's gradient graph; plus integer/bool dtypes, broadcast corners,
batched matmul, strided/padded conv, pooling and chains of views."""
import numpy as np
import pytest

from ndlc.jit.compile import compile_graph
from ndlc.ir import Builder, Graph, TensorType, interpret, parse
from ndlc.ir import tiles
from ndlc.ir.checks import maybe_verify
from ndlc.passes import autodiff
from op_cases import CASES, loss_graph, single_op_graph

TOLERANCE = {"f32": (1e-5, 1e-4), "f64": (1e-12, 1e-10)}


def assert_matches(graph, inputs, dtype="f64"):
    """Compiled outputs equal the interpreter's: same shapes and dtypes, values within tolerance."""
    want = interpret(graph, *inputs)
    got = compile_graph(graph).run(*inputs)
    assert len(got) == len(want)
    atol, rtol = TOLERANCE[dtype]
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, atol=atol, rtol=rtol)
        else:
            np.testing.assert_array_equal(g, w)


CASE_PARAMS = [pytest.param(case, seed, id=f"{case.op}-{i}-{seed}")
               for i, case in enumerate(CASES) for seed in range(2)]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("case,seed", CASE_PARAMS)
def test_forward_equals_interpreter(case, seed, dtype):
    inputs, attrs = case.draw(np.random.default_rng(seed))
    graph, inputs = single_op_graph(case.op, inputs, attrs, dtype)
    assert_matches(graph, inputs, dtype)


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.op}-{i}") for i, c in enumerate(CASES)
                                  if c.differentiable])
def test_gradient_graph_equals_interpreter(case):
    rng = np.random.default_rng(7)
    inputs, attrs = case.draw(rng)
    g, values, r = loss_graph(case.op, inputs, attrs)
    grad = autodiff(g, wrt=[v for v in values if v.dtype == "f64"])
    assert_matches(grad, inputs + [rng.standard_normal(r.shape)])


def _graph(text, *inputs, dtype="f64"):
    assert_matches(parse(text), list(inputs), dtype)


def test_integer_arithmetic_reductions_and_matmul():
    rng = np.random.default_rng(1)
    a = rng.integers(-50, 50, (3, 4)).astype(np.int32)
    b = rng.integers(-50, 50, (4, 2)).astype(np.int32)
    _graph("""
graph @ints(%a: i32[3,4], %b: i32[4,2]) {
  %0 = multiply(%a, %a) : i32[3,4]
  %1 = negate(%0) : i32[3,4]
  %2 = maximum(%1, %a) : i32[3,4]
  %3 = summation(%2, axes=(1,)) : i32[3]
  %4 = max(%a, axes=(0,)) : i32[4]
  %5 = matmul(%a, %b) : i32[3,2]
  %6 = cast(%a, dtype=f32) : f32[3,4]
  %7 = cast(%6, dtype=i64) : i64[3,4]
  %8 = add(%7, %7) : i64[3,4]
  return %3, %4, %5, %8
}""", a, b)


def test_bool_logic_comparisons_and_where():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    _graph("""
graph @bools(%x: f64[2,5], %y: f64[2,5]) {
  %0 = less(%x, %y) : bool[2,5]
  %1 = greater(%x, %y) : bool[2,5]
  %2 = add(%0, %1) : bool[2,5]
  %3 = multiply(%0, %1) : bool[2,5]
  %4 = where(%0, %x, %y) : f64[2,5]
  %5 = summation(%0, axes=(1,)) : bool[2]
  %6 = max(%1, axes=(0,)) : bool[5]
  %7 = stack(%0, %3, axis=0) : bool[2,2,5]
  %8 = cast(%2, dtype=i32) : i32[2,5]
  %9 = transpose(%0, axes=(0, 1)) : bool[5,2]
  return %2, %3, %4, %5, %6, %7, %8, %9
}""", x, y)


@pytest.mark.parametrize("a,b", [((6, 6, 5, 4), (4, 3)), ((5, 4), (6, 6, 4, 3)), ((2, 1, 3, 4), (5, 4, 2)),
                                 ((1, 1), (1, 1)), ((3, 1), (1, 4))])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_batched_matmul(a, b, dtype):
    rng = np.random.default_rng(3)
    x, y = (rng.standard_normal(s).astype(TensorType((), dtype).np_dtype) for s in (a, b))
    graph, inputs = single_op_graph("matmul", [x, y], {}, dtype)
    assert_matches(graph, inputs, dtype)


@pytest.mark.parametrize("source,target", [((1,), (3, 4)), ((4,), (2, 3, 4)), ((3, 1), (3, 5)),
                                           ((1, 1, 1), (2, 1, 3)), ((), (2, 2)), ((2, 1, 3), (4, 2, 5, 3))])
def test_broadcast_corners_in_elementwise_chains(source, target):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal(source), rng.standard_normal(target)
    g = Graph("bcast")
    vx, vy = g.add_input(TensorType.of(x), name="x"), g.add_input(TensorType.of(y), name="y")
    b = Builder(g)
    g.outputs = [b.tanh(b.add(b.broadcast_to(vx, shape=target), vy)), b.broadcast_to(vx, shape=target)]
    assert_matches(maybe_verify(g, "test"), [x, y])


@pytest.mark.parametrize("stride,padding,kernel", [(1, 0, 3), (2, 1, 3), (3, 2, 2), (1, 2, 1), (2, 0, 4)])
def test_conv_stride_padding(stride, padding, kernel):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 7, 8, 3)), rng.standard_normal((kernel, kernel, 3, 4))
    graph, inputs = single_op_graph("conv", [x, w], {"stride": stride, "padding": padding}, "f32")
    assert_matches(graph, inputs, "f32")


@pytest.mark.parametrize("op", ["avg_pool2d", "max_pool2d"])
@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 1), (3, 2), (5, 1)])
def test_pooling(op, kernel, stride):
    x = np.random.default_rng(6).standard_normal((2, 3, 7, 6))
    graph, inputs = single_op_graph(op, [x], {"kernel": kernel, "stride": stride}, "f32")
    assert_matches(graph, inputs, "f32")


def test_chains_of_views_compose():
    x = np.random.default_rng(8).standard_normal((4, 6))
    _graph("""
graph @views(%x: f64[4,6]) {
  %0 = transpose(%x, axes=(0, 1)) : f64[6,4]
  %1 = reshape(%0, shape=(3, 8)) : f64[3,8]
  %2 = flip(%1, axes=(1,)) : f64[3,8]
  %3 = slice(%2, start=(1, 2), stop=(3, 7)) : f64[2,5]
  %4 = pad(%3, widths=((1, 0), (2, 1))) : f64[3,8]
  %5 = dilate(%4, axes=(0,), dilation=1) : f64[6,8]
  %6 = undilate(%5, axes=(1,), dilation=2) : f64[6,3]
  %7 = exp(%6) : f64[6,3]
  %8 = reshape(%x, shape=(2, 2, 6)) : f64[2,2,6]
  %9 = split(%8, axis=1, index=1) : f64[2,6]
  %10 = windows(%9, kernel=2, stride=1) : f64[1,5,2,2]
  return %7, %10, %x
}""", x)


def test_matmul_with_fused_bias_relu_epilogue_and_column_max():
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((7, 9)), rng.standard_normal(9)
    _graph("""
graph @dense(%x: f64[5,7], %w: f64[7,9], %b: f64[9]) {
  %0 = matmul(%x, %w) : f64[5,9]
  %1 = broadcast_to(%b, shape=(5, 9)) : f64[5,9]
  %2 = add(%0, %1) : f64[5,9]
  %3 = relu(%2) : f64[5,9]
  %4 = max(%x, axes=(0,)) : f64[7]
  %5 = exp(%4) : f64[7]
  return %3, %5
}""", x, w, b)


def test_row_max_vectorised_with_maxnum_keeps_numpys_nans_and_infinities():
    """A row max (and logsumexp's) combines with maxnum beside a flag of NaNs seen: a NaN anywhere
    in a row, at its start, end or in the vectorised middle, still makes the row's max NaN. Rows
    of 137: shorter ones run side by side (tests/codegen/test_side_by_side.py)."""
    x = np.random.default_rng(3).standard_normal((8, 137)).astype(np.float32)
    x[1, 0] = x[2, 136] = x[3, 17] = np.nan
    x[4, :] = -np.inf
    x[5, 5] = np.inf
    x[6, :] = np.nan
    x[7, :] = -0.0
    program = compile_graph(parse("""
graph @rows(%x: f32[8,137]) {
  %0 = max(%x, axes=(1,)) : f32[8]
  %1 = logsumexp(%x, axes=(1,)) : f32[8]
  return %0, %1
}"""))
    assert "maxnum" in program.ir("llvm")
    row_max, lse = program.run(x)
    np.testing.assert_array_equal(row_max, x.max(axis=1))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = x.max(axis=1, keepdims=True)
        shift = np.where(np.isfinite(m), m, 0)
        expected = (np.log(np.exp(x - shift).sum(axis=1)) + shift[:, 0]).astype(np.float32)
    np.testing.assert_allclose(lse, expected, rtol=1e-6)
    assert np.isnan(row_max[[1, 2, 3, 6]]).all() and np.isnan(lse[[1, 2, 3, 6]]).all()


@pytest.mark.parametrize("columns,block", [(64, 32), (40, 4096)])
def test_short_rows_reductions_accumulate_a_block_of_registers(columns, block):
    """Column sums over 5 rows ('rows' strategy, short reduced loop): where REGISTER_BLOCK divides
    the columns, the schedule takes blocks of that many accumulators (which LLVM keeps in
    registers), else of ROWS_BLOCK; the scheduled stage says which; both equal the interpreter."""
    graph = parse(f"""
graph @columns(%x: f32[5,{columns}]) {{
  %0 = summation(%x, axes=(0,)) : f32[{columns}]
  return %0
}}""")
    assert_matches(graph, [np.random.default_rng(9).standard_normal((5, columns)).astype(np.float32)], "f32")
    program = compile_graph(graph)
    assert f"strategy: rows (blocks of {block} i0 accumulate side by side;" in program.ir("scheduled")
    assert f"%\"acc0\" = alloca float, i32 {block}" in program.ir("llvm")


@pytest.mark.parametrize("budget,rows", [(15, 4), (31, 8)])
def test_a_direct_convs_register_tile_stays_in_registers(monkeypatch, budget, rows):
    """A stride-2 conv of 16 output channels over rows of 8 pixels: its tile of 4 x 16 accumulators
    (AVX2's registers; 8 x 16 in AVX-512's) is one alloca that LLVM promotes to registers, none left
    in the optimised kernel; results equal the interpreter's."""
    monkeypatch.setattr(tiles, "registers", lambda: budget)
    graph = parse("""
graph @c(%x: f32[2,19,19,6], %w: f32[5,5,6,16]) {
  %0 = conv(%x, %w, stride=2, padding=0) : f32[2,8,8,16]
  return %0
}""")
    rng = np.random.default_rng(3)
    assert_matches(graph, [rng.standard_normal((2, 19, 19, 6)).astype(np.float32),
                           rng.standard_normal((5, 5, 6, 16)).astype(np.float32)], "f32")
    program = compile_graph(graph)
    assert f"blocks of 16 i3 by {rows} i2" in program.ir("scheduled")
    assert f"%\"acc0\" = alloca float, i32 {16 * rows}" in program.ir("llvm")
    functions = program.ir("llvm_opt").split("\ndefine ")
    (body,) = [f for f in functions if ".body(" in f.splitlines()[0]]
    assert "alloca" not in body


def test_a_rows_kernel_accumulates_its_products_in_fused_multiply_adds(avx2_tiles):
    """A conv's 'rows' kernel adds each product to its accumulator in one fused multiply-add
    (ir/tiles.py multiply_add), rounding once a tap: -(1 + 2^-11) + (1 + 2^-12)^2 is 2^-24 exactly,
    where a rounded product first (1 + 2^-11) left 0."""
    graph = parse("""
graph @r(%x: f32[2,2,3,16], %w: f32[1,1,2,4]) {
  %0 = row_conv(%x, %w, width=16) : f32[2,4,3,16]
  return %0
}""")
    x = np.empty((2, 2, 3, 16), np.float32)
    x[:, 0], x[:, 1] = -(1 + 2.0 ** -11), 1 + 2.0 ** -12
    w = np.empty((1, 1, 2, 4), np.float32)
    w[..., 0, :], w[..., 1, :] = 1, 1 + 2.0 ** -12
    program = compile_graph(graph)
    # (ho, wo) merged into one loop of 48 pixels (passes/canonical.py): a tile of 4 channels x 16 pixels
    assert "blocks of 16 i2 by 4 i1 accumulate side by side" in program.ir("scheduled") and "llvm.fma" in program.ir("llvm")
    (out,) = program.run(x, w)
    assert (out == np.float32(2.0 ** -24)).all()


@pytest.mark.parametrize("dtype,width,stored", [("f32", 28, "store 12"), ("f32", 15, "store 7"),
                                                 ("f64", 14, "store 6")])
def test_a_ragged_register_tile_computes_its_last_block_whole_and_stores_the_rest(dtype, width, stored):
    """row_conv over rows that no tile divides: the last block computes past the row into the
    columns the planes carry and stores only the row's remainder, in whole vectors and halves
    (7 = 4 + 2 + 1), with no masked load or store; float32 accumulators stay in registers (no
    alloca left in the optimised kernel: float64 tiles whose stores copy the accumulators became
    a memcpy from memory before ragged tiles too); results equal the interpreter's."""
    cout, planes = (6, width + 8) if width == 28 else (8, 16 + 4)
    graph = parse(f"""
graph @r(%x: {dtype}[2,2,7,{planes}], %w: {dtype}[3,5,2,{cout}]) {{
  %0 = row_conv(%x, %w, width={width}) : {dtype}[2,{cout},5,{width}]
  return %0
}}""")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 7, planes)).astype(dtype.replace("f", "float"))
    assert_matches(graph, [x, rng.standard_normal((3, 5, 2, cout)).astype(x.dtype)], dtype)
    program = compile_graph(graph)
    assert "the last computing" in program.ir("scheduled") and stored in program.ir("scheduled")
    functions = program.ir("llvm_opt").split("\ndefine ")
    (body,) = [f for f in functions if ".body(" in f.splitlines()[0]]
    assert "masked" not in body and ("alloca" not in body or dtype == "f64")


@pytest.mark.parametrize("threads", [1, 2])
def test_a_stacks_axis_runs_one_body_per_input_reading_only_that_input(threads, tmp_path, monkeypatch):
    """stack decomposes into T padded loads an element; its axis's loop runs as one body per
    point (codegen/llvm_guards.py `_by_points`), each knowing which load is valid, so no guard is
    checked at run time; results equal numpy's at any budget, on a split loop too."""
    import ndlc.codegen.llvm_vector as llvm
    monkeypatch.setenv("NDLC_THREADS", str(threads))
    inputs = [np.random.default_rng(i).standard_normal((64, 300)).astype(np.float32) for i in range(6)]
    graph = f"""
graph @s({", ".join(f"%x{i}: f32[64,300]" for i in range(6))}) {{
  %0 = stack({", ".join(f"%x{i}" for i in range(6))}, axis=0) : f32[6,64,300]
  %1 = exp(%0) : f32[6,64,300]
  return %1
}}"""
    checks, points = {}, llvm.POINTS_MOST
    for most in (points, 1):
        monkeypatch.setattr(llvm, "POINTS_MOST", most)
        monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / str(most)))  # a kernel compiled afresh each way
        program = compile_graph(parse(graph))
        np.testing.assert_allclose(program.run(*inputs)[0], np.exp(np.stack(inputs)), rtol=1e-6)
        checks[most] = program.ir("llvm").count("icmp sge")  # a guard's lower bound checked
    assert checks[points] == 0 < checks[1], checks


@pytest.mark.parametrize("text", [
    "%0 = plane_unwindows(%x, kernel=1, row=1, size=4) : f32[0,1,4]",  # a 'rows' kernel of no block
    "%0 = plane_unwindows(%x, kernel=1, row=1, size=4) : f32[2,1,4]",
])
def test_a_kernel_of_no_output_element_compiles_to_nothing(text):
    batch = int(text.split("[")[1][0])
    graph = parse(f"graph @g(%x: f32[{batch},1,1,1,3]) {{\n  {text}\n  return %0\n}}")
    x = np.arange(batch * 3, dtype=np.float32).reshape(batch, 1, 1, 1, 3)
    (out,) = compile_graph(graph).run(x)
    np.testing.assert_array_equal(out, interpret(graph, x)[0])
