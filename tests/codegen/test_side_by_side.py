"""Row reductions over short rows run 'rows' with whole rows side by side, one per lane
(ir/short_rows.py, passes/schedule.py SHORT_ROW, codegen/llvm_rows.py): the schedule's choice as
text, each lane's sum in its row's order bit for bit (against numpy and against LLVM's scalar loops),
a partial last block, NaN and infinities as before, and the same bits on 1 and 2 threads; kernels of
4096 elements or more (llvm_rows.py TRANSPOSE_LEAST) load and store their rows as transposed vectors,
smaller ones gather their lanes."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc import nn
from ndlc.codegen import llvm, llvm_program
from ndlc.codegen.llvm_lanes import lane_loop
from ndlc.frontend.nn.transformer import softmax
from ndlc.ir import parse
from ndlc.ir.short_rows import side_by_side
from ndlc.jit.compile import compile_graph
from ndlc.passes.schedule import SHORT_ROW, SHORT_STORED_ROW, side_by_side_block

ROWS = """graph @r(%x: f32[ROWS,N], %y: f32[ROWS,N]) {
  %0 = summation(%x, axes=(1,)) : f32[ROWS]
  %1 = max(%y, axes=(1,)) : f32[ROWS]
  %2 = exp(%x) : f32[ROWS,N]
  %3 = summation(%2, axes=(1,)) : f32[ROWS]
  return %0, %1, %3
}"""


def _graph(rows, n):
    return parse(ROWS.replace("ROWS", str(rows)).replace("N", str(n)))


def _in_row_order(x):
    """Each row's float32 sum from 0.0, one element after another."""
    total = np.zeros(len(x), np.float32)
    for column in x.T:
        total = total + column
    return total


@pytest.mark.parametrize("rows, n", [(37, 10), (64, 3), (9, 15), (20, 77), (301, 15), (61, 77)])
def test_short_rows_sum_side_by_side_each_in_its_rows_order(rows, n):
    program = compile_graph(_graph(rows, n), cached=False)
    (kernel,) = program.kernels.kernels
    block = side_by_side_block()
    assert side_by_side(kernel) and kernel.block == block and lane_loop(kernel) == 0
    assert f"strategy: rows (blocks of {block} i0 accumulate side by side; each lane sums a row of i1)" in program.ir("scheduled")
    rng = np.random.default_rng(rows * n)
    x, y = (rng.standard_normal((rows, n)).astype(np.float32) * 10 for _ in range(2))
    sums, maxima, exps = program.run(x, y)
    np.testing.assert_array_equal(sums, _in_row_order(x))
    np.testing.assert_array_equal(maxima, y.max(1))
    np.testing.assert_allclose(exps, np.exp(x.astype(np.float64)).sum(1), rtol=2e-6)


def test_long_rows_fewer_rows_than_a_vector_plain_sums_and_long_stored_rows_stay_point():
    for rows, n in ((37, SHORT_ROW), (7, 10)):
        (kernel,) = compile_graph(_graph(rows, n), cached=False).kernels.kernels
        assert kernel.strategy == "point" and not side_by_side(kernel)
    plain = parse(ROWS.replace("ROWS", "37").replace("N", "10").replace("exp(%x)", "negate(%x)"))
    (kernel,) = compile_graph(plain, cached=False).kernels.kernels
    assert kernel.strategy == "point"
    for n, rows_side_by_side in ((SHORT_STORED_ROW - 1, True), (SHORT_STORED_ROW, False)):  # softmax stores along them
        run = ndl.compile(lambda t: softmax(t))
        run(np.zeros((37, n), np.float32))
        assert ("each lane sums a row of" in run.ir("scheduled")) == rows_side_by_side


def _scalar(kernel, debug=None):
    return None


@pytest.mark.parametrize("rows, n", [(45, 12), (37, 31), (16, 5), (345, 12), (137, 31)])
def test_each_lane_computes_what_llvms_scalar_loop_computes(monkeypatch, tmp_path, rows, n):
    """The same kernel with its loops left to LLVM (no codegen vectors): the same bits, softmax's
    exponentials kept for the block (a row-local temporary), its stores transposed into rows (a
    vector's width and a shorter rest) and the last block's masked lanes included."""
    graph = """graph @s(%z: f32[45,12]) {
  %0 = max(%z, axes=(1,)) : f32[45]
  %1 = reshape(%0, shape=(45, 1)) : f32[45,1]
  %2 = broadcast_to(%1, shape=(45, 12)) : f32[45,12]
  %3 = negate(%2) : f32[45,12]
  %9 = add(%z, %3) : f32[45,12]
  %4 = exp(%9) : f32[45,12]
  %5 = summation(%4, axes=(1,)) : f32[45]
  %6 = reshape(%5, shape=(45, 1)) : f32[45,1]
  %7 = broadcast_to(%6, shape=(45, 12)) : f32[45,12]
  %8 = divide(%4, %7) : f32[45,12]
  return %8, %5
}""".replace("45", str(rows)).replace("12", str(n))
    z = np.random.default_rng(3).standard_normal((rows, n)).astype(np.float32) * 4
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / "lanes"))
    lanes = compile_graph(parse(graph), cached=False)
    assert any(side_by_side(k) and lane_loop(k) == 0 and k.local for k in lanes.kernels.kernels)
    expected = lanes.run(z)
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / "scalar"))
    monkeypatch.setattr(llvm, "lane_loop", _scalar)
    monkeypatch.setattr(llvm_program, "lane_loop", _scalar)
    for got, want in zip(compile_graph(parse(graph), cached=False).run(z), expected):
        np.testing.assert_array_equal(got, want)


def _special(rows, k, seed):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((rows, k)) * 3).astype(np.float32)
    z[1, 3] = np.nan
    z[2, :] = -np.inf
    z[3, 4] = np.inf
    z[4, 0] = -np.inf
    z[5, :] = np.inf
    z[6, 2], z[6, 5] = np.inf, -np.inf
    return z, rng.integers(0, k, rows)


def test_nan_and_infinities_as_numpy_has_them():
    z, y = _special(37, 10, 0)
    lse = ndl.compile(lambda t: ndl.ops.logsumexp(t, (1,)))(z).numpy()
    assert np.isnan(lse[1]) and lse[2] == -np.inf and lse[3] == np.inf and lse[5] == np.inf and lse[6] == np.inf
    finite = np.isfinite(z).all(1)
    z64 = z[finite].astype(np.float64)
    np.testing.assert_allclose(lse[finite], np.log(np.exp(z64 - z64.max(1, keepdims=True)).sum(1)) + z64.max(1),
                               rtol=2e-6)
    loss_fn = nn.SoftmaxLoss()
    loss = ndl.compile(lambda t, labels: loss_fn(t, labels))
    assert np.isnan(loss(z, y).numpy())
    assert np.isfinite(loss(z[7:], y[7:]).numpy())


def test_the_softmax_family_gives_the_same_bits_on_one_and_two_threads(monkeypatch):
    z = (np.random.default_rng(7).standard_normal((20000, 10)) * 3).astype(np.float32)
    y = np.random.default_rng(8).integers(0, 10, 20000)
    loss_fn = nn.SoftmaxLoss()

    def step(t, labels):
        t.requires_grad = True
        loss = loss_fn(t, labels)
        loss.backward()
        return loss, t.grad, ndl.ops.logsumexp(t, (1,)), softmax(t)
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("NDLC_THREADS", threads)
        monkeypatch.setenv("NDLC_TEAM", "budget")
        results.append([a.numpy() for a in ndl.compile(step)(z, y)])
    split = compile_graph(_graph(20000, 10), cached=False).kernels.kernels[0]
    assert side_by_side(split) and split.split is not None  # the rows' loop is shared by the threads
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_a_max_side_by_side_orders_signed_zeros_and_keeps_every_nan():
    """The rows' max runs over int32 keys (llvm_rows.py `_keyed_max`): -0 below +0 as llvm.maximum
    has them, a NaN of either sign (x86's default NaN is negative) makes the row's max NaN, and
    every other row's max is numpy's, bit for bit."""
    rows, n = 19, 13
    program = compile_graph(_graph(rows, n), cached=False)
    assert side_by_side(program.kernels.kernels[0])
    rng = np.random.default_rng(11)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    y = rng.standard_normal((rows, n)).astype(np.float32) * 1e3
    y[0, :], y[1, :] = -0.0, 0.0
    y[2, :], y[2, 5] = -0.0, 0.0
    y[3, :], y[3, 0] = -np.inf, -0.0
    y[4, :] = -np.inf
    y[5, 7] = np.float32(np.nan)
    y[6, 12] = np.uint32(0xFFC00000).view(np.float32)  # a negative NaN
    y[7, :] = np.uint32(0x807FFFFF).view(np.float32)  # the smallest negative subnormal's neighbours
    y[7, 3] = np.float32(-1e-45)
    y[8, :] = -np.float32(np.finfo(np.float32).max)
    _, maxima, _ = program.run(x, y)
    assert [np.signbit(maxima[r]) for r in range(4)] == [True, False, False, True]
    assert np.isnan(maxima[5]) and np.isnan(maxima[6]) and maxima[4] == -np.inf
    plain = [r for r in range(rows) if r not in (0, 1, 2, 3, 5, 6)]
    np.testing.assert_array_equal(maxima[plain].view(np.uint32), y[plain].max(1).view(np.uint32))


def test_fewer_rows_than_a_block_run_as_its_partial_block():
    """Rows side by side fewer than a block (9 of 16 on AVX-512 hosts): the block is the partial
    one, whose stores are masked to the rows (a whole block's would write past the buffers)."""
    rows, n = 9, 15
    program = compile_graph(_graph(rows, n), cached=False)
    assert "llvm.masked.store" in program.ir("llvm")
    x, y = (np.random.default_rng(4).standard_normal((rows, n)).astype(np.float32) for _ in range(2))
    sums, maxima, _ = program.run(x, y)
    np.testing.assert_array_equal(sums, _in_row_order(x))
    np.testing.assert_array_equal(maxima, y.max(1))


@pytest.mark.parametrize("rows, n", [(37, 10), (419, 10), (205, 20), (342, 12)])
def test_a_softmaxs_stored_rows_read_another_input_along_them(rows, n):
    """softmax(z) * c side by side: its output stored a row at a time (llvm_rows.py
    `_transposed_row_stores`), each element's code gathering its lanes of c (rows closer than a
    vector, which no block loads as rows) or reading them from the block's rows (farther apart)."""
    rng = np.random.default_rng(rows + n)
    z, c = (rng.standard_normal((rows, n)).astype(np.float32) * 3 for _ in range(2))
    run = ndl.compile(lambda t, u: softmax(t) * u)
    got = run(z, c).numpy()
    assert "each lane sums a row of" in run.ir("scheduled")
    z64 = z.astype(np.float64)
    e = np.exp(z64 - z64.max(1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(1, keepdims=True) * c, rtol=2e-6, atol=1e-7)
