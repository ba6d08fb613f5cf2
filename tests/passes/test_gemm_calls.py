"""passes/gemm_pieces.py small_calls: a float32 gemm whose one call SkylakeX's OpenBLAS would run on its
packed path runs in calls on its small-matrix kernels: the rule, the `scheduled` text (parsed back), the
bits on one and two threads, and the products against numpy's within float32's rounding."""
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ndlc.ir import parse, parse_kernels
from ndlc.jit.compile import compile_graph
from ndlc.passes.fusion import fuse
from ndlc.passes.gemm_pieces import FINE_CORES, SMALL_CALL_ROWS, packed_rows, small_calls
from ndlc.passes.schedule import schedule
from ndlc.runtime import libraries

on_skylakex = pytest.mark.skipif(libraries.blas_core() not in FINE_CORES, reason="the rule is for SkylakeX's kernels")


def _gemm(m, n, k, a=False, b=False, dtype="f32"):
    return SimpleNamespace(a=SimpleNamespace(transposed=a), b=SimpleNamespace(transposed=b), m=m, n=n, k=k, dtype=dtype)


def _product(m, k, n, transposed=""):
    """The graph of an m x k @ k x n product whose operands named in `transposed` ('x', 'w') are given
    transposed, and its operands' shapes."""
    shapes = {"x": (k, m) if "x" in transposed else (m, k), "w": (n, k) if "w" in transposed else (k, n)}
    x, w = (f"f32[{shapes[name][0]},{shapes[name][1]}]" for name in "xw")
    lines = [f"graph @g(%x: {x}, %w: {w}) {{"]
    lines += [f"  %{name}t = transpose(%{name}, axes=(0, 1)) : f32[{shapes[name][1]},{shapes[name][0]}]"
              for name in "xw" if name in transposed]
    operands = ", ".join(f"%{name}t" if name in transposed else f"%{name}" for name in "xw")
    return "\n".join(lines + [f"  %0 = matmul({operands}) : f32[{m},{n}]", "  return %0", "}"]), list(shapes.values())


@pytest.mark.parametrize("shape, rows", [
    ((127, 65, 129), 64),  # the sweep's 127x129 @ 129x65: 2 calls, not one packed over 127 rows
    ((255, 65, 129), 64),  # 3 calls of at most 116 rows would do; 4, an even number, balance two threads
    ((1000, 333, 77), 36),  # 28 calls
    ((4096, 10, 100), 684),
    ((119, 65, 129), 0),  # below packed_rows: one call on the small-matrix kernels already
    ((500, 500, 500), 0),  # calls of 4 rows: slower than packing
    ((288, 32, 1024), 0),  # calls of 28 rows at most: fewer than SMALL_CALL_ROWS
])
def test_small_calls_where_one_call_would_pack_and_calls_of_enough_rows_fit_the_permit(shape, rows):
    gemm = _gemm(*shape)
    assert small_calls(gemm, "skylakex") == rows
    if rows:
        calls = -(-gemm.m // rows)
        assert rows % 4 == 0 and SMALL_CALL_ROWS <= rows < packed_rows(gemm) and calls % 2 == 0
        assert (calls - 1) * rows < gemm.m


def test_small_calls_only_for_float32_on_skylakex_and_not_for_a_transposed_right_operand_alone():
    assert small_calls(_gemm(127, 65, 129, a=True), "skylakex") == 64
    assert small_calls(_gemm(127, 65, 129, a=True, b=True), "skylakex") == 64
    assert small_calls(_gemm(127, 30, 129, b=True), "skylakex") == 0
    assert small_calls(_gemm(127, 65, 129, dtype="f64"), "skylakex") == 0
    assert small_calls(_gemm(127, 65, 129), "haswell") == small_calls(_gemm(127, 65, 129), "") == 0


@pytest.mark.parametrize("threads, line", [
    (2, "  parallel over i0 in 2 pieces of 64, taken in turn (2 threads)"),
    (1, "  serial: one thread (NDLC_THREADS=1 or no thread team on this system)"),
])
def test_the_scheduled_text_says_the_calls_and_parses_back(threads, line):
    program = schedule(fuse(parse(_product(127, 129, 65)[0]), use_blas=True), threads, "skylakex")
    text = str(program)
    assert line in text.splitlines()
    assert ("  call sgemm(%x, %w) -> %0  (127x129 @ 129x65), in calls of 64 rows, each on OpenBLAS's "
            "small-matrix kernels (one call over 127 rows would pack its operands)") in text.splitlines()
    again = parse_kernels(text)
    assert again.kernels[0].calls == 64 and str(again) == text


def test_a_product_elsewhere_than_skylakex_is_one_call():
    text = str(schedule(fuse(parse(_product(127, 129, 65)[0]), use_blas=True), 2, "haswell"))
    assert "  call sgemm(%x, %w) -> %0  (127x129 @ 129x65)" in text.splitlines()


@on_skylakex
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(m=st.integers(33, 700), k=st.integers(16, 200), n=st.integers(16, 200), transposed=st.sampled_from(["", "x", "xw"]))
def test_products_in_small_calls_agree_with_numpy_and_on_one_and_two_threads(m, k, n, transposed):
    """Random small products, their one call on the packed path or not: compiled == numpy's within
    float32's rounding, and the same bits on budgets of 1 and 2 threads."""
    text, shapes = _product(m, k, n, transposed)
    rng = np.random.default_rng(m * k * n)
    x, w = (rng.standard_normal(shape).astype(np.float32) for shape in shapes)
    want = (x.T if "x" in transposed else x).astype(np.float64) @ (w.T if "w" in transposed else w).astype(np.float64)
    outputs = {}
    with pytest.MonkeyPatch.context() as patch:
        for threads in (1, 2):
            patch.setenv("NDLC_THREADS", str(threads))
            (outputs[threads],) = compile_graph(parse(text)).run(x, w)
    np.testing.assert_allclose(outputs[1], want, rtol=1e-4, atol=1e-4 * np.sqrt(k))
    assert outputs[1].tobytes() == outputs[2].tobytes()


@on_skylakex
def test_the_sweeps_product_runs_in_calls_with_the_same_bits_on_one_and_two_threads(monkeypatch):
    text, shapes = _product(127, 129, 65)
    x, w = (np.random.default_rng(0).standard_normal(shape).astype(np.float32) for shape in shapes)
    outputs = {}
    for threads in (1, 2):
        monkeypatch.setenv("NDLC_THREADS", str(threads))
        program = compile_graph(parse(text))
        assert [k.calls for k in program.kernels.kernels] == [64]
        (outputs[threads],) = program.run(x, w)
    assert outputs[1].tobytes() == outputs[2].tobytes()
    np.testing.assert_allclose(outputs[1], x.astype(np.float64) @ w, rtol=1e-5, atol=1e-4)
