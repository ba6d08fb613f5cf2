"""'point' reductions along rows in codegen's own order (codegen/llvm_partials.py `_in_order`):
the order as documented, bit for bit; softmax, logsumexp and SoftmaxLoss (forward and gradient)
over random row lengths against float64; and those kernels compiled without LLVM's vectorisers."""
import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ndlc as ndl
from ndlc import nn
from ndlc.codegen import llvm_partials
from ndlc.codegen.llvm_lanes import F32_LANES, PARTS, interleaved, lane_loop
from ndlc.codegen.llvm_partials import OWN_REGISTERS, WIDE_F32_LANES
from ndlc.frontend.nn.transformer import softmax
from ndlc.ir import parse
from ndlc.jit import pipeline
from ndlc.jit.compile import compile_graph
from ndlc.runtime import native


def _in_order(rows, carried, combine, w=F32_LANES):
    """The documented order in float32 over `rows` (one reduction's rows, in the loops' order):
    vector v of `w` lanes of each row (the last padded with the identity) into partial v mod P,
    P = min(PARTS, a row's whole vectors, OWN_REGISTERS // carried); after the last row the
    partials folded left (p1 + p0, then + p2, ...), then halves of the vector combined until one lane."""
    n = len(rows[0])
    fill = np.float32(-0.0 if combine is np.add else -np.inf)
    count = max(1, min(PARTS, n // w, OWN_REGISTERS // carried))
    parts = np.full((count, w), fill, np.float32)
    if combine is np.add:
        parts[0, 0] = 0.0  # the accumulator's start, in lane 0 of the first
    for row in rows:
        padded = np.concatenate([row, np.full(-n % w, fill, np.float32)])
        for v in range(len(padded) // w):
            parts[v % count] = combine(parts[v % count], padded[v * w:(v + 1) * w])
    total = parts[0]
    for part in parts[1:]:
        total = combine(part, total)
    while len(total) > 1:
        total = combine(total[:len(total) // 2], total[len(total) // 2:])
    return total[0]


# rows of 10 (one vector and a masked rest of 2), 28 (LeNet's), 48 (six vectors, four partials),
# 77 (a rest of 13 after 64: not LLVM's order), 784 (a rest of 16)
@pytest.mark.parametrize("n", [10, 28, 48, 77, 784])
def test_sums_and_maxima_along_short_rows_run_in_codegens_order(n):
    graph = parse(f"""graph @r(%x: f32[5,{n}], %y: f32[5,{n}]) {{
  %0 = summation(%x, axes=(1,)) : f32[5]
  %1 = max(%y, axes=(1,)) : f32[5]
  return %0, %1
}}""")
    program = compile_graph(graph, cached=False)
    (kernel,) = program.kernels.kernels
    assert lane_loop(kernel) == 1 and not interleaved(kernel)
    rng = np.random.default_rng(n)
    x, y = (rng.standard_normal((5, n)).astype(np.float32) * 10 for _ in range(2))
    y[2, n // 2] = np.nan
    sums, maxima = program.run(x, y)
    carried = 3  # a sum, a max and its NaN flag: one phase
    np.testing.assert_array_equal(sums, [_in_order([row], carried, np.add) for row in x])
    kept = [0, 1, 3, 4]
    np.testing.assert_array_equal(maxima[kept], [_in_order([row], carried, np.maximum) for row in y[kept]])
    assert np.isnan(maxima[2])  # the NaN flag, as numpy's max


def test_a_per_channel_sum_runs_each_images_plane_as_one_row():
    """BatchNorm2d's statistics over [N, C, H, W]: loops (c | n, h*w) (h and w merged by the
    canonical loops: they address memory as one), the row h*w of each image, the images' rows in
    order into the same partials."""
    graph = parse("""graph @s(%x: f32[4,3,5,10]) {
  %0 = summation(%x, axes=(0, 2, 3)) : f32[3]
  return %0
}""")
    program = compile_graph(graph, cached=False)
    (kernel,) = program.kernels.kernels
    assert kernel.extents == (3, 4, 50) and kernel.outer == 1 and lane_loop(kernel) == 2
    x = np.random.default_rng(5).standard_normal((4, 3, 5, 10)).astype(np.float32) * 10
    (sums,) = program.run(x)
    np.testing.assert_array_equal(sums, [_in_order(x[:, c].reshape(4, 50), 1, np.add) for c in range(3)])


@pytest.mark.parametrize("shape, axes", [((5, 28), (1,)), ((5, 77), (1,)), ((3, 1000), (1,)),
                                         ((4, 3, 5, 10), (0, 2, 3))])
@pytest.mark.parametrize("avx512", [False, True] if native.host_avx512() else [False])
def test_a_sum_calling_mathlib_takes_a_vector_a_step_into_partials_cycled_in_order(shape, axes, avx512, monkeypatch,
                                                                                  tmp_path):
    """exp's polynomial in the body: one vector a step, its partial picked in a stack array by its
    number mod P (P vectors a step LLVM interleaved and spilled), in the documented order; vectors
    of 16 where the target has AVX-512, its exp scaled by vscalefps."""
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))  # the same host description either way: apart
    monkeypatch.setattr(pipeline, "host_avx512", lambda: avx512)
    dims, kept = ",".join(map(str, shape)), shape[1] if len(shape) == 4 else shape[0]
    program = compile_graph(parse(f"graph @e(%x: f32[{dims}]) {{\n  %0 = exp(%x) : f32[{dims}]\n"
                                  f"  %1 = summation(%0, axes={axes}) : f32[{kept}]\n  return %1\n}}"), cached=False)
    w = WIDE_F32_LANES if avx512 else F32_LANES
    llvm = program.ir("llvm")
    assert "urem i64" in llvm and (f"<{w} x float>" in llvm) and ("scalef" in llvm) == avx512
    exp = compile_graph(parse(f"graph @m(%x: f32[{dims}]) {{\n  %0 = exp(%x) : f32[{dims}]\n  return %0\n}}"))
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32) * 3
    (exps,) = exp.run(x)
    rows = [exps[:, c].reshape(shape[0], -1) for c in range(shape[1])] if len(shape) == 4 else [[r] for r in exps]
    np.testing.assert_array_equal(program.run(x)[0], [_in_order(r, 1, np.add, w) for r in rows])


def _log_softmax64(z):
    z = z.astype(np.float64)
    shifted = z - z.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 70), k=st.integers(1, 130), seed=st.integers(0, 2**16))
def test_softmax_family_over_random_row_lengths_matches_float64(rows, k, seed):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((rows, k)) * 3).astype(np.float32)
    y = rng.integers(0, k, rows)
    c = rng.standard_normal((rows, k)).astype(np.float32)
    loss_fn = nn.SoftmaxLoss()

    def step(t, labels, cot):
        t.requires_grad = True
        loss = loss_fn(t, labels)
        loss.backward()
        loss_grad = t.grad
        t.grad = None
        soft = softmax(t)
        (soft * cot).sum().backward()
        return loss, loss_grad, ndl.ops.logsumexp(t, (1,)), soft, t.grad
    loss, loss_grad, lse, soft, soft_grad = (a.numpy() for a in ndl.compile(step)(z, y, c))
    logp = _log_softmax64(z)
    p, onehot = np.exp(logp), np.eye(k)[y]
    want_soft_grad = p * (c - (p * c).sum(1, keepdims=True))
    tol = dict(rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(loss, -(logp * onehot).sum() / rows, **tol)
    np.testing.assert_allclose(loss_grad, (p - onehot) / rows, **tol)
    np.testing.assert_allclose(lse, np.log(np.exp(z.astype(np.float64) - z.max(1, keepdims=True)).sum(1))
                               + z.max(1), **tol)
    np.testing.assert_allclose(soft, p, **tol)
    np.testing.assert_allclose(soft_grad, want_soft_grad, rtol=2e-5, atol=2e-5 * np.abs(c).max())


def test_short_row_reductions_are_compiled_without_llvms_vectorisers(monkeypatch, tmp_path):
    """LeNet's rows of 28 summed, a softmax over rows of 77 (an exp in its sum) and a SoftmaxLoss
    over rows of 10: every kernel's module takes the pipeline without the vectorisers."""
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    translated, pipelines = native._translated, []

    def recording(text, vectorise):
        pipelines.append(("ndlc.runner" in text, vectorise))
        return translated(text, vectorise)
    monkeypatch.setattr(native, "_translated", recording)
    compile_graph(parse("""graph @r(%x: f32[16,6,28,28]) {
  %0 = summation(%x, axes=(3,)) : f32[16,6,28]
  return %0
}"""), cached=False)
    x = np.random.default_rng(0).standard_normal((30, 77)).astype(np.float32)
    ndl.compile(lambda t: softmax(t))(x)
    loss_fn = nn.SoftmaxLoss()
    ndl.compile(lambda t, labels: loss_fn(t, labels))(x[:, :10], np.arange(30) % 10)
    assert pipelines and all(runner or not vectorise for runner, vectorise in pipelines), pipelines


def test_long_rows_of_exponentials_give_the_same_bits_on_one_and_two_threads(monkeypatch):
    """SoftmaxLoss, logsumexp and softmax over rows of 1000 ('point' kernels split over their rows,
    each row's exponentials summed in codegen's order, 16 lanes wide on AVX-512): the same bits on
    one thread as on two."""
    z = (np.random.default_rng(3).standard_normal((600, 1000)) * 3).astype(np.float32)
    y = np.random.default_rng(4).integers(0, 1000, 600)
    loss_fn = nn.SoftmaxLoss()
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("NDLC_THREADS", threads)
        monkeypatch.setenv("NDLC_TEAM", "budget")
        step = ndl.compile(lambda t, labels: (loss_fn(t, labels), ndl.ops.logsumexp(t, (1,)), softmax(t)))
        results.append([a.numpy() for a in step(z, y)])
        assert threads == "1" or "parallel over i0" in step.ir("scheduled")
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def _softmax_graph(n):
    """A softmax over rows of `n` of a [40, n] input, as graph text."""
    return (f"graph @s(%z: f32[40,{n}]) {{\n  %0 = max(%z, axes=(1,)) : f32[40]\n"
            f"  %1 = reshape(%0, shape=(40, 1)) : f32[40,1]\n  %2 = broadcast_to(%1, shape=(40, {n})) : f32[40,{n}]\n"
            f"  %9 = negate(%2) : f32[40,{n}]\n  %3 = add(%z, %9) : f32[40,{n}]\n  %4 = exp(%3) : f32[40,{n}]\n"
            f"  %5 = summation(%4, axes=(1,)) : f32[40]\n  %6 = reshape(%5, shape=(40, 1)) : f32[40,1]\n"
            f"  %7 = broadcast_to(%6, shape=(40, {n})) : f32[40,{n}]\n  %8 = divide(%4, %7) : f32[40,{n}]\n"
            f"  return %8\n}}")


@pytest.mark.skipif(not native.host_avx512(), reason="vectors of 16 need AVX-512")
def test_a_rows_map_of_exponentials_runs_in_vectors_of_16_with_the_same_values(monkeypatch, tmp_path):
    """softmax's exponentials stored along its rows (a 'point' kernel's map calling mathlib) in
    vectors of 16 where the target has AVX-512 (llvm_partials.py `_wide_map`), rows of 35, 77 and
    1000 (whole vectors and every smaller piece of a rest): the values of 8-lane vectors, bit for bit."""
    z = (np.random.default_rng(2).standard_normal((40, 1000)) * 3).astype(np.float32)
    for n in (35, 77, 1000):
        graph = _softmax_graph(n)
        results = []
        for wide in (True, False):
            monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / f"{n}{wide}"))
            monkeypatch.setattr(llvm_partials, "WIDE_F32_LANES", 16 if wide else F32_LANES)
            program = compile_graph(parse(graph), cached=False)
            (kernel,) = program.kernels.kernels
            assert kernel.strategy == "point" and ("<16 x float>" in program.ir("llvm")) == wide
            results.append(program.run(np.ascontiguousarray(z[:, :n]))[0])
        np.testing.assert_array_equal(results[0].view(np.uint32), results[1].view(np.uint32))


@pytest.mark.parametrize("n", [35, 45, 77, 1000])
def test_a_maths_maps_rest_is_one_masked_vector_with_the_same_values(n, monkeypatch, tmp_path):
    """A map calling mathlib runs a rest of several powers of two (77 = 4x16 + 13) as one masked
    vector, one polynomial where 8 + 4 + 1 took three (llvm_lanes.py `_counted`, `polynomial`):
    its input loaded masked, its exponentials stored whole into their row's spare bytes (a
    row-local temporary: LOCAL_SPARE); a rest of one power of two (1000 = 62x16 + 8) as before:
    the values, bit for bit, of the map run without it (vectors of 8 and a rest in powers of two)."""
    z = (np.random.default_rng(3).standard_normal((40, n)) * 3).astype(np.float32)
    results = []
    for polynomial in (True, False):
        monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / str(polynomial)))
        if not polynomial:
            monkeypatch.setattr(llvm_partials.RowPartials, "_wide_map", lambda self, stores: contextlib.nullcontext())
        program = compile_graph(parse(_softmax_graph(n)), cached=False)
        wide = WIDE_F32_LANES if native.host_avx512() else F32_LANES
        masked = polynomial and (n % wide) & (n % wide - 1)
        assert ("call void @\"llvm.masked.store" in program.ir("llvm")) is False
        if wide > F32_LANES:  # the rest's input as one masked vector (the row's maxima read 8 wide)
            lanes = 1 << (n % wide).bit_length()
            assert (f"llvm.masked.load.v{lanes}f32" in program.ir("llvm")) == bool(masked)
        results.append(program.run(z)[0])
    np.testing.assert_array_equal(results[0].view(np.uint32), results[1].view(np.uint32))
