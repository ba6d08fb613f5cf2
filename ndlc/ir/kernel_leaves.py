"""What a kernel's scalar expressions read, and their text and types: loads of buffers (`Load`),
element positions (`Index`) and a phase's accumulators (`Acc`), the 'arg' leaves of ndlc.ir.scalar
DAGs (see ir/kernel.py)."""
from dataclasses import dataclass

from .indexing import Access
from .scalar import COMPARISONS, postorder, transform


@dataclass(frozen=True)
class Load:
    """One element of `buffer` (of `dtype`) at `access`."""
    buffer: str
    dtype: str
    access: Access

    def with_access(self, access):
        return Load(self.buffer, self.dtype, access)

    def __str__(self):
        return f"%{self.buffer}[{self.access}]"


@dataclass(frozen=True)
class Index:
    """The i64 value of `access` itself, read from no buffer: element positions ('index')."""
    access: Access
    dtype: str = "i64"

    def with_access(self, access):
        return Index(access)

    def __str__(self):
        return f"index[{self.access}]"


@dataclass(frozen=True)
class Acc:
    """Leaf payload: the value of reduction number `index` of the phase whose store reads it."""
    index: int

    def __str__(self):
        return f"acc{self.index}"


def format_expr(expr) -> str:
    """Readable text of a scalar expression; shared subexpressions are printed where used."""
    def text(e, args):
        if e.prim == "arg":
            return str(e.payload) if isinstance(e.payload, Acc) else f"${e.payload}"
        if e.prim == "const":
            return repr(e.payload)
        return f"{e.prim}({', '.join(args)}{', ' + str(e.payload) if e.payload else ''})"
    return transform(expr, text)


def infer_dtypes(expr, leaf_dtype) -> dict:
    """id(node) -> dtype for every node of `expr` that has one; constants take the dtype of the
    operands they meet (None when nothing types them). `leaf_dtype(payload)` types the leaves."""
    types = {}
    for e in postorder(expr):
        if e.prim == "arg":
            t = leaf_dtype(e.payload)
        elif e.prim == "const":
            t = None
        elif e.prim == "cast":
            t = e.payload
        elif e.prim in COMPARISONS:
            t = "bool"
        elif e.prim == "select":
            t = types[id(e.args[1])] or types[id(e.args[2])]
        else:
            t = next((types[id(a)] for a in e.args if types[id(a)] is not None), None)
        types[id(e)] = t
    return types


def operand_dtype(expr, types) -> str:
    """The dtype a primitive computes in: its typed operands' (f64 for constants alone)."""
    args = expr.args[1:] if expr.prim == "select" else expr.args
    return next((types[id(a)] for a in args if types[id(a)] is not None), "f64")
