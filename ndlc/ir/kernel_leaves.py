"""What a kernel's scalar expressions read, and their text and types: loads of buffers (`Load`),
element positions (`Index`) and a phase's accumulators (`Acc`), the 'arg' leaves of ndlc.ir.scalar
DAGs (see ir/kernel.py)."""
from dataclasses import dataclass
from typing import Optional

from .indexing import Access
from .scalar import COMPARISONS, postorder, transform


@dataclass(frozen=True)
class Indirect:
    """A load's row picked at run time (an embedding's lookup): the integer value of load `index`
    (its number in the kernel; in fusion's definitions, before loads are numbered, the `Load`
    itself) times `stride` elements is added to the access. A value outside [0, `rows`) reads 0,
    as a failed guard does, so a program never reads outside its table."""
    index: object
    stride: int
    rows: int

    def text(self, form):
        """The access's text `form` (its guards after ' if ', if any) with the row added, and its check."""
        row = f"${self.index}" if isinstance(self.index, int) else str(self.index)
        plain, _, guards = form.partition(" if ")
        checks = " and ".join(filter(None, [f"0 <= {row} < {self.rows}", guards]))
        return f"{self.stride}*{row} + {plain} if {checks}"


@dataclass(frozen=True)
class Load:
    """One element of `buffer` (of `dtype`) at `access`, in the row `indirect` picks if it is set."""
    buffer: str
    dtype: str
    access: Access
    indirect: Optional[Indirect] = None

    def with_access(self, access):
        return Load(self.buffer, self.dtype, access, self.indirect)

    def __str__(self):
        access = str(self.access)
        return f"%{self.buffer}[{self.indirect.text(access) if self.indirect else access}]"


def with_picks(loads, numbers) -> set:
    """Load numbers `numbers` and those whose values pick the rows of their indirect loads (an
    indirect load reads both)."""
    rows = [getattr(loads[n], "indirect", None) for n in numbers if isinstance(n, int)]
    return set(numbers) | {row.index for row in rows if row is not None}


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
