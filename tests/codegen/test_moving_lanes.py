"""Kernels that move data on codegen's own vectors (codegen/llvm_vector.py `moves`): pads (a row
split by its guards), transposes and pooling windows (gathers), pooling's gradient (rows shorter
than the width), BatchNorm2d's channels-last statistics with a channels-first output (a 'chunks'
kernel's strided loads and stores) and streamed maps: each takes the pipeline without LLVM's
vectorisers and gives numpy's result bit for bit (a mean: the scalar loop's bits)."""
import re

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from ndlc.codegen import llvm, llvm_program
from ndlc.codegen.llvm_lanes import lane_loop
from ndlc.ir import parse
from ndlc.ir.kernel import Strategy
from ndlc.jit.compile import compile_graph
from ndlc.passes import streaming
from ndlc.runtime import native

SETTINGS = settings(max_examples=12, deadline=None)


def _shape(dims) -> str:
    return ",".join(str(d) for d in dims)


def _on_lanes(text):
    """The program of graph `text`, each of its kernels asserted to run on codegen's vectors."""
    program = compile_graph(parse(text), cached=False)
    assert all(lane_loop(k) is not None for k in program.kernels.kernels), program.ir("scheduled")
    return program


def _left_to_llvm(text, monkeypatch):
    """The program of graph `text` with every kernel's loops left to LLVM's vectoriser (O3)."""
    with monkeypatch.context() as patch:
        patch.setattr(llvm, "lane_loop", lambda kernel, debug=None: None)
        patch.setattr(llvm_program, "lane_loop", lambda kernel, debug=None: None)
        return compile_graph(parse(text), cached=False)


@SETTINGS
@given(st.data())
def test_a_pad_splits_its_rows_by_their_guards_into_vectors(data):
    shape = data.draw(st.lists(st.integers(1, 9), min_size=1, max_size=2)) + [data.draw(st.integers(2, 40))]
    widths = [(data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4))) for _ in shape]
    padded = [d + lo + hi for d, (lo, hi) in zip(shape, widths)]
    text = (f"graph @p(%x: f32[{_shape(shape)}]) {{\n  %0 = pad(%x, widths=({', '.join(f'({lo}, {hi})' for lo, hi in widths)})) : "
            f"f32[{_shape(padded)}]\n  return %0\n}}")
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    (got,) = _on_lanes(text).run(x)
    np.testing.assert_array_equal(got, np.pad(x, widths))


@SETTINGS
@given(st.lists(st.integers(2, 12), min_size=2, max_size=4), st.randoms(use_true_random=False))
def test_a_permute_gathers_its_strided_rows(shape, random):
    axes = list(range(len(shape)))
    random.shuffle(axes)
    out = [shape[a] for a in axes]
    text = (f"graph @t(%x: f32[{_shape(shape)}]) {{\n  %0 = permute(%x, axes=({', '.join(map(str, axes))})) : "
            f"f32[{_shape(out)}]\n  %1 = exp(%0) : f32[{_shape(out)}]\n  return %1\n}}")
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    (got,) = _on_lanes(text).run(x)
    np.testing.assert_allclose(got, np.exp(np.transpose(x, axes)), rtol=2e-6)


def _windows(x, k, s):
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    return np.stack([x[:, :, i:i + s * ho:s, j:j + s * wo:s] for i in range(k) for j in range(k)])


POOL = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(4, 20), st.integers(4, 40),
                 st.integers(2, 3), st.integers(1, 3))


@SETTINGS
@given(POOL)
def test_average_pooling_gathers_its_windows(case):
    """avg_pool2d decomposes into a sum of strided slices (ir/ops/pooling.py): a map of gathers."""
    n, c, h, w, k, s = case
    x = np.random.default_rng(h * w).standard_normal((n, c, h, w)).astype(np.float32)
    windows = _windows(x, k, s)
    text = (f"graph @pool(%x: f32[{_shape(x.shape)}]) {{\n  %0 = avg_pool2d(%x, kernel={k}, stride={s}) : "
            f"f32[{_shape(windows.shape[1:])}]\n  return %0\n}}")
    (got,) = _on_lanes(text).run(x)
    want = windows[0]
    for window in windows[1:]:  # in the decomposition's order: the same bits
        want = want + window
    np.testing.assert_array_equal(got, want / np.float32(k * k))


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 9), st.integers(2, 9), st.integers(2, 3))
@example(1, 2, 3, 5, 2)  # vectors of 4 and a single lane (llvm_lanes.py `_counted`)
@example(2, 6, 14, 14, 2)  # LeNet's
def test_pooling_gradients_short_rows_are_interleaved_into_vectors(n, c, ho, wo, k):
    """Average pooling's gradient (ir/ops/pooling.py) spreads each value over a k x k window:
    rows of k from one value each, so the loop along the windows runs as the lanes and the k
    values of each lane are interleaved into one store."""
    g = np.random.default_rng(ho).standard_normal((n, c, ho, wo)).astype(np.float32)
    text = (f"graph @u(%g: f32[{_shape(g.shape)}]) {{\n"
            f"  %0 = reshape(%g, shape=({n}, {c}, {ho}, 1, {wo}, 1)) : f32[{n},{c},{ho},1,{wo},1]\n"
            f"  %1 = broadcast_to(%0, shape=({n}, {c}, {ho}, {k}, {wo}, {k})) : f32[{n},{c},{ho},{k},{wo},{k}]\n"
            f"  %2 = mul_scalar(%1, scalar=0.25) : f32[{n},{c},{ho},{k},{wo},{k}]\n"
            f"  %3 = reshape(%2, shape=({n}, {c}, {ho * k}, {wo * k})) : f32[{n},{c},{ho * k},{wo * k}]\n"
            f"  return %3\n}}")
    program = _on_lanes(text)
    (kernel,) = program.kernels.kernels
    assert lane_loop(kernel) == len(kernel.extents) - 2, program.ir("scheduled")
    (got,) = program.run(g)
    np.testing.assert_array_equal(got, np.repeat(np.repeat(g * np.float32(0.25), k, axis=2), k, axis=3))


STATISTICS = """graph @bn(%x: f32[256,10,10,C]) {
  %0 = permute(%x, axes=(0, 3, 1, 2)) : f32[256,C,10,10]
  %7 = summation(%0, axes=(0, 2, 3)) : f32[C]
  %1 = divide_scalar(%7, scalar=25600.0) : f32[C]
  %2 = reshape(%1, shape=(1, C, 1, 1)) : f32[1,C,1,1]
  %3 = broadcast_to(%2, shape=(256, C, 10, 10)) : f32[256,C,10,10]
  %4 = negate(%3) : f32[256,C,10,10]
  %5 = add(%0, %4) : f32[256,C,10,10]
  %6 = exp(%5) : f32[256,C,10,10]
  return %1, %6
}"""


@pytest.mark.parametrize("channels", [16, 20, 32, 5])
def test_chunks_columns_gather_and_scatter_a_channels_first_output(channels, monkeypatch, tmp_path):
    """BatchNorm2d's statistics over a channels-last conv output whose normalised map is stored
    channels first: its columns (channels) strided 100 apart in the output, or fewer columns than
    the width; the same bits as LLVM's vectoriser gets from the scalar loops."""
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    text = STATISTICS.replace("C", str(channels))
    program = _on_lanes(text)
    chunks = [k for k in program.kernels.kernels if k.strategy == Strategy.CHUNKS]
    if channels >= 16:  # fewer: the map is a kernel of its own ("too few to share among threads")
        assert any(s.access.form.coeffs[0] == 100 for k in chunks for s in k.stores), program.ir("scheduled")
    assert chunks
    x = np.random.default_rng(channels).standard_normal((256, 10, 10, channels)).astype(np.float32)
    got = program.run(x)
    for g, want in zip(got, _left_to_llvm(text, monkeypatch).run(x)):
        np.testing.assert_array_equal(g, want)
    mean = np.transpose(x, (0, 3, 1, 2)).mean(axis=(0, 2, 3), dtype=np.float64)
    np.testing.assert_allclose(got[0], mean, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got[1], np.exp(np.transpose(x, (0, 3, 1, 2)) - got[0][:, None, None]), rtol=2e-6)


def test_a_streamed_map_runs_its_lines_as_vectors(monkeypatch, tmp_path):
    """A map whose output streams (llvm_stream.py) stores each cache line as one non-temporal
    vector joined from codegen's vectors, with the bits of the map stored the usual way."""
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    text = """graph @m(%x: f32[300,48]) {\n  %0 = exp(%x) : f32[300,48]\n  return %0\n}"""
    plain = _on_lanes(text)
    monkeypatch.setattr(streaming, "FOOTPRINT", 1024)
    monkeypatch.setattr(streaming, "SMALLEST", 256)
    streamed = _on_lanes(text)
    assert "streaming stores to %0" in streamed.ir("scheduled")
    assert re.search(r"store <16 x float> .*!nontemporal", streamed.ir("llvm"))
    x = np.random.default_rng(3).standard_normal((300, 48)).astype(np.float32)
    np.testing.assert_array_equal(streamed.run(x)[0], plain.run(x)[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_a_streamed_map_whose_rows_are_not_whole_lines_runs_head_and_rest_as_vectors(threads, monkeypatch):
    """Rows of 300 float32 (not whole lines, each row's start at another offset in its line) stream
    a head, lines and a rest per row, all on codegen's vectors (the rest's last one partial):
    the bits of the map stored the usual way."""
    monkeypatch.setenv("NDLC_THREADS", str(threads))
    text = """graph @m(%x: f32[301,300], %r: f32[1,300]) {
  %0 = broadcast_to(%r, shape=(301, 300)) : f32[301,300]
  %1 = multiply(%x, %0) : f32[301,300]
  %2 = tanh(%1) : f32[301,300]
  return %2
}"""
    plain = compile_graph(parse(text), cached=False)
    monkeypatch.setattr(streaming, "FOOTPRINT", 1024)
    monkeypatch.setattr(streaming, "SMALLEST", 256)
    streamed = compile_graph(parse(text), cached=False)
    (kernel,) = streamed.kernels.kernels
    assert kernel.streams.buffers and lane_loop(kernel) == 1
    llvm = streamed.ir("llvm")
    assert re.search(r"store <16 x float> .*!nontemporal", llvm) and "masked.store" in llvm
    assert not re.search(r"call float @\"ndlc.tanh.float\"", llvm)  # no point runs alone
    rng = np.random.default_rng(5)
    x, r = rng.standard_normal((301, 300)).astype(np.float32), rng.standard_normal((1, 300)).astype(np.float32)
    x[0, :5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    np.testing.assert_array_equal(streamed.run(x, r)[0], plain.run(x, r)[0])


def test_moving_kernels_take_the_pipeline_without_llvms_vectorisers(monkeypatch, tmp_path):
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    translated, pipelines = native._translated, []

    def recording(text, vectorise):
        if "ndlc.runner" not in text:
            pipelines.append(vectorise)
        return translated(text, vectorise)
    monkeypatch.setattr(native, "_translated", recording)
    _on_lanes("""graph @p(%x: f32[2,3,28,28]) {
  %0 = pad(%x, widths=((0, 0), (0, 0), (2, 2), (2, 2))) : f32[2,3,32,32]
  %1 = avg_pool2d(%x, kernel=2, stride=2) : f32[2,3,14,14]
  return %0, %1
}""")
    assert pipelines and not any(pipelines)
