"""The Kernel IR verifier: every buffer a kernel names exists and is in bounds where it is read or
written, expressions are well formed, temporaries are written before they are read, and each
scheduling decision fits its kernel, and every load, store and BLAS call agrees with its buffer's
dtype. Errors name the stage and the kernel."""
from math import prod

from ..errors import VerifyError
from .kernel import GEMMS, BufferKind, Combine, Strategy
from .kernel_leaves import Acc, Load, with_picks
from .scalar import PRIMITIVES, leaves, postorder
from .streams import stream_problem
from .tiles import ragged_problem
from .types import is_integer


def verify_program(program, stage=""):
    """Raise VerifyError on the first broken invariant of `program` (a kernel.Program); return it."""
    after = f"after {stage}: " if stage else ""
    buffers = program.buffers
    for name, b in buffers.items():
        if not _one_of(BufferKind, b.kind):
            raise VerifyError(f"{after}buffer %{name} is of unknown kind {b.kind!r}")
    for name in program.inputs:
        if name not in buffers or buffers[name].kind != BufferKind.INPUT:
            raise VerifyError(f"{after}program input %{name} is not an input buffer")
    if not 0 <= program.updates <= len(program.outputs) or not set(program.updated) <= set(program.inputs):
        raise VerifyError(f"{after}the state updates {program.updated} are not inputs updated by the last outputs")
    written = {name for name, b in buffers.items() if b.kind in (BufferKind.INPUT, BufferKind.CONST)}
    for kernel in program.kernels:
        where = f"{after}kernel {kernel.name}"
        for name in sorted(kernel.buffers()):
            if name not in buffers:
                raise VerifyError(f"{where}: names no buffer %{name}")
        _check_kernel(kernel, buffers, where)
        _check_order(kernel, written, where)
        written |= set(kernel.outputs())
    for name in program.outputs:
        if name not in written:
            raise VerifyError(f"{after}program output %{name} is never written")
    for out, state in program.in_place.items():
        if out not in program.outputs or state not in program.inputs:
            raise VerifyError(f"{after}in-place update %{out} -> %{state} names no output/state pair")
    return program


def _check_kernel(kernel, buffers, where):
    ndim = len(kernel.extents)
    if not 0 <= kernel.outer <= ndim:
        raise VerifyError(f"{where}: {kernel.outer} outer loops of {ndim}")
    for n, load in enumerate(kernel.loads):
        if load.access.nvars != ndim:
            raise VerifyError(f"{where}: ${n} is addressed by {load.access.nvars} loop variables, not {ndim}")
        if isinstance(load, Load):
            rows = load.indirect and _indirect_problem(kernel, n)
            if rows:
                raise VerifyError(f"{where}: ${n} {rows}")
            _in_bounds(load.access, kernel.extents, buffers[load.buffer], f"{where}: ${n}", load.indirect)
            if load.dtype != buffers[load.buffer].dtype:
                raise VerifyError(f"{where}: ${n} loads {load.dtype} from %{load.buffer}, a "
                                  f"{buffers[load.buffer].dtype} buffer")
    problem = (kernel.gemm and gemm_problem(kernel, buffers)) or (kernel.scatter and _scatter_problem(kernel, buffers))
    if problem:
        raise VerifyError(f"{where}: {problem}")
    for p, phase in enumerate(kernel.phases):
        if phase.inner and phase.reductions:
            raise VerifyError(f"{where}: phase {p} both reduces and maps over the inner loops")
        if phase.reductions and kernel.outer == ndim:
            raise VerifyError(f"{where}: phase {p} reduces, but the kernel has no inner loops")
        for r in phase.reductions:
            if not _one_of(Combine, r.combine):
                raise VerifyError(f"{where}: phase {p} combines with {r.combine!r}, not one of {_cases(Combine)}")
        reach = kernel.extents if phase.inner else kernel.outer_extents + (1,) * (ndim - kernel.outer)
        for store in phase.stores:
            if store.access.nvars != ndim:
                raise VerifyError(f"{where}: store to %{store.buffer} is addressed by {store.access.nvars} loop variables")
            _in_bounds(store.access, reach, buffers[store.buffer], f"{where}: store to %{store.buffer}")
            if store.dtype != buffers[store.buffer].dtype:
                raise VerifyError(f"{where}: stores {store.dtype} into %{store.buffer}, a "
                                  f"{buffers[store.buffer].dtype} buffer")
    for label, expr, accumulators in kernel.expressions():
        for e in postorder(expr):
            if e.prim not in PRIMITIVES:
                raise VerifyError(f"{where}: {label} uses unknown primitive {e.prim!r}")
            if PRIMITIVES[e.prim].arity != len(e.args):
                raise VerifyError(f"{where}: {label}: {e.prim} takes {PRIMITIVES[e.prim].arity} operands, "
                                  f"not {len(e.args)}")
            if e.prim == "arg" and isinstance(e.payload, Acc):
                if not 0 <= e.payload.index < accumulators:
                    raise VerifyError(f"{where}: {label} reads {e.payload}, which its phase does not compute")
            elif e.prim == "arg" and not (isinstance(e.payload, int) and 0 <= e.payload < len(kernel.loads)):
                raise VerifyError(f"{where}: {label} reads ${e.payload}, which is not a load of the kernel")
    _check_schedule(kernel, where)
    if kernel.tile and ragged_problem(kernel, buffers, kernel.block):
        raise VerifyError(f"{where}: a tile whose blocks of {kernel.block} do not divide its last loop: "
                          f"{ragged_problem(kernel, buffers, kernel.block)}")


def _check_schedule(kernel, where):
    """The strategy is one of Strategy's and fits the kernel; so do the thread split and CUDA launch."""
    if not _one_of(Strategy, kernel.strategy):
        raise VerifyError(f"{where}: unknown strategy {kernel.strategy!r}, not one of {_cases(Strategy)}")
    if (kernel.strategy == Strategy.GEMM) != (kernel.gemm is not None) and kernel.strategy != Strategy.NONE:
        raise VerifyError(f"{where}: strategy '{kernel.strategy}' for a kernel {'with' if kernel.gemm else 'without'} a gemm")
    if kernel.strategy == Strategy.CHUNKS and (kernel.outer != 1 or len(kernel.scratch) != len(kernel.reductions)
                                        or not 0 < kernel.chunks <= kernel.extents[1]):
        raise VerifyError(f"{where}: 'chunks' needs one outer loop, a scratch buffer per reduction and "
                          "no more chunks than its first inner loop has iterations")
    if kernel.strategy == Strategy.ROWS and kernel.block < 1:
        raise VerifyError(f"{where}: 'rows' needs blocks of at least one output, not {kernel.block}")
    if kernel.tile and (kernel.strategy != Strategy.ROWS or kernel.outer < 2 or kernel.tile < 0
                        or kernel.extents[kernel.outer - 2] % kernel.tile
                        or (kernel.split is not None and kernel.split.loop >= kernel.outer - 2)):
        raise VerifyError(f"{where}: a tile of {kernel.tile} needs 'rows', two outer loops, the one before the last "
                          "a multiple of it and not split over threads")
    if kernel.split is not None and kernel.strategy != Strategy.CHUNKS:
        if not 0 <= kernel.split.loop < kernel.outer or kernel.split.threads < 1:
            raise VerifyError(f"{where}: splits loop i{kernel.split.loop} over {kernel.split.threads} threads")
    for name in kernel.streams.buffers if kernel.streams else ():
        stores = [s for s in kernel.stores if s.buffer == name]
        problem = next(filter(None, (stream_problem(kernel, s) for s in stores)), "") if stores else "not stored"
        if problem:
            raise VerifyError(f"{where}: streaming stores to %{name}: {problem}")
    g = kernel.gpu
    if g is not None and g.vector > 1 and any(getattr(load, "indirect", None) for load in kernel.loads):
        raise VerifyError(f"{where}: a CUDA launch of {g.vector} points a thread over indirect loads (one row a point)")
    if g is not None and (min(g.tile, g.lanes, g.blocks, g.vector, g.chunks) < 1
                          or (g.chunks > 1 and len(kernel.scratch) != len(kernel.reductions))):
        raise VerifyError(f"{where}: a CUDA launch of {g.blocks} blocks of {g.tile}x{g.lanes} threads, "
                          f"{g.vector} points a thread, {g.chunks} chunks into {len(kernel.scratch)} scratch buffers")


def _one_of(kind, value) -> bool:
    return value in {case.value for case in kind}


def _cases(kind) -> str:
    return ", ".join(repr(case.value) for case in kind)


def _scatter_problem(kernel, buffers):
    """What is wrong with a scatter kernel (ir/kernel.py Scatter), or None."""
    s = kernel.scatter
    if kernel.loads or kernel.phases or kernel.gemm or kernel.extents != (s.width,) or kernel.outer != 1:
        return f"a scatter kernel has one loop of {s.width} columns and no loads, phases or gemm"
    for name, at, size in zip(s.buffers, s.at, (s.count * s.width, s.count, s.rows * s.width)):
        if at < 0 or prod(buffers[name].shape) < at + size:
            return f"scatter_add's %{name} has {prod(buffers[name].shape)} elements, not {at} + {size}"
    if buffers[s.indices].dtype != s.index_dtype or not is_integer(s.index_dtype) \
            or {buffers[s.values].dtype, buffers[s.out].dtype} != {s.dtype}:
        return f"scatter_add adds {s.dtype} rows at {buffers[s.indices].dtype} indices"
    return None


def gemm_problem(kernel, buffers):
    """Why `kernel`'s BLAS call does not fit its buffers (a sentence), or None: the routine's dtype
    is each operand's and the output's, and the matrices it reads and writes lie inside them. The
    runtime asks it of every gemm before native code runs, so a dtype bug is an error, never a
    write past a buffer."""
    gemm = kernel.gemm
    if gemm.dtype not in GEMMS:
        return f"its gemm multiplies {gemm.dtype}, which no BLAS routine does"
    routine = GEMMS[gemm.dtype]
    for verb, name in (("reads", gemm.a.buffer), ("reads", gemm.b.buffer), ("writes", gemm.out)):
        if buffers[name].dtype != gemm.dtype:
            return f"{routine} {verb} %{name}, a {buffers[name].dtype} buffer"
    if 0 in (gemm.m, gemm.n, gemm.k):
        return None
    batch = kernel.extents[:-2]
    for matrix, rows, cols in ((gemm.a, gemm.m, gemm.k), (gemm.b, gemm.k, gemm.n)):
        if matrix.transposed:
            rows, cols = cols, rows
        if matrix.ld < cols:
            return (f"{routine} reads %{matrix.buffer} with rows {matrix.ld} elements apart, fewer than "
                    f"its {cols} columns")
        low, high = matrix.offset.form.bounds(batch)
        high += (rows - 1) * matrix.ld + cols - 1
        size = prod(buffers[matrix.buffer].shape)
        if low < 0 or high >= size:
            return f"{routine} reads elements {low}..{high} of %{matrix.buffer}, which has {size}"
    size, written = prod(buffers[gemm.out].shape), prod(batch) * gemm.m * gemm.n
    if written > size:
        return f"{routine} writes {written} elements of %{gemm.out}, which has {size}"
    return None


def _check_order(kernel, written, where):
    """Each buffer a phase reads is written before: by an earlier kernel, by the kernel's gemm, or
    by one of its earlier phases."""
    written = set(written) | ({kernel.gemm.out} if kernel.gemm else set())
    for p, phase in enumerate(kernel.phases):
        for expr in phase.expressions():
            for n in with_picks(kernel.loads, leaves(expr)):
                load = kernel.loads[n] if isinstance(n, int) else None
                if isinstance(load, Load) and load.buffer not in written:
                    raise VerifyError(f"{where}: phase {p} reads %{load.buffer} before it is written")
        written |= {s.buffer for s in phase.stores}
    if kernel.scatter and not written >= {kernel.scatter.values, kernel.scatter.indices}:
        raise VerifyError(f"{where}: its scatter reads a buffer before it is written")
    if kernel.gemm and not written >= {kernel.gemm.a.buffer, kernel.gemm.b.buffer}:
        raise VerifyError(f"{where}: its gemm reads a buffer before it is written")


def _indirect_problem(kernel, n):
    """Why load `n`'s row cannot be picked as it says (a phrase), or '': its row is the value of
    another load of the kernel, a plain load of integers, its rows at least an element apart; a
    table may have no rows (every row then reads 0, as one outside the table)."""
    rows = kernel.loads[n].indirect
    index = rows.index
    if not (isinstance(index, int) and 0 <= index < len(kernel.loads) and index != n):
        return f"picks its row by ${index}, which is not another load of the kernel"
    picked = kernel.loads[index]
    if not isinstance(picked, Load) or picked.indirect is not None or not is_integer(picked.dtype):
        return f"picks its row by ${index}, which is not a plain load of integers"
    if rows.stride < 1 or rows.rows < 0:
        return f"picks one of {rows.rows} rows {rows.stride} elements apart"
    return ""


def _in_bounds(access, extents, buffer, what, indirect=None):
    """The elements an unguarded access reaches lie inside the buffer (guarded ones are selected),
    whichever row an `indirect` load picks (one outside its rows reads nothing)."""
    if access.guards or access.step != 1 or 0 in extents:
        return
    low, high = access.form.padded(len(extents)).bounds(extents)
    high += indirect.stride * (indirect.rows - 1) if indirect else 0
    size = prod(buffer.shape)
    if low < 0 or high >= max(size, 1):
        raise VerifyError(f"{what} reaches elements {low}..{high} of %{buffer.name}, which has {size}")
