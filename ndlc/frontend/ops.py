"""needle's functional ops (`ndl.ops.add`, `ndl.ops.summation`, ...) over Tensors.

These add what the IR leaves to frontends: numpy broadcasting (explicit broadcast_to nodes),
dtype promotion (explicit casts), Python scalars, and needle's signatures and defaults. Every
registry op is reachable here; those without a needle signature take attributes as keywords.
"""
import builtins
import math

import numpy as np

from ..errors import AttrError, ShapeError
from ..ir.registry import all_ops, get_op, integer_digits
from ..ir.types import dtype_name, is_float, numpy_dtype
from .context import active_context
from .scan import scan  # noqa: F401  (ndl.scan: the helper, not the bare op)
from .tensor import Tensor, TensorTuple, apply, data_of, user_location

_NUMBER = (int, float, bool, np.integer, np.floating, np.bool_)


def as_tensor(x, dtype=None) -> Tensor:
    """`x` if it is a Tensor, else a constant Tensor of it (no gradient)."""
    if isinstance(x, Tensor):
        return x
    if dtype is not None:
        return Tensor.make_const(np.asarray(x, dtype=numpy_dtype(dtype)))
    return Tensor(x, requires_grad=False)


def cast(a, dtype) -> Tensor:
    a = as_tensor(a)
    dtype = dtype_name(dtype)
    return a if a._value.dtype == dtype else apply("cast", a, dtype=dtype)


def _to_float(a: Tensor) -> Tensor:
    return a if is_float(a._value.dtype) else cast(a, "f32")


def _promote(op, tensors):
    """Cast `tensors` to one dtype: the widest float if any is float (as PyTorch: int64 with
    float32 is float32), else numpy's integer promotion; float32 for float-only ops."""
    dtypes = [t._value.type.np_dtype for t in tensors]
    floats = [d for d in dtypes if d.kind == "f"]
    target = dtype_name(np.result_type(*(floats or dtypes)))
    if get_op(op).float_only and not is_float(target):
        target = "f32"
    return [cast(t, target) for t in tensors]


def _broadcast(op, tensors):
    """Broadcast `tensors` to one shape with explicit broadcast_to nodes (numpy's rules)."""
    shapes = [t.shape for t in tensors]
    if all(s == shapes[0] for s in shapes):
        return tensors
    try:
        shape = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        types = ", ".join(str(t._value.type) for t in tensors)
        raise ShapeError(f"{op}({types}): shapes {' and '.join(map(str, shapes))} do not broadcast "
                         f"(at {user_location()})") from None
    return [t if t.shape == shape else broadcast_to(t, shape) for t in tensors]


def _scalar_dtype(tensor: Tensor, scalar):
    """Integer tensors meeting a fractional, infinite or NaN scalar compute in float32 (as PyTorch does)."""
    if not is_float(tensor._value.dtype) and not float(scalar).is_integer():
        return cast(tensor, "f32")
    return tensor


def elementwise(op, *args) -> Tensor:
    """An elementwise op on Tensors and Python numbers, with broadcasting and promotion."""
    opdef = get_op(op)
    numbers = [isinstance(a, _NUMBER) for a in args]
    if len(args) == 2 and opdef.scalar_variant and numbers[1] != numbers[0]:
        if numbers[1] or opdef.commutative:
            tensor, scalar = (args[0], args[1]) if numbers[1] else (args[1], args[0])
            tensor = as_tensor(tensor)
            scalar = _scalar_number(opdef.scalar_variant, scalar, tensor.ndim)
            tensor = _to_float(tensor) if opdef.float_only else _scalar_dtype(tensor, scalar)
            return apply(opdef.scalar_variant, tensor, scalar=scalar)
    values = args[1:] if op == "where" else args  # where's numbers take its branches' dtype
    like = next((a._value.dtype for a in values if isinstance(a, Tensor)), "f32")
    tensors = [full((), a, like) if n else as_tensor(a) for a, n in zip(args, numbers)]
    if op == "where":
        tensors = [cast(tensors[0], "bool")] + _promote(op, tensors[1:])
    else:
        tensors = _promote(op, tensors)
    return apply(op, *_broadcast(op, tensors))


def subtract(a, b):
    """needle's a - b: a + (-b), of the operands' common dtype (f32 - bool negates a float)."""
    if isinstance(b, _NUMBER):
        return elementwise("add", a, -b)
    if isinstance(a, _NUMBER):
        return elementwise("add", elementwise("negate", b), a)
    a, b = _promote("add", [as_tensor(a), as_tensor(b)])
    return elementwise("add", a, elementwise("negate", b))


def _scalar_number(op, scalar, rank):
    """needle's `scalar` argument as a float: a Tensor or text is refused here, as the registry
    refuses it, before float() could read a Tensor eagerly but not while tracing. A numpy array
    of one number is that number where broadcasting it leaves the rank-`rank` operand's shape as
    it is (needle's numpy backend divides by hw1's `scalar=np.random.randn(1)`)."""
    if isinstance(scalar, np.ndarray):
        if scalar.size == 1 and scalar.ndim <= rank and scalar.dtype.kind in "biuf":
            return float(scalar.reshape(())[()])
        raise AttrError(f"{op}: the scalar must be a number, not a {scalar.dtype} array of shape "
                        f"{scalar.shape} for an operand of rank {rank} (at {user_location()})")
    if isinstance(scalar, _NUMBER):
        try:
            return float(scalar)
        except OverflowError:  # as numpy refuses it: an integer past 1.8e308 is no float
            raise AttrError(f"{op}: the scalar, an integer of {integer_digits(scalar)}, is too large "
                            f"for a float (at {user_location()})") from None
    raise AttrError(f"{op}: the scalar must be a number, not {type(scalar).__name__} (at {user_location()})")


def _scalar_op(op):
    def fn(a, scalar):
        a = as_tensor(a)
        scalar = _scalar_number(op, scalar, a.ndim)
        a = _to_float(a) if get_op(op).float_only else _scalar_dtype(a, scalar)
        return apply(op, a, scalar=scalar)
    fn.__name__ = op
    fn.__doc__ = get_op(op).doc or f"needle's {op}(a, scalar)"
    return fn


def _elementwise_op(op):
    def fn(*args):
        return elementwise(op, *args)
    fn.__name__ = op
    fn.__doc__ = get_op(op).doc or f"elementwise {op}, with numpy broadcasting"
    return fn


def _normalize_axes(axes, ndim):
    """`axes` (None: all; one axis or several) as sorted non-negative axes; an axis out of range or
    not an integer is kept as given, for the op's check to name it as the user wrote it."""
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, (int, np.integer)) or not isinstance(axes, (tuple, list, np.ndarray)):
        axes = (axes,)
    axes = tuple(_normalize_axis(a, ndim) for a in axes)
    return tuple(sorted(axes)) if all(isinstance(a, (int, np.integer)) and 0 <= a < ndim for a in axes) else axes


def _normalize_axis(axis, ndim):
    """A negative `axis` counted from the end; one out of range, or not an integer, as given."""
    integer = isinstance(axis, (int, np.integer)) and not isinstance(axis, (bool, np.bool_))
    return axis + ndim if integer and -ndim <= axis < 0 else axis


# ---- shapes -----------------------------------------------------------------------------
def reshape(a, shape):
    a = as_tensor(a)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if builtins.sum(1 for d in shape if d == -1) == 1:
        known = math.prod(d for d in shape if d != -1)
        if known and a.size % known == 0:
            shape = tuple(a.size // known if d == -1 else d for d in shape)
    return a if a.shape == shape else apply("reshape", a, shape=shape)


def broadcast_to(a, shape):
    a = as_tensor(a)
    shape = tuple(shape)
    return a if a.shape == shape else apply("broadcast_to", a, shape=shape)


def transpose(a, axes=None):
    """needle's transpose: swap two axes, the last two by default."""
    a = as_tensor(a)
    axes = (a.ndim - 2, a.ndim - 1) if axes is None else tuple(_normalize_axis(x, a.ndim) for x in axes)
    return apply("transpose", a, axes=axes)


def permute(a, axes):
    a = as_tensor(a)
    return apply("permute", a, axes=tuple(_normalize_axis(x, a.ndim) for x in axes))


def flip(a, axes):
    a = as_tensor(a)
    return apply("flip", a, axes=_normalize_axes(axes, a.ndim))


def pad(a, axes):
    """Zero padding; `axes` is a ((low, high), ...) pair per axis, as needle's NDArray.pad."""
    return apply("pad", as_tensor(a), widths=tuple(tuple(p) for p in axes))


def dilate(a, axes, dilation):
    a = as_tensor(a)
    return apply("dilate", a, axes=_normalize_axes(axes, a.ndim), dilation=dilation)


def undilate(a, axes, dilation):
    a = as_tensor(a)
    return apply("undilate", a, axes=_normalize_axes(axes, a.ndim), dilation=dilation)


def stack(args, axis=0):
    if not len(args):
        raise ShapeError(f"stack of no tensors: give at least one (at {user_location()})")
    tensors = _promote("stack", [as_tensor(t) for t in args])
    return apply("stack", *tensors, axis=_normalize_axis(axis, tensors[0].ndim + 1))


def split(a, axis=0):
    """needle's split: the pieces along `axis` (which they drop), as a TensorTuple (a tuple)."""
    a = as_tensor(a)
    axis = _normalize_axis(axis, a.ndim)
    if not 0 <= axis < a.ndim:
        raise ShapeError(f"split({a._value.type}): axis {axis} out of range (at {user_location()})")
    return TensorTuple(apply("split", a, axis=axis, index=i) for i in range(a.shape[axis]))


# ---- reductions -------------------------------------------------------------------------
def _reduction(op):
    def fn(a, axes=None):
        a = as_tensor(a)
        if get_op(op).float_only:
            a = _to_float(a)
        return apply(op, a, axes=_normalize_axes(axes, a.ndim))
    fn.__name__ = op
    fn.__doc__ = get_op(op).doc or f"{op} over `axes` (all when None); the axes are removed"
    return fn


summation = _reduction("summation")
max = _reduction("max")
logsumexp = _reduction("logsumexp")


def logsoftmax(a, axis=-1):
    a = _to_float(as_tensor(a))
    return apply("logsoftmax", a, axis=_normalize_axis(axis, a.ndim))


# ---- matmul and convolution -------------------------------------------------------------
def matmul(a, b):
    return apply("matmul", *_promote("matmul", [as_tensor(a), as_tensor(b)]))


def conv(a, b, stride=1, padding=1):
    """needle's conv: NHWC input, (K, K, Cin, Cout) weight."""
    a, b = _promote("conv", [as_tensor(a), as_tensor(b)])
    return apply("conv", a, b, stride=stride, padding=padding)


def _pool(op):
    def fn(a, kernel, stride=None):
        return apply(op, _to_float(as_tensor(a)), kernel=kernel, stride=kernel if stride is None else stride)
    fn.__name__ = op
    fn.__doc__ = get_op(op).doc
    return fn


avg_pool2d = _pool("avg_pool2d")
max_pool2d = _pool("max_pool2d")


def full(shape, value, dtype="float32"):
    return apply("full", shape=tuple(shape), value=value, dtype=dtype)


def arange(size, dtype="int64"):
    """0, 1, ..., size - 1."""
    return apply("arange", size=size, dtype=dtype)


def invalid_index(values, n):
    """The first of `values` (indices into n rows, or labels of n classes) that is not an integer
    in [0, n), and why ("outside [0, n)" or "not an integer"); None if all are. A float
    index is read as the integer it holds (needle's float batches), never truncated."""
    values = np.asarray(values)
    outside = ~((values >= 0) & (values < n))
    fractional = np.zeros(values.shape, bool) if values.dtype.kind in "iub" else ~outside & (values != np.floor(values))
    if outside.any():
        return values[outside].reshape(-1)[0].item(), f"outside [0, {n})"
    if fractional.any():
        return values[fractional].reshape(-1)[0].item(), "not an integer"
    return None


def gather(table, indices):
    """The rows of `table` at `indices`: shape indices.shape + table.shape[1:] (an embedding
    lookup). Float indices (needle's get_batch with dtype='float32') holding integers are cast
    to integers; a fraction is an IndexError, as PyTorch refuses float indices."""
    indices, table = as_tensor(indices), as_tensor(table)
    known = data_of(indices._value)
    if known is not None and is_float(indices._value.dtype) and table.ndim:
        bad = invalid_index(known, table.shape[0])
        if bad is not None and bad[1] == "not an integer":
            raise IndexError(f"gather: index {bad[0]} is not an integer (at {user_location()}); indices "
                             f"must be integers in [0, {table.shape[0]})")
    context = active_context()
    if context is not None and table.ndim:
        context.bound(indices._value, table.shape[0], IndexError,
                      f"gather from {table.shape[0]} rows (at {user_location()})")
    if is_float(indices._value.dtype):
        indices = cast(indices, "i64")
    return apply("gather", table, indices)


def scatter_add(values, indices, rows):
    """A zero table of `rows` rows with each row of `values` added into the row `indices` picks,
    in index order (gather's adjoint); the indices are checked as gather's are."""
    values, indices = as_tensor(values), as_tensor(indices)
    context = active_context()
    if context is not None:
        context.bound(indices._value, rows, IndexError, f"scatter_add into {rows} rows (at {user_location()})")
    return apply("scatter_add", values, indices, rows=rows)


# Every other registry op: elementwise ones with broadcasting and scalars, scalar-attribute ops
# with needle's positional `scalar`, the rest with attributes as keywords.
def _generic(op):
    arity = get_op(op).arity

    def fn(*tensors, **attrs):
        if arity is not None and len(tensors) != arity:  # before as_tensor reads an attribute as data
            raise ShapeError(f"{op} takes {arity} tensor operand(s) and its attributes "
                             f"({', '.join(get_op(op).attrs) or 'none'}) by keyword, got {len(tensors)} "
                             f"positional argument(s) (at {user_location()})")
        return apply(op, *(as_tensor(t) for t in tensors), **attrs)
    fn.__name__ = op
    fn.__doc__ = get_op(op).doc
    return fn


for _name, _opdef in all_ops().items():
    if _name in globals():
        continue
    if _opdef.kind == "elementwise" and set(_opdef.attrs) == {"scalar"}:
        globals()[_name] = _scalar_op(_name)
    elif _opdef.kind == "elementwise" and not _opdef.attrs:
        globals()[_name] = _elementwise_op(_name)
    else:
        globals()[_name] = _generic(_name)

__all__ = sorted(set(all_ops()) | {"subtract", "as_tensor"})


def _reflected(name):
    return lambda self, other: globals()[name](other, self)


def _one_or_many(values):
    """needle accepts reshape(2, 3) and reshape((2, 3)) alike."""
    return values[0] if len(values) == 1 and isinstance(values[0], (tuple, list)) else values


def _bind_tensor_methods():
    """Tensor's operators and op methods are this module's functions (tensor.py, which this module
    imports, defines the class without them); most ops are made by the registry loop above."""
    ops = globals()
    for method, name in {"__add__": "add", "__sub__": "subtract", "__mul__": "multiply", "__truediv__": "divide",
                         "__pow__": "power", "__matmul__": "matmul"}.items():
        setattr(Tensor, method, ops[name])
        setattr(Tensor, method.replace("__", "__r", 1), _reflected(name))
    for method, name in {"__neg__": "negate", "__lt__": "less", "__le__": "less_equal", "__gt__": "greater",
                         "__ge__": "greater_equal", "broadcast_to": "broadcast_to", "exp": "exp", "log": "log",
                         "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "sqrt": "sqrt", "astype": "cast"}.items():
        setattr(Tensor, method, ops[name])
    Tensor.sum = lambda self, axes=None: summation(self, axes)
    Tensor.max = lambda self, axes=None: ops["max"](self, axes)
    Tensor.reshape = lambda self, *shape: reshape(self, _one_or_many(shape))
    Tensor.transpose = lambda self, axes=None: transpose(self, axes)
    Tensor.permute = lambda self, *axes: permute(self, _one_or_many(axes))


_bind_tensor_methods()
