"""Elementwise ops: operands of one shape (the frontend inserts explicit broadcast_to), one
dtype; each with its numpy reference, gradient rule and scalar expression."""
import numpy as np

from .. import scalar as S
from ..graph import check
from ..registry import Attr, OpDef, register
from ..types import TensorType, is_float


def _same_types(types, float_only):
    first = types[0]
    for t in types[1:]:
        check(t.shape == first.shape, "operand shapes differ (broadcast explicitly with broadcast_to)")
        check(t.dtype == first.dtype, "operand dtypes differ (cast explicitly)")
    if float_only:
        check(is_float(first.dtype), f"needs a floating-point operand, got {first.dtype}")
    return first


def elementwise(name, arity, reference, scalar, grad=None, float_only=False, attrs=None,
                result_dtype=None, doc="", numeric=False, **extra):
    """Register an elementwise op whose result has its operands' type (or `result_dtype`);
    `numeric`: refused on bools, which numpy refuses too (and bool logic would answer otherwise)."""
    def infer(types, **_):
        t = _same_types(types, float_only)
        check(not numeric or t.dtype != "bool", "has no bool form (numpy refuses it too): cast the operand first")
        return TensorType(t.shape, result_dtype or t.dtype)
    return register(OpDef(name, arity, infer, reference, grad, scalar, "elementwise",
                          attrs or {}, doc, float_only, **extra))


def zeros_like(b, v):
    return b.constant_like(v, 0.0)


# ---- binary -----------------------------------------------------------------------------
elementwise("add", 2, np.add, lambda x, y: x + y, lambda b, n, g: [g, g],
            scalar_variant="add_scalar", commutative=True, identity=0.0)
elementwise("multiply", 2, np.multiply, lambda x, y: x * y,
            lambda b, n, g: [b.multiply(g, n.operands[1]), b.multiply(g, n.operands[0])],
            scalar_variant="mul_scalar", commutative=True, identity=1.0)
def _divide_by_repeated(b, n):
    """a / broadcast(s) as a * broadcast(1 / s) where a broadcast (through reshapes) repeats a
    computed divisor s: one division per element of s (per row of a softmax, per feature of a
    BatchNorm), fused where s is computed, not one per element of a. An input divisor keeps its
    division: its reciprocal would be recomputed at every element."""
    views, divisor = [], n.operands[1]
    while divisor.node is not None and divisor.node.op in ("reshape", "broadcast_to"):
        views.append(divisor.node)
        divisor = divisor.node.operands[0]
    if divisor.node is None or divisor.type.size >= n.result.type.size:
        return None
    reciprocal = b.divide(b.constant_like(divisor, 1.0), divisor)
    for view in reversed(views):
        reciprocal = b.emit(view.op, reciprocal, **view.attrs)
    return b.multiply(n.operands[0], reciprocal)


elementwise("divide", 2, np.divide, lambda x, y: x / y, float_only=True, scalar_variant="divide_scalar",
            identity=1.0, decompose=_divide_by_repeated,
            grad=lambda b, n, g: [
                b.divide(g, n.operands[1]),
                b.negate(b.divide(b.multiply(g, n.result), n.operands[1]))])
elementwise("power", 2, np.power, lambda x, y: x ** y, float_only=True, scalar_variant="power_scalar",
            identity=1.0,
            grad=lambda b, n, g: [
                b.multiply(g, b.multiply(n.operands[1], b.power(
                    n.operands[0], b.add_scalar(n.operands[1], scalar=-1.0)))),
                b.multiply(g, b.multiply(n.result, b.log(n.operands[0])))],
            doc="x ** y; the gradient wrt y needs x > 0")
elementwise("maximum", 2, np.maximum, S.maximum,
            lambda b, n, g: [
                b.where(b.greater_equal(*n.operands), g, zeros_like(b, g)),
                b.where(b.greater_equal(*n.operands), zeros_like(b, g), g)],
            doc="ties send the gradient to the first operand", commutative=True)

for _name, _ref, _expr in [("equal", np.equal, S.eq), ("not_equal", np.not_equal, S.ne),
                           ("less", np.less, lambda x, y: x < y),
                           ("less_equal", np.less_equal, lambda x, y: x <= y),
                           ("greater", np.greater, lambda x, y: x > y),
                           ("greater_equal", np.greater_equal, lambda x, y: x >= y)]:
    elementwise(_name, 2, _ref, _expr, result_dtype="bool")


def _where_type(types):
    cond, a, b = types
    check(cond.dtype == "bool", f"condition must be bool, got {cond.dtype}")
    check(cond.shape == a.shape == b.shape, "operand shapes differ (broadcast explicitly)")
    check(a.dtype == b.dtype, "the two branches' dtypes differ")
    return a


register(OpDef("where", 3, lambda types: _where_type(types), np.where, kind="elementwise",
               scalar=S.select,
               grad=lambda b, n, g: [None, b.where(n.operands[0], g, zeros_like(b, g)),
                                     b.where(n.operands[0], zeros_like(b, g), g)],
               doc="select elementwise: cond ? a : b"))

# ---- with a scalar attribute ------------------------------------------------------------
_SCALAR = {"scalar": Attr("float")}


def _scalar_ref(fn):
    return lambda x, scalar: fn(x, np.asarray(scalar, dtype=x.dtype)).astype(x.dtype)


elementwise("add_scalar", 1, _scalar_ref(np.add), lambda x, scalar: x + scalar,
            lambda b, n, g: [g], attrs=_SCALAR, identity=0.0)
elementwise("mul_scalar", 1, _scalar_ref(np.multiply), lambda x, scalar: x * scalar,
            lambda b, n, g: [b.mul_scalar(g, scalar=n.attrs["scalar"])], attrs=_SCALAR, identity=1.0)
elementwise("divide_scalar", 1, _scalar_ref(np.divide), lambda x, scalar: x / scalar,
            lambda b, n, g: [b.divide_scalar(g, scalar=n.attrs["scalar"])], attrs=_SCALAR,
            float_only=True, identity=1.0)
def _power_expr(x, scalar):
    """x ** scalar; square roots as sqrt, which vectorises where a general pow does not."""
    if scalar == 0.5:
        return S.sqrt(x)
    if scalar == -0.5:
        return 1 / S.sqrt(x)
    return x ** scalar


elementwise("power_scalar", 1, _scalar_ref(np.power), _power_expr,
            lambda b, n, g: [b.multiply(g, b.mul_scalar(
                b.power_scalar(n.operands[0], scalar=n.attrs["scalar"] - 1), scalar=n.attrs["scalar"]))],
            attrs=_SCALAR, float_only=True, identity=1.0)

# ---- unary ------------------------------------------------------------------------------
elementwise("negate", 1, np.negative, lambda x: -x, lambda b, n, g: [b.negate(g)], involution=True,
            numeric=True)
elementwise("exp", 1, np.exp, S.exp, lambda b, n, g: [b.multiply(g, n.result)], float_only=True)
elementwise("log", 1, np.log, S.log, lambda b, n, g: [b.divide(g, n.operands[0])], float_only=True)
elementwise("sqrt", 1, np.sqrt, S.sqrt, float_only=True,
            grad=lambda b, n, g: [b.divide(b.mul_scalar(g, scalar=0.5), n.result)])
elementwise("sin", 1, np.sin, S.sin, lambda b, n, g: [b.multiply(g, b.cos(n.operands[0]))],
            float_only=True)
elementwise("cos", 1, np.cos, S.cos,
            lambda b, n, g: [b.negate(b.multiply(g, b.sin(n.operands[0])))], float_only=True)
elementwise("tanh", 1, np.tanh, S.tanh, float_only=True,
            grad=lambda b, n, g: [b.multiply(g, b.add_scalar(
                b.negate(b.multiply(n.result, n.result)), scalar=1.0))])
elementwise("sigmoid", 1, lambda x: (1 / (1 + np.exp(-x))).astype(x.dtype),
            lambda x: 1 / (1 + S.exp(-x)), float_only=True,
            grad=lambda b, n, g: [b.multiply(g, b.multiply(n.result, b.add_scalar(
                b.negate(n.result), scalar=1.0)))])
elementwise("relu", 1, lambda x: np.maximum(x, 0).astype(x.dtype), lambda x: S.maximum(x, 0),
            lambda b, n, g: [b.where(b.greater(n.operands[0], zeros_like(b, g)), g, zeros_like(b, g))],
            doc="max(x, 0); the gradient at 0 is 0")


def _cast_infer(types, dtype):
    return TensorType(types[0].shape, dtype)


def _cast_grad(b, n, g):
    source = n.operands[0].dtype
    return [b.cast(g, dtype=source) if is_float(source) and is_float(n.result.dtype) else None]


register(OpDef("cast", 1, _cast_infer, lambda x, dtype: x.astype(TensorType((), dtype).np_dtype),
               _cast_grad, lambda x, dtype: S.cast(x, dtype), attrs={"dtype": Attr("dtype")},
               doc="convert to another dtype (numpy's astype)"))


def _full_infer(types, shape, value, dtype):
    return TensorType(shape, dtype)


register(OpDef("full", 0, _full_infer,
               lambda shape, value, dtype: np.full(shape, value, TensorType((), dtype).np_dtype),
               kind="creation", scalar=lambda shape, value, dtype: S.cast(value, dtype),
               attrs={"shape": Attr("ints"), "value": Attr("float"), "dtype": Attr("dtype", "f32")},
               doc="a tensor of `shape` filled with `value`"))

elementwise("stop_gradient", 1, lambda x: x.copy(), lambda x: x, lambda b, n, g: [None],
            doc="identity whose gradient is zero (a traced Tensor.detach())")
