"""Kernel IR: a program is a list of kernels in schedule order over named buffers.

A kernel is a loop nest: loops of given extents (the last `reduce_count` of them reduced), loads
of buffers (or element positions, `Index`) through `Access` index maps, a scalar expression DAG (ndlc.ir.scalar primitives whose
'arg' leaves are load numbers, or ACC for the reduction's accumulator), an optional reduction
(combine 'add' or 'max') with an epilogue, and a store. A *gemm kernel* replaces the reduction
by a BLAS call (`Gemm`) per batch index that writes the output; its epilogue, if any, then runs
over the output in place (ACC is the product there). Both backends lower this form; neither
re-derives fusion or indexing. A kernel may run `split` over OpenMP threads (codegen/parallel.py).
"""
from dataclasses import dataclass, field
from typing import Optional

from ..ir.scalar import ScalarExpr
from .indexing import Access

ACC = "acc"  # payload of the 'arg' leaf standing for a reduction's accumulated value
COMPARISONS = ("lt", "le", "gt", "ge", "eq", "ne")
GEMMS = {"f32": "sgemm", "f64": "dgemm"}  # the BLAS routine for each dtype it multiplies
OP_COSTS = {"exp": 8, "log": 8, "tanh": 10, "sin": 10, "cos": 10, "pow": 20, "div": 4, "sqrt": 4}  # else 1


@dataclass
class Buffer:
    """A named tensor in memory. kind: 'input', 'const', 'temp' or 'output'."""
    name: str
    shape: tuple
    dtype: str
    kind: str

    def __str__(self):
        return f"%{self.name}: {self.dtype}[{','.join(map(str, self.shape))}] {self.kind}"


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
class Matrix:
    """A BLAS operand: the matrix of `buffer` starting at element `offset` (an access over the
    kernel's batch loops), rows `ld` elements apart, or columns when `transposed`."""
    buffer: str
    offset: Access
    ld: int
    transposed: bool = False

    def __str__(self):
        at = f"[{self.offset}]" if any(self.offset.form.coeffs) or self.offset.form.const else ""
        return f"%{self.buffer}{at}{'^T' if self.transposed else ''}"


@dataclass(frozen=True)
class Gemm:
    """a @ b, an (m, k) by (k, n) matrix product into the kernel's (row-major) output, for each
    index of the kernel's batch loops (all but the last two): a call of BLAS's GEMMS[dtype]."""
    a: Matrix
    b: Matrix
    m: int
    n: int
    k: int


@dataclass(frozen=True)
class Split:
    """Non-reduced loop `loop` cut into `threads` contiguous ranges, one per OpenMP thread."""
    loop: int
    threads: int


@dataclass
class Kernel:
    """One loop nest writing `out`, or a gemm kernel when `gemm` is set (see the module docstring)."""
    name: str
    extents: tuple
    reduce_count: int
    loads: list
    body: Optional[ScalarExpr]
    out: str
    store: Access
    dtype: str
    combine: Optional[str] = None
    epilogue: Optional[ScalarExpr] = None
    fused: tuple = ()
    why: str = ""
    gemm: Optional[Gemm] = None
    split: Optional[Split] = None
    serial_why: str = ""

    @property
    def kept_extents(self):
        return self.extents[:len(self.extents) - self.reduce_count]

    def buffers(self) -> set:
        """Names of the buffers this kernel reads or writes."""
        names = {load.buffer for load in self.loads if isinstance(load, Load)} | {self.out}
        return names | ({self.gemm.a.buffer, self.gemm.b.buffer} if self.gemm else set())

    def __str__(self):
        kept = len(self.kept_extents)
        loops = " ".join(f"i{i}<{n}" for i, n in enumerate(self.extents[:kept]))
        if self.reduce_count:
            loops += " | reduce " + " ".join(f"i{i}<{n}" for i, n in enumerate(self.extents) if i >= kept)
            loops += f" ({self.combine})"
        lines = [f"kernel {self.name} -> %{self.out}: {self.dtype}"]
        if self.fused:
            lines.append(f"  fuses: {', '.join(self.fused)}")
        if self.why:
            lines.append(f"  stored because: {self.why}")
        lines.append(f"  loops: {loops or '(scalar)'}")
        if self.split:
            lines.append(f"  parallel over i{self.split.loop} ({self.split.threads} threads)")
        elif self.serial_why:
            lines.append(f"  serial: {self.serial_why}")
        if self.gemm:
            g = self.gemm
            batch = " ".join(f"i{i}" for i in range(len(self.extents) - 2))
            lines.append(f"  {'per ' + batch + ': ' if batch else ''}call {GEMMS[self.dtype]}({g.a}, {g.b}) "
                         f"-> %{self.out}  ({g.m}x{g.k} @ {g.k}x{g.n})")
        lines += [f"  ${i} = {load}" for i, load in enumerate(self.loads)]
        if self.body is not None:
            lines.append(f"  body = {format_expr(self.body)}")
        if self.epilogue is not None:
            after = " (in place, after the call)" if self.gemm else ""
            lines.append(f"  epilogue{after} = {format_expr(self.epilogue)}")
        if self.gemm is None or self.epilogue is not None:
            lines.append(f"  store %{self.out}[{self.store}]")
        return "\n".join(lines)


@dataclass
class Program:
    """Buffers, kernels in schedule order, and which buffers are the graph's inputs and outputs.
    The last len(`updated`) outputs are new state values: output i of them updates input buffer
    `updated[i]`."""
    name: str
    buffers: dict
    kernels: list
    inputs: list
    outputs: list
    constants: dict = field(default_factory=dict)
    updated: tuple = ()
    in_place: dict = field(default_factory=dict)  # update output -> state it overwrites (memory.py)

    @property
    def updates(self) -> int:
        return len(self.updated)

    def __str__(self):
        lines = [f"program @{self.name}({', '.join('%' + n for n in self.inputs)}) "
                 f"-> ({', '.join('%' + n for n in self.outputs)})"]
        lines += ["  " + str(b) for b in self.buffers.values()]
        lines += [f"  %{out} is written in place of %{state}" for out, state in self.in_place.items()]
        for kernel in self.kernels:
            lines += ["", str(kernel)]
        return "\n".join(lines)


def format_expr(expr) -> str:
    """Readable text of a scalar expression; shared subexpressions are printed where used."""
    if expr.prim == "arg":
        return "acc" if expr.payload == ACC else f"${expr.payload}"
    if expr.prim == "const":
        return repr(expr.payload)
    args = ", ".join(format_expr(a) for a in expr.args)
    return f"{expr.prim}({args}{', ' + str(expr.payload) if expr.payload else ''})"


def infer_dtypes(expr, leaf_dtype) -> dict:
    """id(node) -> dtype for every node of `expr` that has one; constants take the dtype of the
    operands they meet (None when nothing types them). `leaf_dtype(payload)` types the leaves."""
    types = {}

    def visit(e):
        if id(e) in types:
            return types[id(e)]
        for a in e.args:
            visit(a)
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
        return t

    visit(expr)
    return types


def operand_dtype(expr, types) -> str:
    """The dtype a primitive computes in: its typed operands' (f64 for constants alone)."""
    args = expr.args[1:] if expr.prim == "select" else expr.args
    return next((types[id(a)] for a in args if types[id(a)] is not None), "f64")
