"""Views as arithmetic on (shape, strides, offset), in elements: what reshape, permute, broadcast_to,
slicing and flips compute without touching storage, with needle's rules and errors."""
import math
import operator

from ..errors import NdlcError


class NDArrayError(NdlcError, ValueError, AssertionError):
    """A bad NDArray call. It is a ValueError, and an AssertionError as in needle's reference,
    which asserts on these inputs (so code catching either keeps working)."""


def integers(values, what) -> tuple:
    """`values` (a sequence of integers, numpy's included) as a tuple of ints: a float, an array
    or a bare number is an NDArrayError naming `what`, never truncated or a TypeError from inside."""
    try:
        return tuple(operator.index(v) for v in values)
    except TypeError:
        raise NDArrayError(f"{what} takes a tuple of integers, not {values!r}") from None


def compact_strides(shape) -> tuple:
    """Row-major strides of a contiguous array of `shape`."""
    strides, stride = [], 1
    for extent in reversed(shape):
        strides.append(stride)
        stride *= extent
    return tuple(reversed(strides))


def reshaped(shape, new_shape) -> tuple:
    """`new_shape` with one -1 resolved, checked to hold as many elements as `shape`."""
    new_shape = integers(new_shape, "reshape")
    size = math.prod(shape)
    if new_shape.count(-1) > 1:
        raise NDArrayError(f"reshape {shape} -> {new_shape}: at most one dimension may be -1")
    if -1 in new_shape:
        known = math.prod(n for n in new_shape if n != -1)
        if known == 0 or size % known:
            raise NDArrayError(f"cannot reshape an array of size {size} into shape {new_shape}")
        new_shape = tuple(size // known if n == -1 else n for n in new_shape)
    if any(n < 0 for n in new_shape) or math.prod(new_shape) != size:
        raise NDArrayError(f"cannot reshape an array of size {size} into shape {new_shape}")
    return new_shape


def permuted(shape, strides, axes) -> tuple:
    """(shape, strides) with the dimensions in the order `axes` names them."""
    axes = integers(axes, "permute")
    if sorted(axes) != list(range(len(shape))):
        raise NDArrayError(f"permute of a {len(shape)}-d array by {axes}: the axes must be a "
                           f"permutation of 0..{len(shape) - 1}")
    return tuple(shape[a] for a in axes), tuple(strides[a] for a in axes)


def broadcast(shape, strides, new_shape) -> tuple:
    """(shape, strides) of `shape` broadcast to `new_shape`: stride 0 where a size-1 dimension
    repeats; leading dimensions may be added, as numpy does."""
    new_shape = integers(new_shape, "broadcast_to")
    lead = len(new_shape) - len(shape)
    if lead < 0 or min(new_shape, default=0) < 0:
        raise NDArrayError(f"cannot broadcast shape {shape} to {new_shape}: it has "
                           + ("a negative dimension" if lead >= 0 else "fewer dimensions"))
    result = [0] * lead
    for axis, (old, new, stride) in enumerate(zip(shape, new_shape[lead:], strides)):
        if old != new and old != 1:
            raise NDArrayError(f"cannot broadcast shape {shape} to {new_shape}: dimension {axis} "
                               f"has size {old}, neither 1 nor {new}")
        result.append(stride if old == new else 0)
    return new_shape, tuple(result)


def normalised_slice(index, extent, axis) -> slice:
    """An index of one dimension as slice(start, stop, step) with 0 <= start < stop <= extent and
    step > 0, as needle's process_slice gives (an integer keeps its dimension, of size 1)."""
    if isinstance(index, slice):
        if index.step is not None and index.step <= 0:
            raise NDArrayError(f"slice {_text(index)} of axis {axis}: the step must be positive "
                               "(use flip() to reverse an axis)")
        try:
            start, stop, step = index.indices(extent)
        except TypeError:
            raise NDArrayError(f"slice {_text(index)} of axis {axis}: its bounds and step must be "
                               "integers or None") from None
        if stop <= start:
            raise NDArrayError(f"slice {_text(index)} of axis {axis} (size {extent}) selects no "
                               "element: start must be less than stop")
        return slice(start, stop, step)
    try:
        position = operator.index(index)
    except TypeError:
        raise NDArrayError(f"index {index!r} of axis {axis}: NDArray indexes with integers and "
                           f"slices only, not {type(index).__name__}") from None
    if not -extent <= position < extent:
        raise IndexError(f"index {position} is out of bounds for axis {axis} with size {extent}")
    position %= extent
    return slice(position, position + 1, 1)


def sliced(shape, strides, offset, slices) -> tuple:
    """(shape, strides, offset) of the view that normalised `slices` select."""
    new_offset = offset + sum(s.start * stride for s, stride in zip(slices, strides))
    new_shape = tuple((s.stop - s.start + s.step - 1) // s.step for s in slices)
    new_strides = tuple(stride * s.step for s, stride in zip(slices, strides))
    return new_shape, new_strides, new_offset


def flipped(shape, strides, offset, axes) -> tuple:
    """(strides, offset) reading `axes` backwards: a negative stride from the axis' last element."""
    axes = _axes(axes, len(shape), "flip")
    new_strides = tuple(-s if a in axes else s for a, s in enumerate(strides))
    new_offset = offset + sum((shape[a] - 1) * strides[a] for a in axes if shape[a] > 0)
    return new_strides, new_offset


def _axes(axes, ndim, what) -> set:
    axes = integers((axes,) if hasattr(axes, "__index__") else axes, what)
    for axis in axes:
        if not -ndim <= axis < ndim:
            raise NDArrayError(f"{what} over axis {axis} of a {ndim}-d array")
    if len({a % ndim for a in axes}) != len(axes):
        raise NDArrayError(f"{what} over axes {axes} of a {ndim}-d array: an axis is repeated")
    return {a % ndim for a in axes}


def reduction_axis(axis, ndim) -> int:
    """The one axis a reduction runs over (needle reduces over a single axis, or all of them)."""
    if isinstance(axis, (tuple, list)):
        if not axis:
            raise NDArrayError("Empty axis in reduce")
        if len(axis) != 1:
            raise NDArrayError(f"reduction over axes {tuple(axis)}: NDArray reduces over a single axis")
        axis = axis[0]
    (axis,) = integers((axis,), "reduction over an axis")
    if not -ndim <= axis < ndim:
        raise NDArrayError(f"reduction over axis {axis} of a {ndim}-d array")
    return axis % ndim


def padding(shape, axes) -> tuple:
    """needle's pad widths: one (before, after) pair of non-negative ints per axis."""
    if not isinstance(axes, (tuple, list)):
        raise NDArrayError(f"pad takes one (before, after) pair per axis, not {axes!r}")
    axes = tuple(integers(pair, "pad") for pair in axes)
    if len(axes) != len(shape) or any(len(pair) != 2 or min(pair) < 0 for pair in axes):
        raise NDArrayError(f"pad of a {len(shape)}-d array by {axes}: give one (before, after) pair "
                           "of non-negative widths per axis")
    return axes


def _text(index: slice) -> str:
    return ":".join("" if v is None else str(v) for v in (index.start, index.stop, index.step))
