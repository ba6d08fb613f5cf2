"""Scalar expressions in LLVM IR: the ndlc.ir.scalar primitives as instructions, for a kernel
emitter that supplies the leaves (`_leaf_value`: a load, an accumulator), the builder `b`, the
inferred dtypes `types` and the `kernel` (for error messages).

No fast-math flags: elementwise arithmetic keeps IEEE semantics; exp, log, tanh, sin, cos are
mathlib's vectorisable polynomials; pow by a small integer constant is repeated squaring.
Booleans live in memory as one byte and in registers as i1.
"""
from llvmlite import ir

from ..errors import UnsupportedError
from ..ir.kernel import operand_dtype
from ..ir.scalar import COMPARISONS, postorder
from ..ir.types import is_float
from . import mathlib

I1, I8, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(64)
TYPES = {"f32": ir.FloatType(), "f64": ir.DoubleType(), "i32": ir.IntType(32), "i64": I64,
         "u8": I8, "bool": I1}
MEMORY = {**TYPES, "bool": I8}  # how each dtype is stored
_FLOAT_OPS = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv"}
_INT_OPS = {"add": "add", "sub": "sub", "mul": "mul"}
_BOOL_OPS = {"add": "or_", "sub": "xor", "mul": "and_", "max": "or_", "min": "and_"}
_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_MATH = {"exp": mathlib.exp, "log": mathlib.log, "tanh": mathlib.tanh, "sin": mathlib.sin,
         "cos": mathlib.cos}


class ScalarLowering:
    """Mixin: `_emit(expr, memo)` builds an expression's instructions at the builder's position."""

    def _emit(self, expr, memo, want=None):
        """The value of `expr`: its operations in postorder (iteratively: a chain thousands of ops
        deep is fine), each once per `memo`; a constant takes the dtype its user computes in (`want`)."""
        for e in postorder(expr):
            if e.args and id(e) not in memo:
                memo[id(e)] = self._primitive(e, memo)
        return self._operand(expr, memo, want)

    def _operand(self, expr, memo, want):
        """An already emitted operation, a leaf (loaded once per memo) or a constant."""
        if expr.prim == "const":
            return _constant(want or "f64", expr.payload)
        if expr.prim == "arg" and id(expr) not in memo:
            memo[id(expr)] = self._leaf_value(expr.payload)
        return memo[id(expr)]

    def _primitive(self, expr, memo):
        b, prim = self.b, expr.prim
        dtype = operand_dtype(expr, self.types)
        if prim == "cast":
            source = self.types[id(expr.args[0])] or "f64"
            return _cast(b, self._operand(expr.args[0], memo, source), source, expr.payload)
        if prim == "select":
            cond = self._operand(expr.args[0], memo, "bool")
            return b.select(cond, *(self._operand(a, memo, dtype) for a in expr.args[1:]))
        if prim == "pow" and expr.args[1].prim == "const" and _small_integer(expr.args[1].payload):
            return mathlib.power_by_squaring(b, self._operand(expr.args[0], memo, dtype),
                                             int(expr.args[1].payload))
        args = [self._operand(a, memo, dtype) for a in expr.args]
        return self._apply(prim, dtype, args)

    def _apply(self, prim, dtype, args):
        b = self.b
        if prim in COMPARISONS or prim in _FLOAT_OPS or prim in ("max", "min", "xor", "shr"):
            return self._binary(prim, dtype, *args)
        (x,) = args[:1]
        if not is_float(dtype) and prim in ("neg", "abs") and dtype != "bool":
            if prim == "neg":
                return b.sub(ir.Constant(x.type, 0), x)
            return mathlib.intrinsic(b, "llvm.abs", x, ir.Constant(I1, 0))
        if not is_float(dtype):
            raise UnsupportedError(f"kernel {self.kernel.name}: primitive {prim} on {dtype} values")
        if prim == "neg":
            return b.fneg(x)
        if prim in ("sqrt", "abs"):
            name = "llvm.sqrt" if prim == "sqrt" else "llvm.fabs"
            return mathlib.intrinsic(b, name, x)
        if prim == "pow":
            return mathlib.pow(b, *args)
        return _MATH[prim](b, x)

    def _binary(self, prim, dtype, x, y):
        b = self.b
        if prim in COMPARISONS:
            if is_float(dtype):
                op = b.fcmp_unordered if prim == "ne" else b.fcmp_ordered
                return op(_CMP[prim], x, y)
            signed = dtype in ("i32", "i64")
            return (b.icmp_signed if signed else b.icmp_unsigned)(_CMP[prim], x, y)
        if dtype == "bool" and prim in _BOOL_OPS:
            return getattr(b, _BOOL_OPS[prim])(x, y)
        if is_float(dtype):
            if prim in ("max", "min"):
                name = "llvm.maximum" if prim == "max" else "llvm.minimum"
                return mathlib.intrinsic(b, name, x, y)
            return getattr(b, _FLOAT_OPS[prim])(x, y)
        if prim in ("max", "min"):
            name = {"max": "smax", "min": "smin"}[prim] if dtype != "u8" else {"max": "umax", "min": "umin"}[prim]
            return mathlib.intrinsic(b, f"llvm.{name}", x, y)
        if prim in _INT_OPS:
            return getattr(b, _INT_OPS[prim])(x, y)
        if prim in ("xor", "shr"):
            return b.xor(x, y) if prim == "xor" else b.lshr(x, y)
        raise UnsupportedError(f"kernel {self.kernel.name}: primitive {prim} on {dtype} values")


def _small_integer(value):
    return float(value).is_integer() and abs(value) <= 64


def _constant(dtype, value):
    if is_float(dtype):
        return ir.Constant(TYPES[dtype], float(value))
    return ir.Constant(TYPES[dtype], int(bool(value)) if dtype == "bool" else int(value))


def _cast(b, x, source, target):
    """numpy's astype between IR dtypes."""
    to = TYPES[target]
    if source == target:
        return x
    if target == "bool":
        return b.fcmp_unordered("!=", x, ir.Constant(x.type, 0.0)) if is_float(source) \
            else b.icmp_unsigned("!=", x, ir.Constant(x.type, 0))
    if is_float(source) and is_float(target):
        return b.fpext(x, to) if target == "f64" else b.fptrunc(x, to)
    if is_float(source):
        return b.fptoui(x, to) if target == "u8" else b.fptosi(x, to)
    unsigned = source in ("u8", "bool")
    if is_float(target):
        return b.uitofp(x, to) if unsigned else b.sitofp(x, to)
    if to.width < x.type.width:
        return b.trunc(x, to)
    return b.zext(x, to) if unsigned else b.sext(x, to)
