"""random_uniform: a pure function of (seed, stream, index) with the moments of U[0, 1)."""
import numpy as np

from ndlc.ir import get_op

uniform = get_op("random_uniform").reference


def test_moments_and_range():
    x = uniform(np.int64(12345), shape=(200_000,), dtype="f64", stream=0)
    assert 0 <= x.min() and x.max() < 1
    assert abs(x.mean() - 0.5) < 0.005 and abs(x.var() - 1 / 12) < 0.002
    counts, _ = np.histogram(x, bins=10, range=(0, 1))
    assert counts.min() > 0.97 * 20_000 and counts.max() < 1.03 * 20_000


def test_pure_function_of_seed_stream_and_index():
    a = uniform(np.int64(7), shape=(4, 5), dtype="f32", stream=1)
    assert np.array_equal(a, uniform(np.int64(7), shape=(4, 5), dtype="f32", stream=1))
    assert np.array_equal(a.ravel()[:6], uniform(np.int64(7), shape=(6,), dtype="f32", stream=1))
    other_seed = uniform(np.int64(8), shape=(4, 5), dtype="f32", stream=1)
    other_stream = uniform(np.int64(7), shape=(4, 5), dtype="f32", stream=2)
    assert not np.array_equal(a, other_seed) and not np.array_equal(a, other_stream)


def test_streams_and_neighbouring_seeds_are_uncorrelated():
    n = 100_000
    a = uniform(np.int64(1), shape=(n,), dtype="f64", stream=0)
    b = uniform(np.int64(1), shape=(n,), dtype="f64", stream=1)
    c = uniform(np.int64(2), shape=(n,), dtype="f64", stream=0)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02 and abs(np.corrcoef(a, c)[0, 1]) < 0.02
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.02
