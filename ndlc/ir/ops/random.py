"""Counter-based random numbers: element i of stream s under seed k is a pure function of
(k, s, i) (SplitMix64's mixer), so a compiled program needs no generator state but its seed,
and every backend can reproduce the reference bit for bit."""
import numpy as np

from .. import scalar as S
from ..graph import check
from ..registry import Attr, OpDef, register
from ..types import TensorType, is_float

GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
STREAM = 0xD1B54A32D192ED03


def mix64(z):
    """SplitMix64's finalizer on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


def uniform_bits(seed, stream, size):
    """24 random bits (as uint64) per element index 0..size-1."""
    with np.errstate(over="ignore"):
        base = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + np.uint64(stream) * np.uint64(STREAM)
        z = base + (np.arange(size, dtype=np.uint64) + np.uint64(1)) * np.uint64(GOLDEN)
        return mix64(z) >> np.uint64(40)


def _uniform_infer(types, shape, dtype, stream):
    (seed,) = types
    check(seed.shape == () and seed.dtype == "i64", f"seed must be an i64 scalar, got {seed}")
    check(is_float(dtype), f"dtype must be a float type, got {dtype}")
    check(stream >= 0, f"stream {stream} must be >= 0")
    return TensorType(shape, dtype)


def _uniform_ref(seed, shape, dtype, stream):
    bits = uniform_bits(int(seed), stream, int(np.prod(shape, dtype=np.int64)))
    values = bits.astype(np.float64) * (1.0 / (1 << 24))
    return values.reshape(shape).astype(TensorType((), dtype).np_dtype)


def _signed(c):
    """A uint64 constant as the int64 with the same bits (i64 arithmetic wraps like uint64's)."""
    c &= 0xFFFFFFFFFFFFFFFF
    return c - (1 << 64) if c >= 1 << 63 else c


def _uniform_scalar(seed, shape, dtype, stream):
    """The reference's arithmetic per element, on int64 bits: what backends lower."""
    z = seed + _signed(stream * STREAM) + (S.index() + 1) * _signed(GOLDEN)
    z = S.xor(z, S.shr(z, 30)) * _signed(MIX1)
    z = S.xor(z, S.shr(z, 27)) * _signed(MIX2)
    bits = S.shr(S.xor(z, S.shr(z, 31)), 40)
    return S.cast(S.cast(bits, "f64") * (1.0 / (1 << 24)), dtype)


register(OpDef("random_uniform", 1, _uniform_infer, _uniform_ref, lambda b, n, g: [None], _uniform_scalar,
               "random", {"shape": Attr("ints"), "dtype": Attr("dtype", "f32"), "stream": Attr("int", 0)},
               "uniform [0, 1) numbers, a pure function of (seed, stream, element index); 24-bit "
               "resolution, exact in f32"))
