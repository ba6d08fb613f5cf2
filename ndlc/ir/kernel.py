"""Kernel IR: a program is a list of kernels in schedule order over named buffers.

A kernel is one loop nest that may write several buffers. Its loops are `outer` loops shared by
everything it does, then inner loops; its work is a sequence of *phases*, each run in turn at every
point of the outer loops:
  - a reduce phase combines `Reduction` bodies over the inner loops (a Combine), then makes its
    `stores` once per outer point (their values may read the phase's reductions: `Acc(k)` leaves;
    later phases read what it stored);
  - a map phase (`inner=True`) makes its stores at every point of the inner loops.
An elementwise kernel has only outer loops and one phase; a plain reduction one reduce phase; a
row kernel (LayerNorm's statistics and output) several phases over one row, in cache. Scalar
expressions are ndlc.ir.scalar DAGs whose 'arg' leaves are load numbers (`Load`s of buffers, in a
row another load's value picks where `Indirect`, or element positions, `Index`, through `Access`
index maps) or `Acc`s (ir/kernel_leaves.py). Within a phase every value is
computed before any store, so a store may overwrite a buffer the same phase reads at that element.
A *gemm kernel* is a BLAS call (`Gemm`) per batch index writing its output; its phase, if any,
then runs over the output in place. A *scatter kernel* (`Scatter`, no loads or phases) adds rows
into a zeroed output's rows that integer indices pick, in order. Both backends lower this form;
neither re-derives fusion or indexing. The schedule pass chooses each kernel's `strategy` and `split` (passes/schedule.py).
The printed text (`str`) is complete: parse_kernels (ir/kernel_parser.py) reads it back.
"""
from dataclasses import dataclass, field
from typing import Optional

from .cases import Case, TextEnum
from .indexing import Access
from .kernel_leaves import Acc, Load, format_expr
from .scalar import ScalarExpr
from .short_rows import side_by_side
from .streams import Streams, stream_lines

ENTRY = "ndlc_main"  # the one native entry point of a program: ENTRY(pointer array of its buffers)
GEMMS = {"f32": "sgemm", "f64": "dgemm"}  # the BLAS routine for each dtype it multiplies
TEAM = "ndlc_team"  # the i32 generated code reads for how many threads split kernels run on now


def gemm_symbol(dtype) -> str:
    """The name generated code calls for `dtype`'s gemm (bound at load: runtime/libraries.py)."""
    return f"ndlc_{GEMMS[dtype]}"


class BufferKind(TextEnum):
    """What a buffer holds; LOCAL: a temporary its one kernel keeps a row of per thread (no array)."""
    INPUT = "input"
    CONST = "const"
    TEMP = "temp"
    OUTPUT = "output"
    LOCAL = "local"


class Combine(TextEnum):
    """How a reduction combines its body's values (identities and spellings: ir/rules.py)."""
    ADD = "add"
    MAX = "max"


class Strategy(TextEnum):
    """A kernel's reduction strategy, chosen by the schedule pass (NONE before it runs)."""
    NONE = ""
    POINT = "point"
    ROWS = "rows"
    CHUNKS = "chunks"
    GEMM = "gemm"


class PhaseKind(TextEnum):
    """What a phase does at each outer point (its text in the printed kernel)."""
    REDUCE = "reduce"
    MAP = "map over the inner loops"
    POINT = "per outer point"


@dataclass
class Buffer:
    """A named tensor in memory, of a BufferKind."""
    name: str
    shape: tuple
    dtype: str
    kind: BufferKind = Case(BufferKind)

    def __str__(self):
        return f"%{self.name}: {self.dtype}[{','.join(map(str, self.shape))}] {self.kind}"


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
    out: str
    dtype: str
    why: str = ""


@dataclass(frozen=True)
class Scatter:
    """`out` (rows x width) zeroed, then row t of `values` (count x width) added into row
    indices[t] for t = 0, 1, ... in order (an index outside [0, rows) adds nothing): gather's
    adjoint (scatter_add), whose sums are then the same at any thread count. Each buffer starts
    `at` elements in (values, indices, out: a scan step's slices). The kernel's one loop is over
    the width's columns."""
    values: str
    indices: str
    out: str
    count: int
    rows: int
    width: int
    dtype: str
    index_dtype: str
    why: str = ""
    at: tuple = (0, 0, 0)

    def __str__(self):
        values, indices, out = (f"%{name}" + (f"[{at}]" if at else "") for name, at in zip(self.buffers, self.at))
        return (f"call scatter_add({values}, {indices}) -> {out}  "
                f"({self.count} rows of {self.width} into {self.rows}, in order)")

    @property
    def buffers(self):
        return self.values, self.indices, self.out


@dataclass(frozen=True)
class Split:
    """Outer loop `loop` cut into pieces of `piece` iterations (the last may be shorter)
    that `threads` threads take in turn, so one that lost its core holds back only its piece;
    `piece` None: a 'chunks' kernel, whose threads take its chunks, then its columns, in turn."""
    loop: int
    threads: int
    piece: Optional[int] = None


@dataclass(frozen=True)
class GpuLaunch:
    """A kernel's CUDA schedule: blocks of `tile` x `lanes` threads; a block computes `tile`
    consecutive points of the (flattened) outer loops, thread x of the tile one point, and its
    `lanes` threads share that point's inner loops (striding the flattened inner index, then
    combining their partial reductions: warp shuffles where a block is one point, a shared-memory
    tree otherwise). `blocks` run grid-stride over the outer points."""
    tile: int
    lanes: int
    blocks: int
    why: str = ""
    lanes_fastest: bool = False  # thread number = x * lanes + y (rows: a warp within one point), else y * tile + x
    vector: int = 1  # elementwise: consecutive points per thread along the last loop (float4 when 4)
    chunks: int = 1  # reductions: pieces of the reduced loops, each a block's partials (kernel.scratch), combined in order

    @property
    def threads(self):
        return self.tile * self.lanes


@dataclass
class Reduction:
    """`body`, combined with `combine` (a Combine) over the inner loops, in `dtype`."""
    body: ScalarExpr
    combine: Combine = Case(Combine)
    dtype: str


@dataclass
class Store:
    """buffer[access] = value, of `dtype`; `why` says why the value is stored at all."""
    buffer: str
    access: Access
    value: ScalarExpr
    dtype: str
    why: str = ""

    def __str__(self):
        return f"%{self.buffer}[{self.access}] = {format_expr(self.value)}"


@dataclass
class Phase:
    """Reductions over the inner loops then stores per outer point, or (`inner`) stores at
    every inner point."""
    reductions: list
    stores: list
    inner: bool = False

    @property
    def kind(self) -> PhaseKind:
        return PhaseKind.MAP if self.inner else PhaseKind.REDUCE if self.reductions else PhaseKind.POINT

    def expressions(self):
        return [r.body for r in self.reductions] + [s.value for s in self.stores]


@dataclass(frozen=True, eq=False)
class Placement:
    """A scan step's copy of a body kernel: `template` the body's kernel, `place` each of the
    body's buffers -> (the program's buffer, element offset) at that step."""
    template: object
    place: dict

    def buffer(self, name) -> tuple:
        """(buffer, element offset) of the body's `name` (a name the body does not have, such as
        the schedule's scratch buffers, is the program's own, at offset 0)."""
        return self.place.get(name, (name, 0))

    def holds(self, kernel) -> bool:
        """Whether `kernel` is still `template` placed, no pass having rewritten its loads or
        expressions since (a copy shares the body kernel's expressions)."""
        t = self.template
        if len(kernel.loads) != len(t.loads) or (kernel.gemm is None) != (t.gemm is None) \
                or len(kernel.phases) != len(t.phases):
            return False
        for mine, its in zip(kernel.phases, t.phases):
            if len(mine.reductions) != len(its.reductions) or len(mine.stores) != len(its.stores) \
                    or any(a.body is not b.body for a, b in zip(mine.reductions, its.reductions)) \
                    or any(a.value is not b.value for a, b in zip(mine.stores, its.stores)):
                return False
        return True


@dataclass
class Kernel:
    """One loop nest writing the buffers of its phases' stores (and a gemm's output): see the
    module docstring. `fused` names the graph nodes it computes; `merged` why kernels were merged
    into it, `boundary` why it was not merged into the kernel before it."""
    name: str
    extents: tuple
    outer: int
    loads: list
    phases: list
    fused: tuple = ()
    gemm: Optional[Gemm] = None
    scatter: Optional[Scatter] = None
    merged: tuple = ()
    boundary: str = ""
    recomputes: tuple = ()  # values used elsewhere too that this kernel computes again, and why
    lowered: tuple = ()  # the lowering rules (and their numbers) that made the nodes it fuses (a conv's)
    local: dict = field(default_factory=dict)  # row-local temporary -> elements each thread keeps (memory.py)
    split: Optional[Split] = None
    serial_why: str = ""
    strategy: Strategy = Case(Strategy, Strategy.NONE)  # chosen by the schedule pass
    chunks: int = 0  # 'chunks': how many pieces the first inner loop is cut into
    block: int = 0  # 'rows': how many outputs of the last outer loop accumulate side by side
    tile: int = 0  # 'rows': and of the loop before, each a copy of the block (0: none; a register tile)
    calls: int = 0  # a gemm: the rows of each BLAS call its rows run in (0: one call; passes/gemm_pieces.py)
    scratch: tuple = ()  # 'chunks': per reduction, the buffer of its partials (chunks x outer extent)
    streams: Optional[Streams] = None  # which stores bypass the cache, and why (passes/streaming.py)
    gpu: Optional[GpuLaunch] = None  # the CUDA schedule (passes/schedule.py, schedule_gpu)
    step: str = ""  # the scan step it runs (passes/steps.py): merged within its body, merge leaves it
    # a step's kernel: the body kernel it copies and where that step places the body's buffers
    # (passes/steps.py), so that what is decided per kernel is decided once per body kernel; not text
    origin: Optional["Placement"] = field(default=None, compare=False, repr=False)

    def body_kernel(self):
        """The body kernel a scan step's kernel is still a placed copy of (`origin`), or None."""
        return self.origin.template if self.origin is not None and self.origin.holds(self) else None

    @property
    def outer_extents(self):
        return self.extents[:self.outer]

    @property
    def stores(self):
        return [store for phase in self.phases for store in phase.stores]

    @property
    def reductions(self):
        return [r for phase in self.phases for r in phase.reductions]

    def outputs(self) -> list:
        """The buffers this kernel writes, in order."""
        names = [self.gemm.out] if self.gemm else [self.scatter.out] if self.scatter else []
        return list(dict.fromkeys(names + [s.buffer for s in self.stores]))

    def reads(self) -> set:
        """Names of the buffers this kernel reads."""
        names = {load.buffer for load in self.loads if isinstance(load, Load)}
        names |= {self.scatter.values, self.scatter.indices} if self.scatter else set()
        return names | ({self.gemm.a.buffer, self.gemm.b.buffer} if self.gemm else set())

    def buffers(self) -> set:
        """Names of the buffers this kernel reads or writes (its scratch included)."""
        return self.reads() | set(self.outputs()) | set(self.scratch)

    def expressions(self):
        """(label, expression, how many accumulators it may read) for every expression of the kernel."""
        found = []
        for p, phase in enumerate(self.phases):
            found += [(f"phase {p} reduction", r.body, 0) for r in phase.reductions]
            found += [(f"phase {p} store to %{s.buffer}", s.value, len(phase.reductions)) for s in phase.stores]
        return found

    def __str__(self):
        return self.text({})

    def text(self, formatted) -> str:
        """The kernel's text; `formatted`: id(expression) -> its text, shared by kernels printed together."""
        def expr(e):
            found = formatted.get(id(e))
            if found is None:
                found = formatted[id(e)] = format_expr(e)
            return found
        outer = " ".join(f"i{i}<{n}" for i, n in enumerate(self.outer_extents))
        inner = " ".join(f"i{i}<{n}" for i, n in enumerate(self.extents) if i >= self.outer)
        lines = [f"kernel {self.name} -> {', '.join('%' + n for n in self.outputs())}"]
        if self.fused:
            lines.append(f"  fuses: {', '.join(self.fused)}")
        lines += [f"  lowered: {why}" for why in self.lowered]
        whys = [f"%{self.gemm.out}: {self.gemm.why}"] if self.gemm and self.gemm.why else []
        whys += [f"%{self.scatter.out}: {self.scatter.why}"] if self.scatter and self.scatter.why else []
        whys += [f"%{s.buffer}: {s.why}" for s in self.stores if s.why and not (self.gemm and s.buffer == self.gemm.out)]
        if whys:
            lines.append(f"  stored because: {'; '.join(whys)}")
        lines += [f"  recomputes: {why}" for why in self.recomputes]
        lines += [f"  merged: {why}" for why in self.merged]
        lines += [f"  not merged into the kernel before: {self.boundary}"] if self.boundary else []
        lines += [f"  step: {self.step}"] if self.step else []
        lines.append(f"  loops: {outer or '(scalar)'}{' | ' + inner if inner else ''}")
        if self.strategy == Strategy.CHUNKS:
            lines.append(f"  strategy: chunks (i{self.outer} cut into {self.chunks} chunks whose partial results, "
                         f"{', '.join('%' + n for n in self.scratch)}, combine in order; whole rows stream)")
        if self.strategy == Strategy.ROWS:
            tile = f" by {self.tile} i{self.outer - 2}" if self.tile else ""
            rest = self.extents[self.outer - 1] % self.block if self.tile else 0
            ragged = f", the last computing {self.block} to store {rest}" if rest else ""
            padded = "; the taps that cross the padding checked apart" if tile and any(x.access.guards for x in self.loads) else ""
            reads = "strided" if any(abs(x.access.form.coeffs[-1]) > 1 for x in self.loads) else "maxima over windows short"
            read = "each lane sums a row of" if side_by_side(self) else f"the reductions read {reads} along"
            lines.append(f"  strategy: rows (blocks of {self.block} i{self.outer - 1}{tile} accumulate side by side{ragged}; "
                         f"{read} i{len(self.extents) - 1}{padded})")
        if self.gpu:
            lines.append(f"  cuda: {self._launch_text()}")
        if self.split:
            s = self.split
            over = "its chunks" if s.piece is None else f"i{s.loop} in {-(-self.extents[s.loop] // s.piece)} pieces of {s.piece}, taken in turn"
            lines.append(f"  parallel over {over} ({s.threads} threads)")
        elif self.serial_why:
            lines.append(f"  serial: {self.serial_why}")
        lines += stream_lines(self.streams)
        if self.gemm:
            g = self.gemm
            batch = " ".join(f"i{i}" for i in range(len(self.extents) - 2))
            lines.append(f"  {'per ' + batch + ': ' if batch else ''}call {GEMMS[g.dtype]}({_matrix_text(g.a, g.m, g.k)}, "
                         f"{_matrix_text(g.b, g.k, g.n)}) -> %{g.out}  ({g.m}x{g.k} @ {g.k}x{g.n}){self._calls_text()}")
        lines += [f"  {self.scatter}"] if self.scatter else []
        lines += [f"  %{name} is local: one row of {size} per thread" for name, size in self.local.items()]
        lines += [f"  ${i} = {load}" for i, load in enumerate(self.loads)]
        for p, phase in enumerate(self.phases):
            headed = len(self.phases) > 1 or phase.kind != PhaseKind.POINT
            if headed:
                lines.append(f"  phase {p}: {phase.kind}")
            lines += [f"    acc{k} = {r.combine} of {expr(r.body)}" for k, r in enumerate(phase.reductions)]
            lines += [f"{'    ' if headed else '  '}store %{s.buffer}[{s.access}] = {expr(s.value)}" for s in phase.stores]
        return "\n".join(lines)

    def _calls_text(self):
        """How a gemm's rows are cut into BLAS calls where they are (passes/gemm_pieces.py small_calls)."""
        if not self.calls:
            return ""
        return (f", in calls of {self.calls} rows, each on OpenBLAS's small-matrix kernels (one call over "
                f"{self.gemm.m} rows would pack its operands)")

    def _launch_text(self):
        """The CUDA schedule: blocks, and what differs from one point per thread, then why."""
        g = self.gpu
        text = f"{g.blocks} blocks of {g.tile}x{g.lanes} threads"
        text += ", lanes fastest" if g.lanes_fastest else ""
        text += f", {g.vector} points a thread" if g.vector != 1 else ""
        text += f", {g.chunks} chunks into {', '.join('%' + n for n in self.scratch)}" if g.chunks != 1 else ""
        return f"{text} ({g.why})"


def _matrix_text(matrix, rows, cols):
    """A gemm operand, with its leading dimension where it is not that of a dense rows x cols matrix."""
    dense = rows if matrix.transposed else cols
    return f"{matrix}{'' if matrix.ld == dense else f' ld {matrix.ld}'}"


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
        plain = len(self.outputs) - self.updates
        outputs = [f"%{n}" for n in self.outputs[:plain]]
        outputs += [f"new %{state} = %{n}" for state, n in zip(self.updated, self.outputs[plain:])]
        lines = [f"program @{self.name}({', '.join('%' + n for n in self.inputs)}) -> ({', '.join(outputs)})"]
        lines += ["  " + str(b) for b in self.buffers.values()]
        lines += [f"  %{out} is written in place of %{state}" for out, state in self.in_place.items()]
        formatted = {}
        for kernel in self.kernels:
            lines += ["", kernel.text(formatted)]
        return "\n".join(lines)
