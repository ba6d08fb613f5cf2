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
    now summed scaled by a power of two (passes/statistics.py _one_pass)."""
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


def test_a_squared_sum_that_overflows_where_the_squares_do_not_is_no_zero_variance():
    """A column [3e19, -1.46e19, 3.6e18, -1.22e19]: Σd·2^-j·Σd (4e38) overflowed where Σd²·2^-j did
    not, was held to the largest float, and the variance came out 0: outputs of 1e22 and NaN
    gradients where eager's (an infinite variance) are 0. Σd is now scaled by 2^(-j/2) before it is
    squared (passes/statistics.py), so the variance overflows as eagerly."""
    x = np.array([[3e19, 1.0], [-1.4611439e19, 2.0], [3.58698e18, 3.0], [-1.222011e19, 5.0]], np.float32)
    m = nn.BatchNorm1d(2)

    def step(t):
        t.requires_grad = True
        y = m(t)
        (y * ndl.Tensor(np.array([[0.5, -1.0]] * 4, np.float32))).sum().backward()
        return y, t.grad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = [a.numpy() for a in step(ndl.Tensor(x))]
    compiled = [a.numpy() for a in ndl.compile(step)(ndl.Tensor(x))]
    np.testing.assert_array_equal(eager[0][:, 0], 0.0)
    for e, c in zip(eager, compiled):
        np.testing.assert_array_equal(c[:, 0], e[:, 0])
        np.testing.assert_allclose(c[:, 1], e[:, 1], rtol=1e-5, atol=1e-6)


def test_a_variance_that_overflows_eagerly_overflows_compiled():
    """Values of ±1e30: eagerly the variance is inf and the outputs (x - mean)·0 = 0; compiled the
    same, not the inf - inf of an overflowed Σd² and (Σd)²/n (passes/statistics.py LARGEST)."""
    x = np.array([[1e30, -1e30, 3e29, 0.0]], np.float32)
    eager, compiled = eager_and_compiled(nn.LayerNorm1d(4), x)
    np.testing.assert_array_equal(compiled, eager)


def test_the_sine_of_a_large_argument_is_as_eagerly():
    """sin(1e19) is 0.578 eagerly (numpy's exact reduction); it was 9.3e30 compiled: the Cody-Waite
    reduction's products of k ~ 6e18 with pi/2's parts rounded by thousands (now Payne-Hanek's past 2^20)."""
    x = np.array([1e19, 3e38, 1e7], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = ndl.ops.sin(ndl.Tensor(x)).numpy()
    np.testing.assert_allclose(ndl.compile(ndl.ops.sin)(x).numpy(), eager, rtol=1e-5, atol=1e-6)


def ulps(compiled, reference):
    """|compiled - reference| in units of the last place of reference's type at reference."""
    spacing = np.spacing(np.abs(reference)).astype(np.float64)
    return np.abs(compiled.astype(np.float64) - reference.astype(np.float64)) / spacing


# float32 arguments nearest a multiple of pi/2 (x 2/pi within 1e-9 to 8e-9 of an integer), found by
# a search of every float32 significand in each binade from 2^20 to 2^127
HARD_F32 = [7.72917892e+28, 2.19993846e+10, 1.54583578e+29, 4.39987692e+10, 3.09167157e+29, 4.63818338e+25,
            1.52278899e+12, 8.11762664e+22, 8.79975383e+10, 4.3865579e+33, 42781604, 1.0341292e+27]


@pytest.mark.parametrize("dtype, most", [("float32", 2), ("float64", 4)])
@pytest.mark.parametrize("op", ["sin", "cos"])
def test_sine_and_cosine_agree_with_numpy_in_every_binade(dtype, most, op):
    """Random arguments of every binade from 2^-30 to the type's largest, both signs (and float32's
    hardest cases), on rows long enough for codegen's vectors and on rows of 3 (scalars): within
    `most` ulp of numpy's sin/cos (past 2^20 by the Payne-Hanek reduction, below by Cody-Waite)."""
    rng = np.random.default_rng(5)
    top = 128 if dtype == "float32" else 1024
    x = np.concatenate([rng.uniform(1, 2, 24) * 2.0 ** e for e in range(-30, top)] + [HARD_F32]).astype(dtype)
    x = np.concatenate([x, -x])
    fn, reference = ndl.compile(getattr(ndl.ops, op)), getattr(np, op)(x)
    assert ulps(fn(ndl.Tensor(x, dtype=dtype)).numpy(), reference).max() <= most
    short = np.concatenate([fn(ndl.Tensor(x[i:i + 3], dtype=dtype)).numpy() for i in range(0, 300, 3)])
    assert ulps(short, reference[:300]).max() <= most
    shuffled = rng.permutation(len(x))[:300]
    short = np.concatenate([fn(ndl.Tensor(x[shuffled[i:i + 3]], dtype=dtype)).numpy() for i in range(0, 300, 3)])
    assert ulps(short, reference[shuffled]).max() <= most


def test_the_cosine_of_the_double_nearest_a_multiple_of_pi_over_2():
    """x = 6381956970095103 2^797 is within 4.7e-19 of a multiple of pi/2, the closest of any float64
    (Kahan and McDonald): its cosine is that remainder, to the last bit here (mpmath's, at 3000 bits)."""
    mpmath = pytest.importorskip("mpmath")
    x = np.ldexp(np.float64(6381956970095103), 797) * np.array([1.0, -1.0])
    with mpmath.workprec(3000):
        reference = np.array([float(mpmath.cos(mpmath.mpf(float(v)))) for v in x])
        sine = np.array([float(mpmath.sin(mpmath.mpf(float(v)))) for v in x])
    assert ulps(ndl.compile(ndl.ops.cos)(ndl.Tensor(x, dtype="float64")).numpy(), reference).max() <= 1
    assert ulps(ndl.compile(ndl.ops.sin)(ndl.Tensor(x, dtype="float64")).numpy(), sine).max() <= 1


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
