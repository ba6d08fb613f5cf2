"""Max pooling on codegen's vectors: its window maxima run the outputs side by side (a 'rows'
kernel whose lanes are output columns, the windows gathered), NaNs propagating as numpy's max
does; its gradient's col2im at a stride under the kernel sums each tap's plane onto one phase of
the input (ir/ops/windows.py `_phases`) in the taps' order: numpy's bits, NaNs, ties and zeros."""
import numpy as np
from hypothesis import given, settings, strategies as st

import ndlc as ndl
from ndlc.codegen.llvm_lanes import lane_loop
from ndlc.codegen.llvm_vector import interleaved_rows
from ndlc.ir import parse
from ndlc.ir.kernel import Strategy
from ndlc.ir.ops.windows import _unwindows_ref, windows_ref
from ndlc.jit.compile import compile_graph

SETTINGS = settings(max_examples=10, deadline=None)


def _images(data, k):
    """A drawn (N, C, H, W) batch of windows of `k`, with NaNs, infinities, signed zeros and ties."""
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)),
             data.draw(st.integers(k, k + 12)), data.draw(st.integers(k, k + 30)))
    rng = np.random.default_rng(sum(shape) * k)
    x = rng.standard_normal(shape).astype(np.float32)
    for value, share in ((np.nan, 0.03), (np.inf, 0.03), (-np.inf, 0.03), (0.0, 0.1), (-0.0, 0.1), (1.5, 0.2)):
        x[rng.random(shape) < share] = value
    return x, rng


def _pooled(x, k, s):
    return windows_ref(x, k, s).max(axis=(-2, -1))


def test_max_pooling_runs_its_outputs_side_by_side_as_codegens_vectors():
    program = compile_graph(parse("""
graph @pool(%x: f32[2,3,33,33]) {
  %0 = max_pool2d(%x, kernel=3, stride=2) : f32[2,3,16,16]
  return %0
}"""), cached=False)
    (kernel,) = program.kernels.kernels
    assert kernel.strategy == Strategy.ROWS and lane_loop(kernel) == kernel.outer - 1
    assert "accumulate side by side; the reductions read maxima over windows short along i4" in program.ir("scheduled")


@SETTINGS
@given(st.data(), st.sampled_from([(2, 2), (3, 2), (3, 3), (2, 1), (5, 2), (4, 3)]))
def test_max_pooling_gives_numpys_maxima_and_nans(data, window):
    k, s = window
    x, _ = _images(data, k)
    out = _pooled(x, k, s)
    text = (f"graph @pool(%x: f32[{','.join(map(str, x.shape))}]) {{\n  %0 = max_pool2d(%x, kernel={k}, stride={s}) : "
            f"f32[{','.join(map(str, out.shape))}]\n  return %0\n}}")
    (got,) = compile_graph(parse(text), cached=False).run(x)
    np.testing.assert_array_equal(got, out)  # NaN where numpy's; zeros of either sign alike


def _gradient(k, s, shape):
    """ndl.compile's forward and backward of max pooling (k, s) over an input of `shape`, run once."""
    pool = ndl.nn.MaxPool2d(k, s)

    def step(x, c):
        x.requires_grad = True
        (pool(x) * c).sum().backward()
        return x.grad
    compiled = ndl.compile(step)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    compiled(x, np.ones(shape[:2] + tuple((d - k) // s + 1 for d in shape[2:]), np.float32))
    return compiled


def test_window_maxima_storing_their_shares_over_the_window_stay_a_points():
    """Windows that tile the input (k == s) fuse their shares' relayout into the maxima's kernel,
    a phase storing over the window strided along the outputs: it stays 'point'; overlapping
    windows over rows wide enough compare their shares in col2im's phases, so their maxima's
    kernel stores the maxima alone and runs them side by side."""
    tiled, overlapping = (_gradient(k, s, (2, 3, 8, 17)).ir("scheduled") for k, s in ((2, 2), (3, 2)))
    assert "max_pool2d" in tiled and "strategy: rows" not in tiled
    assert "maxima over windows short along i4" in overlapping and "unwindows" not in overlapping


def _spread(picked, k, s, size):
    """The windows' shares summed back onto the input in the taps' order from zeros, or where the
    windows tile it (s == k) each share moved to its input (ir/ops/windows.py: a relayout)."""
    if s != k:
        return _unwindows_ref(picked, k, s, size)
    out = np.zeros(picked.shape[:-4] + tuple(size), picked.dtype)
    ho, wo = picked.shape[-4:-2]
    for i in range(k):
        for j in range(k):
            out[..., i:i + s * ho:s, j:j + s * wo:s] = picked[..., i, j]
    return out


@SETTINGS
@given(st.data(), st.sampled_from([(3, 2), (2, 2), (5, 2), (4, 3), (5, 3)]))
def test_max_pooling_gradient_is_numpys_bit_for_bit(data, window):
    """Every tied maximum gets the gradient, a window holding a NaN none; where windows overlap,
    an input sums its windows' shares in the taps' order, as the unwindows loop nest did."""
    k, s = window
    x, rng = _images(data, k)
    pool = ndl.nn.MaxPool2d(k, s)
    windows, best = windows_ref(x, k, s), _pooled(x, k, s)
    c = rng.standard_normal(best.shape).astype(np.float32)
    c[rng.random(c.shape) < 0.2] = -0.0

    def step(x, c):
        x.requires_grad = True
        (pool(x) * c).sum().backward()
        return x.grad
    got = ndl.compile(step)(x, c).numpy()
    picked = np.where(windows == best[..., None, None], c[..., None, None], np.float32(0))
    assert got.tobytes() == _spread(picked, k, s, x.shape[-2:]).tobytes()


def test_strided_col2im_interleaves_each_rows_phases_into_vectors():
    """Its phases' kernel runs the windows' columns as the lanes and the s phases of a column
    interleaved into one store (codegen/llvm_vector.py `_interleaved`), each phase reading only its
    taps' planes; the columns where a tap's window is missing split off by their guards."""
    program = compile_graph(parse("""
graph @col2im(%g: f32[4,16,16,3,3]) {
  %0 = unwindows(%g, kernel=3, stride=2, size=(34, 34)) : f32[4,34,34]
  return %0
}"""), cached=False)
    (kernel,) = program.kernels.kernels
    assert kernel.extents == (4, 17, 2, 17, 2) and interleaved_rows(kernel, 8) and lane_loop(kernel) == 3
    g = np.random.default_rng(2).standard_normal((4, 16, 16, 3, 3)).astype(np.float32)
    assert program.run(g)[0].tobytes() == _unwindows_ref(g, 3, 2, (34, 34)).tobytes()


@SETTINGS
@given(st.data(), st.sampled_from([(3, 2), (5, 2), (4, 3), (5, 4), (7, 3)]))
def test_strided_col2im_by_phases_is_the_loop_nests_sum(data, window):
    k, s = window
    ho, wo = data.draw(st.integers(1, 9)), data.draw(st.integers(8, 24))  # phase rows of 8 columns or more
    size = (s * (ho - 1) + k + data.draw(st.integers(0, s - 1)), s * (wo - 1) + k + data.draw(st.integers(0, s - 1)))
    g = np.random.default_rng(ho * wo).standard_normal((2, ho, wo, k, k)).astype(np.float32)
    g[np.random.default_rng(k).random(g.shape) < 0.3] = -0.0
    text = (f"graph @col2im(%g: f32[2,{ho},{wo},{k},{k}]) {{\n  %0 = unwindows(%g, kernel={k}, stride={s}, "
            f"size=({size[0]}, {size[1]})) : f32[2,{size[0]},{size[1]}]\n  return %0\n}}")
    (got,) = compile_graph(parse(text), cached=False).run(g)
    assert got.tobytes() == _unwindows_ref(g, k, s, size).tobytes()
