"""Scalar expressions: the per-element computation of an elementwise op, written once in the
registry with Python operators (`lambda x: 1 / (1 + exp(-x))`) and lowered by every backend.

A backend implements the primitives in PRIMITIVES (declared once, with what every layer reads of
them); `evaluate` is the numpy implementation, used to check each op's expression against its
reference.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .types import numpy_dtype

@dataclass(frozen=True)
class Primitive:
    """What every layer needs to know of a scalar primitive: its operand count, its numpy function
    (`evaluate`), its cost relative to an add (fusion's recompute-or-store choice, the schedule's
    work estimate) and its result dtype: the operands' ('operand'), 'bool', or the payload's
    ('payload': cast). 'const' and 'arg' carry a payload instead of operands. Backends lower every
    primitive named here (the ops' compiled tests reach each through the registry), spelled here:
    `llvm`: (for float operands, for integer and bool ones), each an llvmlite IRBuilder method
    (with a comparison's predicate after a space), an LLVM intrinsic 'llvm.*' or a mathlib
    polynomial 'mathlib.*' (codegen/llvm_scalar.py); "": not defined for those operands.
    `cuda`: a C format string of the operands {0}, {1}, {2} and of {f}, the suffix 'f' of
    single-precision math functions where the operands are f32 (codegen/cuda.py). Cast, index,
    const and arg are lowered by each backend's own code. Rules that are not spellings
    (bool arithmetic, integer powers, reductions) are in ir/rules.py."""
    arity: int
    numpy: Optional[Callable] = None
    cost: int = 1
    result: str = "operand"
    llvm: tuple = ("", "")
    cuda: str = ""


def _logical_shift(x, bits):
    unsigned = np.dtype(f"u{x.dtype.itemsize}")
    return (x.view(unsigned) >> np.asarray(bits).astype(unsigned)).view(x.dtype)


PRIMITIVES = {
    "add": Primitive(2, np.add, llvm=("fadd", "add"), cuda="({0} + {1})"),
    "sub": Primitive(2, np.subtract, llvm=("fsub", "sub"), cuda="({0} - {1})"),
    "mul": Primitive(2, np.multiply, llvm=("fmul", "mul"), cuda="({0} * {1})"),
    "div": Primitive(2, np.divide, cost=4, llvm=("fdiv", ""), cuda="({0} / {1})"),
    "pow": Primitive(2, np.power, cost=20, llvm=("mathlib.pow", ""), cuda="pow{f}({0}, {1})"),
    "max": Primitive(2, np.maximum, llvm=("llvm.maximum", "llvm.smax"), cuda="ndlc_max({0}, {1})"),
    "min": Primitive(2, np.minimum, llvm=("llvm.minimum", "llvm.smin"), cuda="ndlc_min({0}, {1})"),
    "lt": Primitive(2, np.less, result="bool", llvm=("fcmp_ordered <", "icmp_signed <"), cuda="({0} < {1})"),
    "le": Primitive(2, np.less_equal, result="bool", llvm=("fcmp_ordered <=", "icmp_signed <="), cuda="({0} <= {1})"),
    "gt": Primitive(2, np.greater, result="bool", llvm=("fcmp_ordered >", "icmp_signed >"), cuda="({0} > {1})"),
    "ge": Primitive(2, np.greater_equal, result="bool", llvm=("fcmp_ordered >=", "icmp_signed >="), cuda="({0} >= {1})"),
    "eq": Primitive(2, np.equal, result="bool", llvm=("fcmp_ordered ==", "icmp_signed =="), cuda="({0} == {1})"),
    "ne": Primitive(2, np.not_equal, result="bool", llvm=("fcmp_unordered !=", "icmp_signed !="), cuda="({0} != {1})"),
    "neg": Primitive(1, np.negative, llvm=("fneg", "neg"), cuda="(-{0})"),
    "exp": Primitive(1, np.exp, cost=8, llvm=("mathlib.exp", ""), cuda="exp{f}({0})"),
    "log": Primitive(1, np.log, cost=8, llvm=("mathlib.log", ""), cuda="log{f}({0})"),
    "sqrt": Primitive(1, np.sqrt, cost=4, llvm=("llvm.sqrt", ""), cuda="sqrt{f}({0})"),
    "tanh": Primitive(1, np.tanh, cost=10, llvm=("mathlib.tanh", ""), cuda="tanh{f}({0})"),
    "sin": Primitive(1, np.sin, cost=10, llvm=("mathlib.sin", ""), cuda="sin{f}({0})"),
    "cos": Primitive(1, np.cos, cost=10, llvm=("mathlib.cos", ""), cuda="cos{f}({0})"),
    "abs": Primitive(1, np.abs, llvm=("llvm.fabs", "llvm.abs"), cuda="ndlc_abs({0})"),
    "xor": Primitive(2, np.bitwise_xor, llvm=("", "xor"), cuda="({0} ^ {1})"),
    "or": Primitive(2, np.bitwise_or, llvm=("", "or_"), cuda="({0} | {1})"),
    "and": Primitive(2, np.bitwise_and, llvm=("", "and_"), cuda="({0} & {1})"),
    "shr": Primitive(2, _logical_shift, llvm=("", "lshr"), cuda="ndlc_shr({0}, {1})"),
    "select": Primitive(3, np.where, llvm=("select", "select"), cuda="({0} ? {1} : {2})"),
    "cast": Primitive(1, result="payload"),
    "index": Primitive(0, result="index"), "const": Primitive(0, cost=0), "arg": Primitive(0, cost=0),
}
# xor, or, and: bitwise (on bools: logic, ir/rules.py); shr: logical right shift of the bits; index:
# the row-major position (i64) of the element being computed, so counter-based random numbers are
# elementwise expressions.
COMPARISONS = tuple(name for name, p in PRIMITIVES.items() if p.result == "bool")


class ScalarExpr:
    """One node of a scalar expression DAG: a primitive applied to operand expressions."""
    __slots__ = ("prim", "args", "payload")

    def __init__(self, prim, args=(), payload=None):
        self.prim, self.args, self.payload = prim, tuple(args), payload

    def _bin(self, prim, other, reverse=False):
        other = lift(other)
        return ScalarExpr(prim, (other, self) if reverse else (self, other))

    __add__ = lambda s, o: s._bin("add", o)
    __radd__ = lambda s, o: s._bin("add", o, True)
    __sub__ = lambda s, o: s._bin("sub", o)
    __rsub__ = lambda s, o: s._bin("sub", o, True)
    __mul__ = lambda s, o: s._bin("mul", o)
    __rmul__ = lambda s, o: s._bin("mul", o, True)
    __truediv__ = lambda s, o: s._bin("div", o)
    __rtruediv__ = lambda s, o: s._bin("div", o, True)
    __pow__ = lambda s, o: s._bin("pow", o)
    __rpow__ = lambda s, o: s._bin("pow", o, True)
    __lt__ = lambda s, o: s._bin("lt", o)
    __le__ = lambda s, o: s._bin("le", o)
    __gt__ = lambda s, o: s._bin("gt", o)
    __ge__ = lambda s, o: s._bin("ge", o)

    def __neg__(self):
        return ScalarExpr("neg", (self,))

    def __repr__(self):
        if self.prim == "const":
            return repr(self.payload)
        if self.prim == "arg":
            return f"${self.payload}"
        inner = ", ".join(map(repr, self.args))
        return f"{self.prim}({inner}{', ' + str(self.payload) if self.payload else ''})"


def postorder(expr, stop=None) -> list:
    """Each distinct node of `expr` once, operands before their users (iterative: deep chains are
    fine); a node for which stop(node) holds is listed without its operands. A list, not a
    generator: the passes walk thousands of expressions per compilation, and resuming a generator
    at every node cost more than the walk. A node to list once its operands are is pushed again
    under a None marker (a pair per node cost a third more)."""
    if not expr.args:
        return [expr]
    order, seen, stack = [], set(), [expr]
    push, pop = stack.append, stack.pop
    while stack:
        e = pop()
        if e is None:  # the operands of the node below are listed: list it
            e = pop()
            if id(e) not in seen:
                seen.add(id(e))
                order.append(e)
        elif id(e) in seen:
            continue
        elif not e.args or (stop is not None and stop(e)):
            seen.add(id(e))
            order.append(e)
        else:
            push(e)
            push(None)
            for a in reversed(e.args):
                if id(a) not in seen:
                    push(a)
    return order


def transform(expr, fn, stop=None) -> ScalarExpr:
    """`expr` rebuilt bottom-up: each node becomes fn(node, new operands); shared nodes stay shared;
    a node for which stop(node) holds stays as it is."""
    new = {}
    for e in postorder(expr, stop):
        new[id(e)] = e if stop is not None and stop(e) else fn(e, [new[id(a)] for a in e.args])
    return new[id(expr)]


def map_leaves(expr, fn) -> ScalarExpr:
    """`expr` with each 'arg' leaf replaced by fn(its payload) (`transform`'s walk without its
    call per node: the passes renumber and re-address every kernel's expressions this way)."""
    new = {}
    for e in postorder(expr):
        if e.args:
            new[id(e)] = ScalarExpr(e.prim, [new[id(a)] for a in e.args], e.payload)
        else:
            new[id(e)] = fn(e.payload) if e.prim == "arg" else e
    return new[id(expr)]


def leaves(expr) -> list:
    """The payloads of the distinct 'arg' leaves of `expr`, in first-visit order."""
    return [e.payload for e in postorder(expr) if e.prim == "arg"]


def leaf_set(exprs) -> set:
    """The payloads of the 'arg' leaves of `exprs`, each node they share walked once (a merged
    kernel's later stores read its earlier values)."""
    seen, found, stack = set(), set(), list(exprs)
    while stack:
        e = stack.pop()
        if id(e) not in seen:
            seen.add(id(e))
            if e.prim == "arg":
                found.add(e.payload)
            stack.extend(e.args)
    return found


def cost(exprs, cap=float("inf"), leaf=lambda payload: 0):
    """Operations of the expressions (their PRIMITIVES costs; leaves cost leaf(payload)), shared
    nodes counted once, and only until the total passes `cap` (judging a long chain is O(cap))."""
    total, seen, stack = 0, set(), list(exprs)
    while stack and total <= cap:
        e = stack.pop()
        if id(e) not in seen:
            seen.add(id(e))
            total += leaf(e.payload) if e.prim == "arg" else PRIMITIVES[e.prim].cost
            stack.extend(e.args)
    return total


def lift(x) -> ScalarExpr:
    return x if isinstance(x, ScalarExpr) else ScalarExpr("const", payload=x)


def arg(i) -> ScalarExpr:
    return ScalarExpr("arg", payload=i)


def _unary(prim):
    return lambda x: ScalarExpr(prim, (lift(x),))


exp, log, sqrt, tanh, sin, cos, abs_ = (_unary(p) for p in ("exp", "log", "sqrt", "tanh", "sin", "cos", "abs"))


def maximum(a, b):
    return ScalarExpr("max", (lift(a), lift(b)))


def minimum(a, b):
    return ScalarExpr("min", (lift(a), lift(b)))


def eq(a, b):
    return ScalarExpr("eq", (lift(a), lift(b)))


def ne(a, b):
    return ScalarExpr("ne", (lift(a), lift(b)))


def select(cond, a, b):
    return ScalarExpr("select", (lift(cond), lift(a), lift(b)))


def cast(x, dtype):
    return ScalarExpr("cast", (lift(x),), payload=dtype)


def xor(a, b):
    return ScalarExpr("xor", (lift(a), lift(b)))


def shr(a, bits):
    return ScalarExpr("shr", (lift(a), lift(bits)))


def index():
    return ScalarExpr("index")


def evaluate(expr: ScalarExpr, args, dtype, shape=()) -> np.ndarray:
    """Evaluate `expr` elementwise over numpy `args`; constants take the compute `dtype`;
    `index` counts the elements of `shape`."""
    def ev(e, operands):
        if e.prim == "arg":
            return args[e.payload]
        if e.prim == "const":
            return np.asarray(e.payload, dtype=numpy_dtype(dtype))
        if e.prim == "index":
            return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        if e.prim == "cast":
            return operands[0].astype(numpy_dtype(e.payload))
        return PRIMITIVES[e.prim].numpy(*operands)

    with np.errstate(all="ignore"):
        return transform(expr, ev)
