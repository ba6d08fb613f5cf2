"""The polynomial exp/log/tanh/sin/cos/pow emitted as LLVM IR: near-correctly rounded over wide
ranges (float32 within 4e-7 relative, float64 within 2e-15) with numpy's special values, and
their explicit fused multiply-adds rounding as LLVM's contraction did."""
import numpy as np
import pytest

from ndlc.jit import pipeline
from ndlc.jit.compile import compile_graph
from ndlc.ir import parse
from ndlc.runtime import native

SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 88.7, 88.8, 709.7, 710.0, -745.0, -746.0, 1.0]
BOUND = {"f32": 4e-7, "f64": 2e-15}


def _inputs(op, dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-100, 100, 4000), rng.uniform(-3, 3, 4000),
                        10.0 ** rng.uniform(-30, 30, 4000), -10.0 ** rng.uniform(-30, 2, 4000), SPECIAL])
    if op == "log":
        x = np.abs(x)
    if op in ("sin", "cos"):
        x = np.where(np.abs(x) < 1e5, x, 1.0)
    return x.astype(np.dtype(dtype.replace("f", "float")))


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("op", ["exp", "log", "tanh", "sin", "cos"])
def test_unary_math_accuracy_and_special_values(op, dtype):
    x = _inputs(op, dtype)
    graph = parse(f"graph @m(%x: {dtype}[{x.size}]) {{\n  %0 = {op}(%x) : {dtype}[{x.size}]\n  return %0\n}}")
    (got,) = compile_graph(graph).run(x)
    with np.errstate(all="ignore"):
        want = getattr(np, op)(x.astype(np.float64))
        exact = getattr(np, op)(x)
    normal = np.isfinite(want) & (np.abs(want) > np.finfo(x.dtype).tiny) & (np.abs(want) < np.finfo(x.dtype).max)
    relative = np.abs(got[normal] - want[normal]) / np.abs(want[normal])
    assert relative.max() <= BOUND[dtype]
    np.testing.assert_array_equal(got[~normal & ~np.isfinite(exact)], exact[~normal & ~np.isfinite(exact)])


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_power_with_negative_bases_zero_and_integral_exponents(dtype):
    x = np.array([-2.0, -2.0, -2.0, 0.0, 0.0, 0.0, 1.5, 4.0, 0.3, -0.5], dtype.replace("f", "float"))
    y = np.array([3.0, 2.0, 0.5, 2.0, 0.0, -1.0, -2.5, 0.5, 7.25, -3.0], x.dtype)
    graph = parse(f"graph @p(%x: {dtype}[10], %y: {dtype}[10]) {{\n  %0 = power(%x, %y) : {dtype}[10]\n"
                  f"  %1 = power_scalar(%x, scalar=3.0) : {dtype}[10]\n  return %0, %1\n}}")
    got, cubed = compile_graph(graph).run(x, y)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(got, np.power(x, y), rtol=BOUND[dtype] * 4)
        np.testing.assert_allclose(cubed, x ** 3, rtol=BOUND[dtype])


@pytest.mark.skipif(not native.host_fma(), reason="the host has no fused multiply-add")
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("op", ["exp", "log", "tanh", "sin", "cos"])
def test_explicit_fused_multiply_adds_give_the_contracted_bits(op, dtype, monkeypatch, tmp_path):
    """mathlib's llvm.fma calls give the bits of its `contract` multiplies and adds, which LLVM
    fuses in a map's loop (so a host with FMA computed the same before they were explicit)."""
    x = _inputs(op, dtype)
    graph = f"graph @m(%x: {dtype}[{x.size}]) {{\n  %0 = {op}(%x) : {dtype}[{x.size}]\n  return %0\n}}"
    results = []
    for fused in (True, False):
        monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / str(fused)))  # the same host description: apart
        monkeypatch.setattr(pipeline, "host_fma", lambda fused=fused: fused)
        program = compile_graph(parse(graph), cached=False)
        assert ("llvm.fma" in program.ir("llvm")) == fused and ("fmul contract" in program.ir("llvm")) != fused
        results.append(program.run(x)[0])
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.skipif(not native.host_avx512(), reason="the host has no AVX-512")
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_exp_scaled_by_vscalef_gives_the_exponent_arithmetics_bits(dtype, monkeypatch, tmp_path):
    """A vector exp's p * 2**k by one vscalefps/vscalefpd rounds as the two steps on the exponent
    bits did: the same bits, denormal and overflowing results and NaN included (every float32:
    docs/ARCHITECTURE.md)."""
    x = _inputs("exp", dtype)
    low, high = (-104.0, 89.5) if dtype == "f32" else (-746.0, 710.5)
    edges = np.linspace(low, low + 20, 20001), np.linspace(high - 2, high, 2001)
    x = np.concatenate([x, *edges, -np.asarray(SPECIAL)]).astype(x.dtype)
    graph = f"graph @m(%x: {dtype}[{x.size}]) {{\n  %0 = exp(%x) : {dtype}[{x.size}]\n  return %0\n}}"
    results = []
    for avx512 in (True, False):
        monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / str(avx512)))  # the same host description: apart
        monkeypatch.setattr(pipeline, "host_avx512", lambda avx512=avx512: avx512)
        program = compile_graph(parse(graph), cached=False)
        assert ("vscalef" in program.ir("asm")) == avx512
        results.append(program.run(x)[0])
    np.testing.assert_array_equal(results[0], results[1])
    assert (results[0][np.isnan(x)] != results[0][np.isnan(x)]).all()


@pytest.mark.parametrize("op", ["sin", "cos"])
def test_float64_sin_and_cos_are_within_an_ulp_over_every_binade(op):
    """Against 200-bit mpmath: 4 arguments of each binade from 2**-30 to 2**1023 of either sign, and
    arguments at and next to multiples of pi/2 (the reduced argument cancels): the reduction's
    remainder as a double-double (r + r_lo, Cody-Waite's or Payne-Hanek's), the polynomials' leading
    terms added last. r alone, they were up to 2.15 ulp off past 2**20 and 1.3 below it."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 200
    rng = np.random.default_rng(5)
    x = np.concatenate([np.ldexp(1 + rng.random(4), e) for e in range(-30, 1024)])
    multiples = np.concatenate([rng.integers(1, 600000, 100), rng.integers(1, 2**40, 100)]) * (np.pi / 2)
    x = np.concatenate([x, -x, multiples, np.nextafter(multiples, 0)])
    graph = parse(f"graph @m(%x: f64[{x.size}]) {{\n  %0 = {op}(%x) : f64[{x.size}]\n  return %0\n}}")
    (got,) = compile_graph(graph).run(x)
    exact = [getattr(mpmath, op)(mpmath.mpf(float(v))) for v in x]
    ulps = [float(abs(mpmath.mpf(float(g)) - e) / np.spacing(abs(float(e)))) for g, e in zip(got, exact)]
    assert max(ulps) < 1, (max(ulps), x[int(np.argmax(ulps))])


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("op", ["sin", "tanh"])
@pytest.mark.parametrize("size", [1, 4099])
def test_odd_functions_keep_the_sign_of_zero_and_of_every_result(op, dtype, size):
    """sin(-0) was +0 (the reduction's x - k·pi/2 with k = -0); numpy's is -0, as tanh's was. Each
    result's sign is numpy's over the accuracy test's inputs, on a vector loop and on one element."""
    x = np.concatenate([[-0.0, 0.0, -1e-320, 1e-320, -1e-45, -1e-30], _inputs(op, dtype)])
    x = x.astype(np.dtype(dtype.replace("f", "float")))
    x = np.resize(x, size) if size == 1 else x
    graph = parse(f"graph @m(%x: {dtype}[{x.size}]) {{\n  %0 = {op}(%x) : {dtype}[{x.size}]\n  return %0\n}}")
    (got,) = compile_graph(graph).run(x)
    with np.errstate(all="ignore"):
        want = getattr(np, op)(x)
    np.testing.assert_array_equal(np.signbit(got[~np.isnan(x)]), np.signbit(want[~np.isnan(x)]))
    zeros = x == 0
    assert got[zeros].tobytes() == want[zeros].tobytes()
