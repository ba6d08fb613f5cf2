"""scatter_add (gather's adjoint) is a Scatter kernel: a zeroed table, each row of values added
into the row its index picks, in index order. Compiled tables equal numpy's serial np.add.at bit
for bit on 1 and 2 threads (the threads split the columns, never the rows); an index outside the
table adds nothing; the text of the kernel reads back."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc.errors import VerifyError
from ndlc.ir import parse, parse_kernels
from ndlc.jit.compile import compile_graph
from ndlc.passes.autodiff import autodiff
from ndlc.passes.fusion import fuse

DTYPES = {"i64": np.int64, "i32": np.int32, "u8": np.uint8}


def scatter_graph(values, indices, rows, dtype="i64", value_dtype="f32"):
    def shape(s):
        return ",".join(map(str, s))
    return parse(f"graph @g(%v: {value_dtype}[{shape(values)}], %i: {dtype}[{shape(indices)}]) {{\n"
                 f"  %0 = scatter_add(%v, %i, rows={rows}) : {value_dtype}[{shape((rows,) + values[len(indices):])}]\n"
                 f"  return %0\n}}")


def added(values, indices, rows):
    """numpy's serial scatter-add into a zero table: each row in index order."""
    out = np.zeros((rows,) + values.shape[indices.ndim:], values.dtype)
    np.add.at(out, indices.reshape(-1), values.reshape((indices.size,) + out.shape[1:]))
    return out


def test_a_gathers_gradient_is_a_scatter_kernel_reading_the_adjoint_whole():
    graph = parse("""
graph @g(%t: f32[10,4], %i: i64[2,3]) {
  %0 = gather(%t, %i) : f32[2,3,4]
  %1 = exp(%0) : f32[2,3,4]
  %2 = summation(%1, axes=(0, 1, 2)) : f32[]
  return %2
}""")
    kernels = fuse(autodiff(graph, wrt=[graph.inputs[0]])).kernels
    assert "stored because: %1: used by 2 nodes; %6: read whole by scatter_add" in str(kernels[1])
    assert str(kernels[-1]) == """\
kernel k3 -> %7
  fuses: %7 scatter_add
  stored because: %7: scatter_add adds rows into it in index order (a kernel of its own)
  not merged into the kernel before: a scatter-add's kernel stays apart (it adds rows at indices read at run time)
  loops: i0<4
  call scatter_add(%6, %i) -> %7  (6 rows of 4 into 10, in order)"""


@pytest.mark.parametrize("threads", [1, 2])
def test_a_large_scatter_splits_its_columns_over_threads_with_numpys_serial_bits(threads, monkeypatch):
    monkeypatch.setenv("NDLC_THREADS", str(threads))
    program = compile_graph(scatter_graph((2000, 128), (2000,), 5000))
    assert ("parallel over i0" in program.ir("scheduled")) == (threads == 2)
    rng = np.random.default_rng(3)
    v, i = rng.standard_normal((2000, 128)).astype(np.float32), rng.integers(0, 50, 2000)
    (got,) = program.run(v, i)
    assert got.tobytes() == added(v, i, 5000).tobytes()


@pytest.mark.parametrize("dtype", ["i32", "u8"])
def test_an_index_outside_the_table_adds_nothing(dtype):
    rng = np.random.default_rng(5)
    v, i = rng.standard_normal((7, 2, 3)).astype(np.float32), np.array([0, 3, 9, 3, 200, 1, 3], DTYPES[dtype])
    (got,) = compile_graph(scatter_graph((7, 2, 3), (7,), 4, dtype)).run(v, i)
    inside = i < 4
    assert got.tobytes() == added(v[inside], i[inside], 4).tobytes()


def test_integer_values_add_as_integers():
    v, i = np.arange(12, dtype=np.int64).reshape(6, 2), np.array([1, 0, 1, 1, 2, 0])
    (got,) = compile_graph(scatter_graph((6, 2), (6,), 3, value_dtype="i64")).run(v, i)
    np.testing.assert_array_equal(got, added(v, i, 3))


def test_eager_refuses_an_index_outside_the_table():
    with pytest.raises(IndexError, match=r"scatter_add: index 4 is out of range for a table of 4 rows"):
        ndl.ops.scatter_add(ndl.Tensor(np.ones((2, 3), np.float32)), ndl.Tensor(np.array([1, 4])), rows=4)


def test_sums_in_index_order_are_as_accurate_as_the_one_hot_product():
    """320 rows into 10 (32 a row): the serial sums' error against float64 is within float32's
    rounding of 32 terms, as the one-hot gemm's (another order) is."""
    rng = np.random.default_rng(7)
    v, i = rng.standard_normal((320, 64)).astype(np.float32), rng.integers(0, 10, 320)
    (got,) = compile_graph(scatter_graph((320, 64), (320,), 10)).run(v, i)
    exact = added(v.astype(np.float64), i, 10)
    one_hot = (np.arange(10)[:, None] == i[None, :]).astype(np.float32) @ v
    bound = 32 * np.finfo(np.float32).eps * added(np.abs(v).astype(np.float64), i, 10)
    assert np.all(np.abs(got - exact) <= bound) and np.all(np.abs(one_hot - exact) <= bound)


def test_the_scatter_kernels_text_reads_back_and_a_wrong_one_is_refused():
    text = str(compile_graph(scatter_graph((6, 4), (6,), 5, "i32")).ir("planned"))
    assert str(parse_kernels(text)) == text
    with pytest.raises(VerifyError, match=r"scatter_add's %v has 24 elements, not 0 \+ 28"):
        parse_kernels(text.replace("(6 rows of 4 into 5", "(7 rows of 4 into 5"))


def test_a_gather_in_a_loops_body_scatters_each_steps_adjoint_at_its_steps_indices():
    """The scan's gradient runs its body's scatter kernel once a step, placed at that step's slice
    of the indices and the packed result (`at` offsets), equal to eager's gradient."""
    rng = np.random.default_rng(4)
    table0, h0, ids = (rng.standard_normal((7, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32),
                       rng.integers(0, 7, (5, 2)))
    table = ndl.nn.Parameter(table0)

    def run(h, xs):
        table.grad = None
        _, hs = ndl.scan(lambda h, i: (ndl.tanh(h + ndl.ops.gather(table, i)),) * 2, h, xs)
        loss = (hs * hs).sum()
        loss.backward()
        return loss, table.grad
    compiled = ndl.compile(run)
    got = compiled(h0, ids)[1].numpy()
    want = run(ndl.Tensor(h0), ndl.Tensor(ids))[1].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    planned = compiled.ir("planned")
    assert "call scatter_add(%9.0.4, %xs[8]) -> %9[90]  (2 rows of 3 into 7, in order)" in planned
    assert str(parse_kernels(planned)) == planned


def test_a_compiled_step_refuses_an_index_outside_the_table_as_eager_does():
    compiled = ndl.compile(lambda v, i: ndl.ops.scatter_add(v, i, rows=4))
    v = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(compiled(v, np.array([1, 1])).numpy()[1], [2, 2, 2])
    with pytest.raises(IndexError, match="scatter_add into 4 rows"):
        compiled(v, np.array([1, 4]))
