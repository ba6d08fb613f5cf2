"""What the extreme-values fuzzer (tests/test_extremes_fuzz.py) found, each kept as the smallest
example that failed, with the known defect it was written for."""
import warnings

import numpy as np
import pytest

import ndlc as ndl

nn = ndl.nn


def eager_and_compiled(module, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's overflow warnings, eagerly
        return module(ndl.Tensor(x)).numpy(), ndl.compile(module)(x).numpy()


@pytest.mark.parametrize("make, shape", [(lambda: nn.LayerNorm1d(8), (4, 8)), (lambda: nn.BatchNorm1d(8), (4, 8)),
                                         (lambda: nn.BatchNorm2d(3), (2, 3, 4, 4))])
def test_normalising_values_of_1e19_is_finite_as_eagerly(make, shape):
    """One-pass statistics summed d² = (x - x₀)² of ~1e38 each, which overflowed where the two-pass
    Σ(x - mean)² does not, and (Σd)²/n with it: inf - inf, NaN for every element. The squares are
    now summed scaled by 2^-32 (passes/statistics.py SCALE)."""
    x = (np.random.default_rng(0).standard_normal(shape) * 1e19).astype(np.float32)
    eager, compiled = eager_and_compiled(make(), x)
    assert np.isfinite(eager).all()
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)


def test_a_sum_of_squares_that_overflows_only_shifted_is_not_inf():
    """[0, 2e19]: Σd² = 4e38 overflows, the two-pass Σ(x - mean)² = 2e38 does not; the rows
    normalise to ±1, not to 0 (an infinite variance)."""
    x = np.array([[0.0, 2e19]], np.float32)
    eager, compiled = eager_and_compiled(nn.LayerNorm1d(2), x)
    np.testing.assert_allclose(eager, [[-1.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(compiled, eager, rtol=1e-6)


def test_a_variance_that_overflows_eagerly_overflows_compiled():
    """Values of ±1e30: eagerly the variance is inf and the outputs (x - mean)·0 = 0; compiled the
    same, not the inf - inf of an overflowed Σd² and (Σd)²/n (passes/statistics.py LARGEST)."""
    x = np.array([[1e30, -1e30, 3e29, 0.0]], np.float32)
    eager, compiled = eager_and_compiled(nn.LayerNorm1d(4), x)
    np.testing.assert_array_equal(compiled, eager)


@pytest.mark.xfail(strict=True, reason="known defect: mathlib's sin/cos reduce by pi/2 in three float64 parts "
                                      "(Cody-Waite), exact only below about 2^20 (tests/test_extremes_fuzz.py TRIG_MOST)")
def test_the_sine_of_a_large_argument_is_as_eagerly():
    """sin(1e19) is 0.578 eagerly (numpy's exact reduction), 9.3e30 compiled: the reduction's products of
    k ~ 6e18 with pi/2's parts round by thousands and the polynomial runs far outside its range."""
    x = np.array([1e19, 3e38, 1e7], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = ndl.ops.sin(ndl.Tensor(x)).numpy()
    np.testing.assert_allclose(ndl.compile(ndl.ops.sin)(x).numpy(), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_power_of_special_values_is_numpys(dtype):
    """power(-inf, 1.5) was NaN compiled (a negative base, a fractional exponent), inf eagerly; so
    were 1**nan and (-1)**inf (1 as C99's pow), and (-0)**-3 was +inf (-inf): every pair of these
    values now gives numpy's result, signed zeros included."""
    values = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -3.0, 1.5, -1.5, 3.4e38, 1e-40, -1e19]
    a, b = (np.array(v, dtype) for v in zip(*[(p, q) for p in values for q in values]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = ndl.ops.power(ndl.Tensor(a, dtype=dtype), ndl.Tensor(b, dtype=dtype)).numpy()
    compiled = ndl.compile(ndl.ops.power)(ndl.Tensor(a, dtype=dtype), ndl.Tensor(b, dtype=dtype)).numpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-6)
    assert (np.signbit(compiled) == np.signbit(eager))[~np.isnan(eager)].all()


def test_rows_of_1024_values_of_3e17_normalise_as_eagerly():
    """Σ(x - mean)² of a row is ~9e37, finite; (Σd)² is up to n times Σd²: scaled by 2^-j at most
    1/(n(n + 1)) (passes/statistics.py), neither overflows, where rows of 1024 were NaN."""
    x = (np.random.default_rng(1024).standard_normal((4, 1024)) * 3e17).astype(np.float32)
    eager, compiled = eager_and_compiled(nn.LayerNorm1d(1024), x)
    assert np.isfinite(eager).all()
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-4)
