"""needle's NDArray fuzzed against numpy. Drawn sequences of views (reshape, permute, broadcast_to,
getitem with drawn slices), writes through them (setitem, from numbers and from views of the same
storage), copies (compact, flip, pad) and values (elementwise, scalar, comparisons with needle's
definitions, reductions, matmul) on both host devices, each mirrored on numpy views of one base
array, so that a write through any view must show in every other. And bad calls drawn from a
catalogue: each an NDArrayError (an IndexError for an index out of range) that leaves the array as
it was. FUZZ_EXAMPLES sets how many are drawn (`-m slow`: many more)."""
import operator
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ndlc import backend_ndarray as nd

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
STEPS = 14
ARITHMETIC = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.divide}
COMPARISONS = ("eq", "ge", "ne", "gt", "lt", "le")


def fast(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


class Views:
    """Live (NDArray, numpy) pairs: each numpy array a view of the numpy base exactly where the
    NDArray is a view of its storage."""

    def __init__(self, data, nd_array, ref):
        self.data, self.pairs = data, [(nd_array, ref)]

    def draw(self, filter_=lambda a, r: True):
        candidates = [p for p in self.pairs if filter_(*p)]
        return self.data.draw(st.sampled_from(candidates)) if candidates else None

    def check(self):
        for a, ref in self.pairs:
            assert a.shape == ref.shape
            np.testing.assert_allclose(a.numpy(), ref, rtol=1e-6, atol=1e-6)


def values(data, shape, dtype, nonzero=False):
    elements = st.integers(1, 4).map(lambda v: v * data.draw(st.sampled_from([1, -1]))) if nonzero \
        else st.integers(-4, 4)
    return np.array(data.draw(st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
                    dtype=dtype).reshape(shape)


def index(data, shape):
    """A drawn index (one int or slice a dimension) and the numpy slices it selects, or None where
    a slice selects nothing (needle refuses it)."""
    idxs, slices = [], []
    for n in shape:
        if n and data.draw(st.booleans()):
            i = data.draw(st.integers(-n, n - 1))
            idxs.append(i)
            slices.append(slice(i % n, i % n + 1))
            continue
        bound = st.none() | st.integers(-n - 2, n + 2)
        sl = slice(data.draw(bound), data.draw(bound), data.draw(st.none() | st.integers(1, 3)))
        start, stop, step = sl.indices(n)
        idxs.append(sl)
        slices.append(slice(start, stop, step) if stop > start else None)
    return tuple(idxs), None if None in slices else tuple(slices)


def factor_shape(data, size):
    """A drawn shape of `size` elements (one entry may be -1)."""
    if size == 0:
        return (1,) * data.draw(st.integers(0, 2)) + (0,)
    factors = [p for p in range(2, size + 1) for _ in range(_multiplicity(size, p))]
    dims = [1] * data.draw(st.integers(1, 3))
    for f in factors:
        dims[data.draw(st.integers(0, len(dims) - 1))] *= f
    if data.draw(st.booleans()):
        dims[data.draw(st.integers(0, len(dims) - 1))] = -1
    return tuple(dims)


def _multiplicity(n, p):
    count = 0
    while n % p == 0 and all(p % q for q in range(2, p)):
        n, count = n // p, count + 1
    return count


def needle_compare(name, a, b):
    """needle's comparisons: eq and ge from the device, the others built from them (NaN too)."""
    eq, ge = (a == b).astype(np.result_type(a)), (a >= b).astype(np.result_type(a))
    gt = ge * (1 - eq)
    return {"eq": eq, "ge": ge, "ne": 1 - eq, "gt": gt, "lt": 1 - ge, "le": 1 - gt}[name]


def step_view(views, data):
    a, ref = views.draw()
    kind = data.draw(st.sampled_from(["reshape", "permute", "broadcast", "getitem"]))
    if kind == "reshape":
        shape = factor_shape(data, a.size)
        if not a.is_compact():
            with pytest.raises(nd.NDArrayError, match="non-compact"):
                a.reshape(shape)
            return
        view, expected = a.reshape(shape), ref.reshape(shape)
        assert np.shares_memory(expected, ref) or not ref.size
    elif kind == "permute":
        axes = tuple(data.draw(st.permutations(range(a.ndim))))
        view, expected = a.permute(axes), ref.transpose(axes)
    elif kind == "broadcast":
        shape = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
        shape += tuple(data.draw(st.integers(1, 3)) if n == 1 else n for n in a.shape)
        view, expected = a.broadcast_to(shape), np.broadcast_to(ref, shape)
    else:
        idxs, slices = index(data, a.shape)
        if slices is None:
            with pytest.raises(nd.NDArrayError, match="selects no element"):
                a[idxs]
            return
        view, expected = a[idxs], ref[slices + (...,)]
    assert view._handle is a._handle
    views.pairs.append((view, expected))


def step_write(views, data):
    pair = views.draw(lambda a, r: r.flags.writeable and r.size)
    if pair is None:
        return
    a, ref = pair
    idxs, slices = index(data, a.shape)
    if slices is None:
        return
    target = ref[slices + (...,)]
    source = views.draw(lambda b, r: b.size == target.size) if data.draw(st.booleans()) else None
    if source is None:
        value = data.draw(st.integers(-9, 9))
        a[idxs] = value
        target[...] = value
    else:
        b, b_ref = source
        expected = b_ref.reshape(target.shape).copy()  # numpy reads an overlapping source first, as compact() copies
        a[idxs] = b
        target[...] = expected


def step_copy(views, data):
    a, ref = views.draw()
    kind = data.draw(st.sampled_from(["compact", "flip", "pad"]))
    if kind == "compact":
        was_compact, copy = a.is_compact(), a.compact()
        assert copy.is_compact() and (copy is a) == was_compact
        views.pairs.append((copy, ref if was_compact else ref.copy()))
    elif kind == "flip" and a.ndim:
        axes = tuple(data.draw(st.sets(st.integers(-a.ndim, a.ndim - 1), min_size=1).filter(
            lambda s: len({x % a.ndim for x in s}) == len(s))))
        axes = axes[0] if len(axes) == 1 and data.draw(st.booleans()) else axes
        views.pairs.append((a.flip(axes), np.flip(ref, axes).copy()))
    elif kind == "pad":
        widths = tuple(tuple(data.draw(st.integers(0, 2)) for _ in "ba") for _ in a.shape)
        views.pairs.append((a.pad(widths), np.pad(ref, widths).copy() if widths else ref.copy()))


def step_value(views, data):
    a, ref = views.draw()
    kind = data.draw(st.sampled_from(["binary", "scalar", "unary", "reduce", "matmul"]))
    if kind in ("binary", "scalar"):
        name = data.draw(st.sampled_from([*ARITHMETIC, "maximum", *COMPARISONS]))
        if kind == "binary":
            b_ref = values(data, a.shape, ref.dtype, nonzero=name == "truediv")
            b = nd.array(b_ref, device=a.device, dtype=ref.dtype.name)
        else:
            b = b_ref = data.draw(st.integers(1, 4) if name == "truediv" else st.integers(-4, 4))
        if name in COMPARISONS:
            result, expected = getattr(operator, name)(a, b), needle_compare(name, ref, b_ref)
        elif name == "maximum":
            result, expected = a.maximum(b), np.maximum(ref, b_ref)
        elif kind == "scalar" and name != "truediv" and data.draw(st.booleans()):  # the number on the left
            result, expected = getattr(operator, name)(b, a), ARITHMETIC[name](b_ref, ref)
        else:
            result, expected = getattr(operator, name)(a, b), ARITHMETIC[name](ref, b_ref)
    elif kind == "unary":
        name = data.draw(st.sampled_from(["neg", "exp", "log", "tanh", "pow"]))
        positive, positive_ref = a * a + 1, ref * ref + 1
        result, expected = {"neg": (lambda: (-a, -ref)), "exp": (lambda: (a.exp(), np.exp(ref))),
                            "log": (lambda: (positive.log(), np.log(positive_ref))),
                            "tanh": (lambda: (a.tanh(), np.tanh(ref))),
                            "pow": (lambda: (positive ** 1.5, positive_ref ** 1.5))}[name]()
    elif kind == "reduce":
        axis = data.draw(st.none() | st.integers(-a.ndim, a.ndim - 1) | st.tuples(st.integers(0, a.ndim - 1))) \
            if a.ndim else None
        keepdims, op = data.draw(st.booleans()), data.draw(st.sampled_from(["sum", "max"]))
        if op == "max" and (a.size == 0):
            return
        result = getattr(a, op)(axis=axis, keepdims=keepdims)
        expected = getattr(np, op)(ref, axis=axis, keepdims=keepdims) if axis is not None \
            else getattr(np, op)(ref).reshape(1)
    else:
        if a.ndim != 2:
            return
        if data.draw(st.booleans()):
            b, b_ref = a.permute((1, 0)), ref.T
        else:
            b_ref = values(data, (a.shape[1], data.draw(st.integers(1, 4))), ref.dtype)
            b = nd.array(b_ref, device=a.device, dtype=ref.dtype.name)
        result, expected = a @ b, ref @ b_ref
    assert result.shape == np.shape(expected)
    assert result.dtype == (ref.dtype.name if ref.dtype.kind == "f" else "float32")  # needle's float results
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-6)
    if np.isfinite(expected).all() and np.abs(expected).max(initial=0) < 1e4:
        # C order, as the result is compact: numpy's result of a view keeps the view's order
        views.pairs.append((result, np.array(expected, dtype=result.dtype, order="C")))


STEP_KINDS = {"view": step_view, "write": step_write, "copy": step_copy, "value": step_value}


def run_sequence(data):
    dtype = data.draw(st.sampled_from(["float32", "float64", "int32"]))
    shape = tuple(data.draw(st.lists(st.integers(1, 5) | st.just(0), min_size=0, max_size=4)))
    base = values(data, shape, dtype)
    a = nd.array(base, device=data.draw(st.sampled_from([nd.cpu(), nd.cpu_numpy()])), dtype=dtype)
    views = Views(data, a, base)
    for _ in range(data.draw(st.integers(1, STEPS))):
        STEP_KINDS[data.draw(st.sampled_from(list(STEP_KINDS)))](views, data)
        views.check()


def test_ndarray_sequences_agree_with_numpy_views():
    fast(EXAMPLES)(given(st.data())(run_sequence))()


@pytest.mark.slow
def test_ndarray_sequences_agree_with_numpy_views_many():
    settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))(
        given(st.data())(run_sequence))()


def _other_device(a):
    return nd.cpu_numpy() if a.device == nd.cpu() else nd.cpu()


def _non_compact(a):
    """A view of `a` that is not compact where `a` has one (else `a`)."""
    if a.ndim > 1 and max(a.shape) > 1:
        return a.permute(tuple(reversed(range(a.ndim))))
    return a[(slice(0, 1),) * a.ndim] if a.size > 1 else a


# name -> (needs, bad call of a drawn array `a` with a drawn integer `k` >= 1): each must raise an
# NDArrayError (an IndexError for an integer index out of range) and leave `a` as it was
BAD_CALLS = {
    "reshape-size": (lambda a: True, lambda a, k: a.reshape((a.size + k,))),
    "reshape-two-minus-ones": (lambda a: True, lambda a, k: a.reshape((-1, -1) + (1,) * k)),
    "reshape-negative": (lambda a: a.size, lambda a, k: a.reshape((-a.size, -1))),
    "reshape-float": (lambda a: True, lambda a, k: a.reshape((a.size / 1.0,))),
    "reshape-number": (lambda a: True, lambda a, k: a.reshape(a.size)),
    "reshape-non-compact": (lambda a: not _non_compact(a).is_compact(),
                            lambda a, k: _non_compact(a).reshape((_non_compact(a).size,))),
    "permute-short": (lambda a: a.ndim, lambda a, k: a.permute(tuple(range(a.ndim - 1)))),
    "permute-repeated": (lambda a: a.ndim > 1, lambda a, k: a.permute((0,) * a.ndim)),
    "permute-out-of-range": (lambda a: a.ndim, lambda a, k: a.permute(tuple(range(a.ndim - 1)) + (a.ndim + k,))),
    "broadcast-fewer-dims": (lambda a: a.ndim, lambda a, k: a.broadcast_to(a.shape[1:])),
    "broadcast-mismatch": (lambda a: any(n > 1 for n in a.shape),
                           lambda a, k: a.broadcast_to(tuple(n + k if n > 1 else n for n in a.shape))),
    "broadcast-negative": (lambda a: True, lambda a, k: a.broadcast_to((-k,) + a.shape)),
    "broadcast-float": (lambda a: True, lambda a, k: a.broadcast_to((k + 0.5,) + a.shape)),
    "getitem-count": (lambda a: True, lambda a, k: a[(0,) * (a.ndim + k)]),
    "getitem-out-of-range": (lambda a: a.ndim, lambda a, k: a[(a.shape[0] + k - 1,) + (0,) * (a.ndim - 1)]),
    "getitem-negative-step": (lambda a: a.ndim, lambda a, k: a[(slice(None, None, -k),) + (slice(None),) * (a.ndim - 1)]),
    "getitem-zero-step": (lambda a: a.ndim, lambda a, k: a[(slice(None, None, 0),) + (slice(None),) * (a.ndim - 1)]),
    "getitem-empty": (lambda a: a.ndim, lambda a, k: a[(slice(k, k),) + (slice(None),) * (a.ndim - 1)]),
    "getitem-float": (lambda a: a.ndim, lambda a, k: a[(k / 2,) + (0,) * (a.ndim - 1)]),
    "getitem-float-slice": (lambda a: a.ndim, lambda a, k: a[(slice(0.5, k),) + (0,) * (a.ndim - 1)]),
    "getitem-none": (lambda a: a.ndim, lambda a, k: a[(None,) + (0,) * (a.ndim - 1)]),
    "getitem-array": (lambda a: a.ndim, lambda a, k: a[(np.arange(k + 1),) + (0,) * (a.ndim - 1)]),
    "getitem-list": (lambda a: a.ndim, lambda a, k: a[([0] * k,) + (0,) * (a.ndim - 1)]),
    "getitem-ellipsis": (lambda a: a.ndim > 1, lambda a, k: a[..., 0]),
    "setitem-size": (lambda a: a.size, lambda a, k: a.__setitem__((slice(None),) * a.ndim, nd.array(np.ones(a.size + k)))),
    "setitem-numpy": (lambda a: a.ndim and a.size, lambda a, k: a.__setitem__((slice(None),) * a.ndim, np.ones(a.shape))),
    "setitem-list": (lambda a: a.size, lambda a, k: a.__setitem__((slice(None),) * a.ndim, [1.0] * k)),
    "setitem-text": (lambda a: a.size, lambda a, k: a.__setitem__((slice(None),) * a.ndim, "1")),
    "ewise-shape": (lambda a: True, lambda a, k: a + nd.array(np.ones(a.shape + (k,)))),
    "ewise-device": (lambda a: True, lambda a, k: a + nd.array(np.ones(a.shape), device=_other_device(a))),
    "matmul-device": (lambda a: a.ndim == 2, lambda a, k: a @ nd.array(np.ones(a.shape[::-1]), device=_other_device(a))),
    "setitem-device": (lambda a: a.size, lambda a, k: a.__setitem__((slice(None),) * a.ndim,
                                                                    nd.array(np.ones(a.shape), device=_other_device(a)))),
    "ewise-numpy": (lambda a: a.ndim, lambda a, k: a * np.ones(a.shape)),
    "ewise-text": (lambda a: True, lambda a, k: a - "1"),
    "ewise-none": (lambda a: True, lambda a, k: a.maximum(None)),
    "compare-complex": (lambda a: True, lambda a, k: a >= 1j * k),
    "power-array": (lambda a: True, lambda a, k: a ** a),
    "matmul-inner": (lambda a: a.ndim == 2, lambda a, k: a @ nd.array(np.ones((a.shape[1] + k, 2)))),
    "matmul-rank": (lambda a: a.ndim != 2, lambda a, k: a @ nd.array(np.ones((1, 1)))),
    "matmul-number": (lambda a: a.ndim == 2, lambda a, k: a @ k),
    "reduce-axis": (lambda a: True, lambda a, k: a.sum(axis=a.ndim + k - 1)),
    "reduce-two-axes": (lambda a: a.ndim > 1, lambda a, k: a.max(axis=(0, 1))),
    "reduce-empty-axes": (lambda a: True, lambda a, k: a.sum(axis=())),
    "reduce-float-axis": (lambda a: a.ndim, lambda a, k: a.sum(axis=0.5)),
    "max-empty": (lambda a: a.size == 0, lambda a, k: a.max()),
    "pad-count": (lambda a: True, lambda a, k: a.pad(((0, 0),) * (a.ndim + k))),
    "pad-negative": (lambda a: a.ndim, lambda a, k: a.pad(((-k, 0),) + ((0, 0),) * (a.ndim - 1))),
    "pad-number": (lambda a: True, lambda a, k: a.pad(k)),
    "flip-out-of-range": (lambda a: True, lambda a, k: a.flip((a.ndim + k - 1,))),
    "flip-repeated": (lambda a: a.ndim, lambda a, k: a.flip((0, -a.ndim))),
    "flip-float": (lambda a: a.ndim, lambda a, k: a.flip(0.5)),
    "device-unknown": (lambda a: True, lambda a, k: a.to("gpu")),
    "empty-negative": (lambda a: True, lambda a, k: nd.empty(a.shape + (-k,), device=a.device)),
    "full-float-shape": (lambda a: True, lambda a, k: nd.full((k + 0.5,), 1.0)),
}


def run_bad_call(data):
    name = data.draw(st.sampled_from(sorted(BAD_CALLS)))
    needs, call = BAD_CALLS[name]
    shape = tuple(data.draw(st.lists(st.integers(0, 4), max_size=3)))
    base = values(data, shape, data.draw(st.sampled_from(["float32", "float64"])))
    a = nd.array(base, device=data.draw(st.sampled_from([nd.cpu(), nd.cpu_numpy()])), dtype=base.dtype.name)
    if not needs(a):
        return
    with pytest.raises((nd.NDArrayError, IndexError)) as caught:
        call(a, data.draw(st.integers(1, 3)))
    assert isinstance(caught.value, nd.NDArrayError) or name == "getitem-out-of-range", (name, caught.value)
    np.testing.assert_array_equal(a.numpy(), base)


def test_bad_ndarray_calls_are_named_errors():
    fast(EXAMPLES * 3)(given(st.data())(run_bad_call))()


@pytest.mark.slow
def test_bad_ndarray_calls_are_named_errors_many():
    settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))(
        given(st.data())(run_bad_call))()
