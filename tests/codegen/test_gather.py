"""gather (an embedding's lookup) is a kernel of indirect loads: each row of the table loaded at
its index's value, not a one-hot matrix product. Compiled rows equal numpy's bit for bit on 1 and
2 threads and under the CUDA emulation; an index outside the table reads a zero row."""
import shutil

import numpy as np
import pytest

from ndlc.ir import parse, parse_kernels
from ndlc.jit.compile import compile_graph
from ndlc.passes.autodiff import autodiff
from ndlc.passes.fusion import fuse

DTYPES = {"i64": np.int64, "i32": np.int32, "u8": np.uint8}


def gather_graph(table, indices, dtype="i64", table_dtype="f32"):
    def shape(s):
        return ",".join(map(str, s))
    return parse(f"graph @g(%t: {table_dtype}[{shape(table)}], %i: {dtype}[{shape(indices)}]) {{\n"
                 f"  %0 = gather(%t, %i) : {table_dtype}[{shape(indices + table[1:])}]\n  return %0\n}}")


def zero_rows(table, indices):
    """table[indices], a zero row where an index is outside the table."""
    inside = (indices >= 0) & (indices < len(table))
    rows = table[np.where(inside, indices, 0)]
    return np.where(inside.reshape(inside.shape + (1,) * (table.ndim - 1)), rows, np.zeros((), table.dtype))


def test_gather_fuses_into_a_kernel_of_indirect_loads():
    text = str(fuse(gather_graph((10, 2, 4), (3, 2))))
    assert text.endswith("""
kernel k0 -> %0
  fuses: %0 gather
  stored because: %0: gather's rows are copied by a kernel of their own (its indirect loads)
  loops: i0<3 i1<2 i2<2 i3<4
  $0 = %i[2*i0 + i1]
  $1 = %t[8*$0 + 4*i2 + i3 if 0 <= $0 < 10]
  store %0[16*i0 + 8*i1 + 4*i2 + i3] = $1"""), text


def test_a_gather_of_a_computed_table_and_computed_indices_stores_them_first():
    graph = parse("""
graph @g(%t: f32[10,4], %i: i64[6]) {
  %0 = exp(%t) : f32[10,4]
  %1 = add_scalar(%i, scalar=1) : i64[6]
  %2 = gather(%0, %1) : f32[6,4]
  return %2
}""")
    text = str(fuse(graph))
    assert "%0: its rows are read by gather (an indirect load)" in text
    assert "%1: its values pick gather's rows (an indirect load reads them)" in text
    assert "$1 = %0[4*$0 + i1 if 0 <= $0 < 10]" in text


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("table, indices", [((7,), (5,)), ((10, 4), (3, 2)), ((50, 2, 3), (4, 3)), ((6, 5), ())])
@pytest.mark.parametrize("table_dtype", ["f32", "i64"])
def test_compiled_rows_equal_numpy_bit_for_bit(dtype, table, indices, table_dtype):
    rng = np.random.default_rng(0)
    t = (rng.standard_normal(table) * 1000).astype({"f32": np.float32, "i64": np.int64}[table_dtype])
    i = rng.integers(0, table[0], indices).astype(DTYPES[dtype])
    program = compile_graph(gather_graph(table, indices, dtype, table_dtype))
    (got,) = program.run(t, i)
    assert got.tobytes() == t[i].tobytes()
    assert "$1 = %t[" in program.ir("planned") and "sgemm" not in program.ir("planned")
    assert_round_trip(program)


def assert_round_trip(program):
    for stage in ("fused", "scheduled", "planned"):
        text = program.ir(stage)
        assert str(parse_kernels(text)) == text, stage


@pytest.mark.parametrize("dtype", ["i64", "i32"])
def test_an_index_outside_the_table_reads_a_zero_row(dtype):
    """The kernel's semantics (the entry points refuse such indices before: IndexError): no read
    outside the table, a zero row as the one-hot product gave. A NaN in a row no index picks stays
    out of the result, where the one-hot product spread it to every row (0 * NaN)."""
    t = np.arange(12, dtype=np.float32).reshape(4, 3)
    t[2] = np.nan
    i = np.array([0, -1, 4, 3, 2**31 - 1, -2**31, 1], DTYPES[dtype])
    (got,) = compile_graph(gather_graph((4, 3), (7,), dtype)).run(t, i)
    want = zero_rows(t, i.astype(np.int64))
    assert got.tobytes() == want.tobytes()
    assert not np.isnan(got).any()


@pytest.mark.parametrize("table, indices", [((0, 3), (2,)), ((5, 0), (3,)), ((0, 3), (0,))])
def test_a_table_of_no_rows_or_of_empty_rows_compiles(table, indices):
    """No row to pick reads zero rows (the entry points refuse those indices first, as eager); rows
    of no element give an empty result: found by the slow input fuzzer (a verify error before)."""
    t = np.ones(table, np.float32)
    i = np.arange(indices[0], dtype=np.int64) % 3
    (got,) = compile_graph(gather_graph(table, indices)).run(t, i)
    want = t[i] if table[0] else np.zeros(indices + table[1:], np.float32)  # no row: every one reads 0
    assert got.shape == want.shape and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_large_gather_splits_over_threads_with_the_same_bits(threads, monkeypatch, tmp_path):
    monkeypatch.setenv("NDLC_THREADS", str(threads))
    rng = np.random.default_rng(1)
    t = rng.standard_normal((5000, 64)).astype(np.float32)
    i = rng.integers(-3, 5003, (64, 80))
    program = compile_graph(gather_graph((5000, 64), (64, 80)))
    assert ("parallel over" in program.ir("scheduled")) == (threads == 2)
    (got,) = program.run(t, i)
    assert got.tobytes() == zero_rows(t, i).tobytes()


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulation needs g++ (C++20)")
@pytest.mark.parametrize("dtype", ["i64", "u8"])
def test_cuda_rows_under_emulation_equal_the_cpus_with_zero_rows_outside(dtype):
    from ndlc.codegen.cuda import lower_to_cuda
    from ndlc.jit.pipeline import Stages, cuda_kernels
    from ndlc.passes.schedule import GpuTarget
    from ndlc.runtime.cuda import CudaProgram
    from ndlc.runtime.cuda_emulation import EmulatedExecutor
    graph = gather_graph((9, 2, 5), (4, 6), dtype)
    rng = np.random.default_rng(2)
    t = rng.standard_normal((9, 2, 5)).astype(np.float32)
    i = rng.integers(0, 12, (4, 6)).astype(DTYPES[dtype])
    kernels = cuda_kernels(Stages("g"), graph, None, GpuTarget(multiprocessors=2, block_threads=64,
                                                                blocks_per_multiprocessor=2, chunk_elements=16))
    module = lower_to_cuda(kernels)
    assert "(unsigned long long)(" in module.source
    (got,) = CudaProgram(kernels, module, {}, executor=EmulatedExecutor()).run(t, i)
    (cpu,) = compile_graph(graph).run(t, i)
    assert np.asarray(got).tobytes() == cpu.tobytes() == zero_rows(t, i.astype(np.int64)).tobytes()


def test_a_gathers_kernel_is_not_merged_with_its_consumer():
    """merge would renumber the loads an indirect load names: the gather's kernel stays apart."""
    graph = parse("graph @g(%t: f32[10,4], %i: i64[6]) {\n  %0 = gather(%t, %i) : f32[6,4]\n"
                  "  %1 = exp(%0) : f32[6,4]\n  return %0, %1\n}")
    rows, exp = fuse(graph).kernels
    assert exp.boundary == "a kernel of indirect loads (a gather's rows) stays apart"
    t = np.random.default_rng(3).standard_normal((10, 4)).astype(np.float32)
    i = np.array([9, 0, 3, 3, 12, -1])
    got = compile_graph(graph).run(t, i)
    assert got[0].tobytes() == zero_rows(t, i).tobytes()
    np.testing.assert_allclose(got[1], np.exp(zero_rows(t, i)), rtol=1e-6)


def test_a_gather_in_a_loops_body_reads_each_steps_indices():
    """Each step's copy of the body's gather kernel reads its own step's indices (passes/steps.py
    places the index load; the table, read indirectly, is not moved)."""
    import ndlc as ndl
    rng = np.random.default_rng(4)
    table, h0, ids = (rng.standard_normal((7, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32),
                      rng.integers(0, 7, (5, 2)))

    def run(h, xs):
        return ndl.scan(lambda h, i: (ndl.tanh(h + ndl.ops.gather(ndl.Tensor(table), i)),) * 2, h, xs)
    compiled = ndl.compile(run)
    h, hs = compiled(h0, ids)
    want = []
    for step in ids:
        h0 = np.tanh(h0 + table[step])
        want.append(h0)
    np.testing.assert_allclose(hs.numpy(), np.stack(want), rtol=1e-6, atol=1e-6)
    planned = compiled.ir("planned")
    assert "step: 4 of %0 scan" in planned and "= %xs[i0 + 8]" in planned and "*$0 + i1 if 0 <= $0 < 7]" in planned


@pytest.mark.parametrize("threads", [1, 2])
def test_the_gradient_equals_numpys_serial_scatter_add_bit_for_bit(threads, monkeypatch):
    """d(sum(gather(t, i) * c))/dt, a Scatter kernel adding rows at repeated indices, equals
    numpy's serial scatter-add (np.add.at) bit for bit on 1 and 2 threads."""
    monkeypatch.setenv("NDLC_THREADS", str(threads))
    graph = parse("""
graph @g(%t: f32[1000,64], %i: i64[320], %c: f32[320,64]) {
  %0 = gather(%t, %i) : f32[320,64]
  %1 = multiply(%0, %c) : f32[320,64]
  %2 = summation(%1, axes=(0, 1)) : f32[]
  return %2
}""")
    program = compile_graph(autodiff(graph, wrt=[graph.inputs[0]]))
    assert "call scatter_add(%c, %i)" in program.ir("fused")
    rng = np.random.default_rng(2)
    t, c = rng.standard_normal((1000, 64)).astype(np.float32), rng.standard_normal((320, 64)).astype(np.float32)
    i = rng.integers(0, 100, 320)
    want = np.zeros_like(t)
    np.add.at(want, i, c)
    got = program.run(t, i, c)[-1]
    assert got.tobytes() == want.tobytes()
