"""Scalar expressions in LLVM IR: the ndlc.ir.scalar primitives as instructions, for a kernel
emitter that supplies the leaves (`_leaf_value`: a load, an accumulator; `_invariant_leaf`: whether
it is the same at every point of the loops), the builder `b`, the inferred dtypes `types` and the
`kernel` (for error messages), and the lane helpers of codegen/llvm_lanes.py (`lanes`, `_constant`,
`_invariant`, `_splat`): inside a vector loop the same instructions take vectors.

Each primitive is spelled as the primitive table says (ir/scalar.py, Primitive.llvm), after the
backend-independent rules (ir/rules.py: bool arithmetic, integer powers by repeated squaring).
No fast-math flags: elementwise arithmetic keeps IEEE semantics; exp, log, tanh, sin, cos are
mathlib's vectorisable polynomials. Booleans live in memory as one byte and in registers as i1.
"""
from llvmlite import ir

from ..errors import UnsupportedError
from ..ir.kernel_leaves import operand_dtype
from ..ir.rules import expanded_power, power_by_squaring, primitive_for
from ..ir.scalar import PRIMITIVES, postorder
from ..ir.types import is_float
from . import mathlib

I1, I8, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(64)
TYPES = {"f32": ir.FloatType(), "f64": ir.DoubleType(), "i32": ir.IntType(32), "i64": I64,
         "u8": I8, "bool": I1}
MEMORY = {**TYPES, "bool": I8}  # how each dtype is stored
_UNSIGNED = ("u8", "bool")  # compared and maxed as unsigned integers


class ScalarLowering:
    """Mixin: `_emit(expr, memo)` builds an expression's instructions at the builder's position."""
    _walks = None  # id(expression) -> (each node and its structure but for its operands' numbers) in postorder

    def _emit(self, expr, memo, want=None):
        """The value of `expr`: its operations in postorder (iteratively: a chain thousands of ops
        deep is fine), each distinct computation once per `memo` (a Values); a constant takes the
        dtype its user computes in (`want`)."""
        for e, shape in self._walk(expr):
            if id(e) in memo.number:
                continue
            key = shape if e.prim == "arg" else (shape, tuple(
                ("const", repr(a.payload)) if a.prim == "const" else memo.number[id(a)] for a in e.args))
            if e.prim == "arg":  # read at its first use (_operand), as the old emitter did
                memo.number_of(e, key, not self._invariant_leaf(e.payload))
                continue
            varying = any(memo.varies(a) for a in e.args)
            if memo.number_of(e, key, varying):
                memo.set(e, self._primitive(e, memo, varying) if varying else self._invariant(
                    lambda e=e: self._primitive(e, memo, False)))
        return self._operand(expr, memo, want)

    def _walk(self, expr) -> list:
        """(node, what it computes but for its operands' numbers) for each node of `expr` but its
        constants, in postorder: made once per expression of the kernel (a store's expression is
        emitted in every copy of its loop: split at the vector width, per vector piece, per row
        of a tile)."""
        if self._walks is None:
            self._walks = {}
        walk = self._walks.get(id(expr))
        if walk is None:
            types = self.types
            walk = self._walks[id(expr)] = [
                (e, ("arg", e.payload) if e.prim == "arg" else (
                    e.prim, repr(e.payload), operand_dtype(e, types), types.get(id(e)),
                    tuple(types.get(id(a)) for a in e.args)))
                for e in postorder(expr) if e.prim != "const"]
        return walk

    def _operand(self, expr, memo, want):
        """An already emitted operation, a leaf (read here at its first use) or a constant."""
        if expr.prim == "const":
            return self._constant(want or "f64", expr.payload)
        value = memo.value(expr)
        if value is None:
            value = self._leaf_value(expr.payload) if memo.varies(expr) else self._invariant(
                lambda: self._leaf_value(expr.payload))
            memo.set(expr, value)
        if self.lanes and not isinstance(value.type, ir.VectorType):  # an invariant, used by a lane's value
            return self._splat(value)
        return value

    def _primitive(self, expr, memo, varying=True):
        """`expr`'s instructions, its operands emitted; `varying`: whether its value changes within
        the kernel's loops (else a mathlib function is called, not inlined: LLVM hoists the call)."""
        b, prim = self.b, expr.prim
        dtype = operand_dtype(expr, self.types)
        if prim == "cast":
            source = self.types[id(expr.args[0])] or "f64"
            return _cast(b, self._operand(expr.args[0], memo, source), source, expr.payload)
        n = expanded_power(expr.args[1].payload, dtype) if prim == "pow" and expr.args[1].prim == "const" else None
        if n is not None:
            one = self._constant(dtype, 1.0)
            return power_by_squaring(self._operand(expr.args[0], memo, dtype), n, b.fmul, one, b.fdiv)
        wants = ["bool", dtype, dtype] if prim == "select" else [dtype] * len(expr.args)
        return self._apply(prim, dtype, [self._operand(a, memo, want) for a, want in zip(expr.args, wants)], varying)

    def _apply(self, prim, dtype, args, varying=True):
        """`prim` on values computing in `dtype`, as the primitive table spells it for LLVM (a
        mathlib function inlined where `varying`, so its loop vectorises)."""
        b, prim = self.b, primitive_for(prim, dtype)
        spelling = PRIMITIVES[prim].llvm[0 if is_float(dtype) else 1]
        if not spelling:
            raise UnsupportedError(f"kernel {self.kernel.name}: primitive {prim} on {dtype} values")
        name, _, predicate = spelling.partition(" ")
        if dtype in _UNSIGNED:
            name = name.replace("_signed", "_unsigned").replace("llvm.s", "llvm.u")
        if name.startswith("mathlib."):
            return mathlib.call(b, name[len("mathlib."):], args, inline=varying, fused=self.fma,
                                scalef=self.avx512)
        if name.startswith("llvm."):
            return mathlib.intrinsic(b, name, *args, *([ir.Constant(I1, 0)] if name == "llvm.abs" else []))
        return getattr(b, name)(predicate, *args) if predicate else getattr(b, name)(*args)


class Values:
    """The values emitted at one point of a kernel, each distinct computation once: structurally
    equal subexpressions, which fused epilogues repeat (an Adam update spells its moment estimate
    in every store that reads it), share one value, so the IR holds one copy (LLVM's CSE would
    merge the copies, after parsing and optimising each)."""

    def __init__(self):
        self.number = {}  # id(node) -> the number of its computation
        self._numbers = {}  # structural key -> number
        self._values = []  # number -> value (None: a leaf not read yet)
        self._varying = set()  # the numbers of the computations whose value changes within the loops

    def number_of(self, node, key, varying) -> bool:
        """Give `node` the number of computation `key`, a new one (whose value changes within the
        loops where `varying`) if none computed it before; whether it is new."""
        new = key not in self._numbers
        if new:
            self._numbers[key] = len(self._values)
            self._values.append(None)
            if varying:
                self._varying.add(self._numbers[key])
        self.number[id(node)] = self._numbers[key]
        return new

    def varies(self, node) -> bool:
        """Whether (numbered) `node`'s value changes within the loops (a constant's does not)."""
        return node.prim != "const" and self.number[id(node)] in self._varying

    def value(self, node):
        """The value of (numbered) `node`'s computation, or None where it is not made yet."""
        return self._values[self.number[id(node)]]

    def set(self, node, value):
        self._values[self.number[id(node)]] = value


def constant(dtype, value, lanes=0):
    """`value` as a constant of `dtype`, or (`lanes`) a vector of it in every lane."""
    value = float(value) if is_float(dtype) else int(bool(value)) if dtype == "bool" else int(value)
    return mathlib.const(ir.VectorType(TYPES[dtype], lanes) if lanes else TYPES[dtype], value)


def _cast(b, x, source, target):
    """numpy's astype between IR dtypes (of scalars, or of vectors lane by lane)."""
    to = mathlib.shaped(TYPES[target], x.type)
    if source == target:
        return x
    if target == "bool":
        return b.fcmp_unordered("!=", x, mathlib.const(x.type, 0.0)) if is_float(source) \
            else b.icmp_unsigned("!=", x, mathlib.const(x.type, 0))
    if is_float(source) and is_float(target):
        return b.fpext(x, to) if target == "f64" else b.fptrunc(x, to)
    if is_float(source):
        return b.fptoui(x, to) if target == "u8" else b.fptosi(x, to)
    unsigned = source in ("u8", "bool")
    if is_float(target):
        return b.uitofp(x, to) if unsigned else b.sitofp(x, to)
    if mathlib.element(to).width < mathlib.element(x.type).width:
        return b.trunc(x, to)
    return b.zext(x, to) if unsigned else b.sext(x, to)
