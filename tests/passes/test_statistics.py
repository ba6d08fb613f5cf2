"""One-pass statistics (passes/statistics.py): a sum of x then a sum of (x - mean)² become shifted
sums in one pass, as text in and out, and stay accurate where the mean dwarfs the spread."""
from dataclasses import replace

import numpy as np
import pytest

import ndlc as ndl
from ndlc.ir import parse_kernels
from ndlc.passes.statistics import one_pass_statistics

TWO_PASSES = """
program @ln(%x) -> (%13)
  %x: f32[16,8] input
  %1: f32[16] temp
  %11: f32[16,1] temp
  %13: f32[16,8] output

kernel k0 -> %1, %11, %13
  fuses: %0 summation, %1 divide_scalar, %7 summation, %8 divide_scalar, %11 power_scalar, %13 multiply
  loops: i0<16 | i1<8
  $0 = %x[8*i0 + i1]
  $1 = %1[i0]
  $2 = %11[i0]
  phase 0: reduce
    acc0 = add of $0
    store %1[i0] = div(acc0, {n})
  phase 1: reduce
    acc0 = add of mul(add($0, neg($1)), add($0, neg($1)))
    store %11[i0] = div(1, sqrt(add(div(acc0, 8.0), 1e-05)))
  phase 2: map over the inner loops
    store %13[8*i0 + i1] = mul(add($0, neg($1)), $2)"""


def rewritten(text):
    program = parse_kernels(text)
    return str(replace(program, kernels=[one_pass_statistics(k) for k in program.kernels]))


def test_mean_and_sum_of_squares_become_one_pass_of_sums_shifted_by_the_first_element():
    assert rewritten(TWO_PASSES.format(n="8.0")) == """
program @ln(%x) -> (%13)
  %x: f32[16,8] input
  %1: f32[16] temp
  %11: f32[16,1] temp
  %13: f32[16,8] output

kernel k0 -> %1, %11, %13
  fuses: %0 summation, %1 divide_scalar, %7 summation, %8 divide_scalar, %11 power_scalar, %13 multiply
  merged: statistics of %x in one pass: sums shifted by its first inner element
  loops: i0<16 | i1<8
  $0 = %x[8*i0 + i1]
  $1 = %1[i0]
  $2 = %11[i0]
  $3 = %x[8*i0]
  phase 0: reduce
    acc0 = add of sub(mul($0, 0.0625), mul($3, 0.0625))
    acc1 = add of mul(sub(mul($0, 0.0625), mul($3, 0.0625)), sub(mul($0, 0.0625), mul($3, 0.0625)))
    store %1[i0] = mul(div(mul(add(acc0, mul(mul($3, 0.0625), 8.0)), 8.0), 8.0), 2.0)
    store %11[i0] = div(1, sqrt(add(div(mul(max(sub(acc1, min(div(mul(acc0, acc0), 8.0), 3.4028234663852886e+38)), 0.0), 256.0), 8.0), 1e-05)))
  phase 1: map over the inner loops
    store %13[8*i0 + i1] = mul(add($0, neg($1)), $2)""".strip("\n")


BN2D_TWO_PASSES = """
program @bn2d(%c, %b) -> (%12, %19)
  %c: f32[4,3,5,7] input
  %b: f32[3] input
  %12: f32[3] output
  %19: f32[3] output

kernel k0 -> %12, %19
  fuses: %9 add, %11 summation, %12 divide_scalar, %18 summation, %19 divide_scalar
  loops: i0<3 | i1<4 i2<5 i3<7
  $0 = %c[35*i0 + 105*i1 + 7*i2 + i3]
  $1 = %b[i0]
  $2 = %12[i0]
  phase 0: reduce
    acc0 = add of add($0, $1)
    store %12[i0] = div(acc0, 140.0)
  phase 1: reduce
    acc0 = add of pow(add(add($0, $1), neg($2)), 2.0)
    store %19[i0] = div(acc0, 140.0)"""


def test_statistics_of_an_expression_shift_it_by_its_value_at_the_first_element():
    """BatchNorm2d after a conv: x is the conv's output plus its bias, both loads."""
    assert rewritten(BN2D_TWO_PASSES) == """
program @bn2d(%c, %b) -> (%12, %19)
  %c: f32[4,3,5,7] input
  %b: f32[3] input
  %12: f32[3] output
  %19: f32[3] output

kernel k0 -> %12, %19
  fuses: %9 add, %11 summation, %12 divide_scalar, %18 summation, %19 divide_scalar
  merged: statistics of %c in one pass: sums shifted by its first inner element
  loops: i0<3 | i1<4 i2<5 i3<7
  $0 = %c[35*i0 + 105*i1 + 7*i2 + i3]
  $1 = %b[i0]
  $2 = %12[i0]
  $3 = %c[35*i0]
  phase 0: reduce
    acc0 = add of sub(mul(add($0, $1), 0.00390625), mul(add($3, $1), 0.00390625))
    acc1 = add of mul(sub(mul(add($0, $1), 0.00390625), mul(add($3, $1), 0.00390625)), sub(mul(add($0, $1), 0.00390625), mul(add($3, $1), 0.00390625)))
    store %12[i0] = mul(div(mul(add(acc0, mul(mul(add($3, $1), 0.00390625), 140.0)), 128.0), 140.0), 2.0)
    store %19[i0] = div(mul(max(sub(acc1, min(div(mul(acc0, acc0), 140.0), 3.4028234663852886e+38)), 0.0), 65536.0), 140.0)""".strip("\n")


def test_an_expression_that_is_not_the_summed_one_keeps_two_passes():
    text = BN2D_TWO_PASSES.replace(
        "acc0 = add of pow(add(add($0, $1), neg($2)), 2.0)", "acc0 = add of pow(add(mul($0, $1), neg($2)), 2.0)")
    assert rewritten(text) == str(parse_kernels(text))


def test_a_stored_value_that_is_not_the_mean_keeps_two_passes():
    """(x - s)² where s = Σx / 7 over 8 elements is no variance about the mean: unchanged."""
    text = TWO_PASSES.format(n="7.0")
    assert rewritten(text) == str(parse_kernels(text))


def test_empty_rows_have_no_first_element_to_shift_by():
    text = TWO_PASSES.format(n="0.0").replace("f32[16,8]", "f32[16,0]").replace("i1<8", "i1<0")
    assert rewritten(text) == str(parse_kernels(text))


def _variance_and_normalised(x, axis):
    """Σ(x - mean)²/n and the normalisation, written by hand, compiled."""
    def stats(x):
        n = x.shape[axis]
        shape = (1, x.shape[1]) if axis == 0 else (x.shape[0], 1)
        xc = x - (x.sum((axis,)) / n).reshape(shape).broadcast_to(x.shape)
        var = (xc * xc).sum((axis,)) / n
        return var, xc * ((var.reshape(shape) + 1e-5) ** -0.5).broadcast_to(x.shape)
    compiled = ndl.compile(stats)
    var, y = (t.numpy() for t in compiled(x))
    assert "statistics of %x in one pass" in compiled.ir("fused")
    return var, y


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("mean, spread, outlier", [(0.0, 1.0, 0.0), (1e4, 1e-2, 0.0), (1e3, 1e-3, 0.0),
                                                    (1e5, 1.0, 0.0), (0.0, 1.0, 50.0)])
def test_shifted_sums_are_accurate_where_the_mean_dwarfs_the_spread(axis, mean, spread, outlier):
    """Against float64 and PyTorch's float32: the variance within 2e-5 of float64 and the normalised
    values no further from it than PyTorch's own BatchNorm/LayerNorm (plus 1e-4); with the shift
    an outlier 50 spreads out (the worst case: (mean - shift)² is 2500 variances), within 1e-3
    and 1e-4 of the largest value more."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = (mean + spread * rng.standard_normal((512, 256))).astype(np.float32)
    first = (0, slice(None)) if axis == 0 else (slice(None), 0)
    x[first] += np.float32(outlier * spread)
    var, y = _variance_and_normalised(x, axis)
    x64 = x.astype(np.float64)
    var64 = x64.var(axis)
    y64 = (x64 - x64.mean(axis, keepdims=True)) / np.sqrt(x64.var(axis, keepdims=True) + 1e-5)
    assert np.abs(var / var64 - 1).max() < (1e-3 if outlier else 2e-5)
    t = torch.from_numpy(x)
    theirs = (torch.nn.functional.batch_norm(t, None, None, training=True, eps=1e-5) if axis == 0
              else torch.nn.functional.layer_norm(t, t.shape[1:], eps=1e-5)).numpy()
    assert np.abs(y - y64).max() <= np.abs(theirs - y64).max() + 1e-4 * (np.abs(y64).max() if outlier else 1)


@pytest.mark.parametrize("mean, spread", [(0.0, 1.0), (1e3, 1e-2)])
def test_channel_statistics_of_a_biased_input_are_one_pass_and_accurate(mean, spread):
    """BatchNorm2d's statistics of a conv's output plus its bias (here an input plus a bias):
    x + b is the summed expression, shifted by its value at the channel's first element."""
    rng = np.random.default_rng(8)
    x = (mean + spread * rng.standard_normal((16, 3, 12, 12))).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)

    def stats(x, b):
        y = x + b.reshape((1, 3, 1, 1)).broadcast_to(x.shape)
        mu = (y.sum((0, 2, 3)) / 2304).reshape((1, 3, 1, 1)).broadcast_to(x.shape)
        return ((y - mu) ** 2).sum((0, 2, 3)) / 2304
    compiled = ndl.compile(stats)
    var = compiled(x, b).numpy()
    assert "statistics of %x in one pass" in compiled.ir("fused")
    var64 = (x.astype(np.float64) + b.reshape(1, 3, 1, 1)).var((0, 2, 3))
    assert np.abs(var / var64 - 1).max() < 2e-5


@pytest.mark.parametrize("module, shape", [("LayerNorm1d", (3, 8)), ("LayerNorm1d", (3, 67)), ("LayerNorm1d", (3, 130)),
                                           ("LayerNorm1d", (3, 4096)), ("BatchNorm1d", (8, 3)), ("BatchNorm1d", (130, 3)),
                                           ("BatchNorm2d", (2, 3, 4, 4)), ("BatchNorm2d", (4, 3, 12, 12))])
def test_rows_mixing_the_largest_floats_of_both_signs_are_finite_where_eager_s_are(module, shape):
    """A row (column, channel) holding +3e38 and -3e38, or the largest float first, among ordinary
    values: eager's mean is finite, its variance inf, its outputs 0 (x - mean over sqrt(inf)). The
    shifted sums overflowed there: d = x - k (3e38 - -3e38), n·k, or Σd rounded past the largest
    float, a NaN mean and NaN outputs. Scaled by 2^(-exponent/2) before they are summed they do
    not: the compiled outputs are eager's."""
    axis = 0 if module == "LayerNorm1d" else 1  # the statistics' index: a row, a channel
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype(np.float32)
    rows = np.moveaxis(x, axis, 0).reshape(3, -1)  # a view: each statistic's elements, in memory order
    for row, at, value in [(0, 0, 3e38), (0, 3, -3e38), (1, 1, -3e38), (1, 5, 3e38), (2, 0, np.finfo(np.float32).max)]:
        rows[row, at] = value
    x = np.moveaxis(rows.reshape(np.moveaxis(x, axis, 0).shape), 0, axis).copy()
    np.random.seed(0)
    m = getattr(ndl.nn, module)(shape[-1] if module == "LayerNorm1d" else shape[1])
    with np.errstate(over="ignore", invalid="ignore"):
        eager = m(ndl.Tensor(x)).numpy()
        compiled = ndl.compile(lambda t: m(t))(ndl.Tensor(x)).numpy()
    assert np.isfinite(np.moveaxis(eager, axis, 0)[[0, 2]]).all() and (np.abs(x) > 1e38).sum() == 5
    np.testing.assert_array_equal(np.isfinite(compiled), np.isfinite(eager))
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-4)
