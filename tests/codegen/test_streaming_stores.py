"""Streaming stores (codegen/llvm_stream.py): a kernel's large outputs written past the cache, in
aligned non-temporal vectors after a head of single points up to the first aligned address, with
the results bit for bit those of ordinary stores: for an elementwise kernel, a LayerNorm (a map
phase after row statistics), a BatchNorm ('chunks'), a softmax (its exponentials on codegen's
vectors either way), on one and two threads, into the program's aligned arrays and into callers'
arrays at any offset (not aligned alike: no streaming at all)."""
import numpy as np
import pytest

from ndlc.codegen.llvm_lanes import lane_loop
from ndlc.ir import parse
from ndlc.jit.compile import compile_graph
from ndlc.passes import streaming
from ndlc.runtime import native

CHAIN = """graph @chain(%x: f32[{n}], %a: f32[{n}], %b: f32[{n}]) {{
  %0 = multiply(%x, %a) : f32[{n}]
  %1 = add(%0, %b) : f32[{n}]
  %2 = relu(%1) : f32[{n}]
  %3 = exp(%0) : f32[{n}]
  return %2, %3
}}"""

LAYER_NORM = """graph @ln(%x: f32[{r},{c}]) {{
  %0 = summation(%x, axes=(1,)) : f32[{r}]
  %1 = divide_scalar(%0, scalar={c}.0) : f32[{r}]
  %2 = reshape(%1, shape=({r}, 1)) : f32[{r},1]
  %3 = broadcast_to(%2, shape=({r}, {c})) : f32[{r},{c}]
  %12 = negate(%3) : f32[{r},{c}]
  %4 = add(%x, %12) : f32[{r},{c}]
  %5 = multiply(%4, %4) : f32[{r},{c}]
  %6 = summation(%5, axes=(1,)) : f32[{r}]
  %7 = reshape(%6, shape=({r}, 1)) : f32[{r},1]
  %8 = broadcast_to(%7, shape=({r}, {c})) : f32[{r},{c}]
  %9 = add_scalar(%8, scalar=1e-05) : f32[{r},{c}]
  %10 = power_scalar(%9, scalar=-0.5) : f32[{r},{c}]
  %11 = multiply(%4, %10) : f32[{r},{c}]
  return %11
}}"""

BATCH_NORM = """graph @bn(%x: f32[{r},{c}], %g: f32[{c}]) {{
  %0 = summation(%x, axes=(0,)) : f32[{c}]
  %1 = divide_scalar(%0, scalar={r}.0) : f32[{c}]
  %2 = reshape(%1, shape=(1, {c})) : f32[1,{c}]
  %3 = broadcast_to(%2, shape=({r}, {c})) : f32[{r},{c}]
  %12 = negate(%3) : f32[{r},{c}]
  %4 = add(%x, %12) : f32[{r},{c}]
  %5 = broadcast_to(%g, shape=({r}, {c})) : f32[{r},{c}]
  %6 = multiply(%4, %5) : f32[{r},{c}]
  return %6, %1
}}"""


SOFTMAX = """graph @softmax(%x: f32[{r},{c}]) {{
  %0 = max(%x, axes=(1,)) : f32[{r}]
  %1 = reshape(%0, shape=({r}, 1)) : f32[{r},1]
  %2 = broadcast_to(%1, shape=({r}, {c})) : f32[{r},{c}]
  %3 = negate(%2) : f32[{r},{c}]
  %4 = add(%x, %3) : f32[{r},{c}]
  %5 = exp(%4) : f32[{r},{c}]
  %6 = summation(%5, axes=(1,)) : f32[{r}]
  %7 = reshape(%6, shape=({r}, 1)) : f32[{r},1]
  %8 = broadcast_to(%7, shape=({r}, {c})) : f32[{r},{c}]
  %9 = divide(%5, %8) : f32[{r},{c}]
  return %9
}}"""


def _programs(text, monkeypatch, threads=1):
    """`text` compiled with ordinary stores, then with streaming stores (thresholds lowered so
    that these small arrays stream)."""
    monkeypatch.setenv("NDLC_THREADS", str(threads))
    plain = compile_graph(parse(text), cached=False)
    monkeypatch.setattr(streaming, "FOOTPRINT", 1024)
    monkeypatch.setattr(streaming, "SMALLEST", 256)
    return plain, compile_graph(parse(text), cached=False)


def _inputs(program, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(t.shape).astype(np.float32) for t in program.input_types]


@pytest.mark.parametrize("n", [4099, 256 * 1024 + 5])
@pytest.mark.parametrize("threads", [1, 2])
def test_an_elementwise_kernel_streams_its_outputs_with_the_same_bits(n, threads, monkeypatch):
    plain, streamed = _programs(CHAIN.format(n=n), monkeypatch, threads)
    assert "streaming stores to %2, %3: " in streamed.ir("scheduled")
    assert "streaming" not in plain.ir("scheduled")
    assert "!nontemporal" in streamed.ir("llvm") and "vmovntps" in streamed.ir("asm")
    assert "sfence" in streamed.ir("asm")
    inputs = _inputs(plain)
    for want, got in zip(plain.run(*inputs), streamed.run(*inputs)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("text", [LAYER_NORM.format(r=64, c=1000), BATCH_NORM.format(r=512, c=200)],
                         ids=["layer norm", "batch norm"])
@pytest.mark.parametrize("threads", [1, 2])
def test_normalisations_stream_their_output_with_the_same_bits(text, threads, monkeypatch):
    plain, streamed = _programs(text, monkeypatch, threads)
    assert "streaming stores to %" in streamed.ir("scheduled") and "vmovntps" in streamed.ir("asm")
    inputs = _inputs(plain)
    for want, got in zip(plain.run(*inputs), streamed.run(*inputs)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("c", [1000, 1909])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_softmax_streams_its_output_with_the_same_bits(c, threads, monkeypatch):
    """Streamed or not, a softmax's rows run on codegen's vectors (llvm_lanes.py `_maths_along_row`):
    its exponentials 16 wide where the host has AVX-512 (one vscalefps each), its sums in the same
    order (rows of 1909 in codegen's, which LLVM's vectoriser had reordered when streamed)."""
    plain, streamed = _programs(SOFTMAX.format(r=64, c=c), monkeypatch, threads)
    assert "streaming stores to %11" in streamed.ir("scheduled") and "vmovntps" in streamed.ir("asm")
    if native.host_avx512():
        assert "vscalefps\t%zmm" in streamed.ir("asm")
    inputs = _inputs(plain)
    for want, got in zip(plain.run(*inputs), streamed.run(*inputs)):
        np.testing.assert_array_equal(got, want)


LABELLED = SOFTMAX.replace("%x: f32[{r},{c}])", "%x: f32[{r},{c}], %y: i64[{r}])").replace("  return %9", """\
  %10 = cast(%y, dtype=f32) : f32[{r}]
  %11 = reshape(%10, shape=({r}, 1)) : f32[{r},1]
  %12 = broadcast_to(%11, shape=({r}, {c})) : f32[{r},{c}]
  %13 = add(%9, %12) : f32[{r},{c}]
  return %13""")


@pytest.mark.parametrize("text, lanes", [(SOFTMAX, True), (LABELLED, False)], ids=["softmax", "labelled"])
def test_a_streamed_softmax_takes_codegens_vectors_at_8_float32_lanes_only(text, lanes, monkeypatch):
    """A streamed softmax whose kernel an i64 narrows to 4 lanes (SoftmaxLoss's gradient) stays
    LLVM's: its exponentials would run 4 wide, slower than LLVM's 8."""
    _, streamed = _programs(text.format(r=64, c=1000), monkeypatch)
    (kernel,) = [k for k in streamed.kernels.kernels if k.streams and k.streams.buffers]
    assert (lane_loop(kernel) is not None) == lanes
    if lanes:
        return
    x = np.random.default_rng(4).standard_normal((64, 1000)).astype(np.float32)
    y = np.arange(64, dtype=np.int64)
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    np.testing.assert_allclose(streamed.run(x, y)[0], e / e.sum(1, keepdims=True) + y[:, None], rtol=1e-6)


def _placed(n, byte_offset):
    """A writeable float32 array of n elements starting `byte_offset` bytes past a 64-byte boundary."""
    raw = np.empty(4 * n + 128, np.uint8)
    start = -raw.ctypes.data % 64 + byte_offset
    return raw[start:start + 4 * n].view(np.float32)


@pytest.mark.parametrize("offsets", [(4, 4), (8, 36), (2, 2), (0, 4)],
                         ids=["aligned alike", "alike mod 32", "not float-aligned", "not alike"])
def test_outputs_placed_at_any_offset_get_the_same_bits(offsets, monkeypatch):
    """The head runs up to the first aligned address; buffers whose addresses differ modulo the
    vector (or are not aligned to their elements) are stored the usual way."""
    n = 4099
    plain, streamed = _programs(CHAIN.format(n=n), monkeypatch)
    inputs = _inputs(plain, seed=1)
    want = plain.run(*inputs)
    into = {name: _placed(n, offset) for name, offset in zip(("2", "3"), offsets)}
    got = streamed.run(*inputs, into=into)
    for w, g, placed in zip(want, got, into.values()):
        assert g is placed
        np.testing.assert_array_equal(g, w)
