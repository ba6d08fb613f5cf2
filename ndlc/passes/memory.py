"""memory: which new state values can be written straight into their state's storage, instead of
into a separate buffer copied back after the run; and which temporaries never leave one outer
point of one kernel, so that each thread keeps a single row of them (in cache) instead of the
whole array in memory (softmax's exponentials between its sum and its output)."""
import collections
import math

from ..ir.kernel import BufferKind, Strategy
from ..ir.kernel_leaves import Load, with_picks
from ..ir.scalar import leaf_set
from ..ir.short_rows import side_by_side

ROW_LOCAL_MAX = 1 << 14  # elements of the largest temporary row kept per thread (64 KB of f32)


def plan_memory(program, row_local=True):
    """Records in `program.in_place` which state updates may overwrite their state, and marks
    row-local temporaries (kind 'local', `Kernel.local`; not with `row_local` False: the CUDA
    backend's lanes share a row through memory); returns the program."""
    used = [kernel.buffers() for kernel in program.kernels]
    program.in_place = in_place_updates(program, used)
    touchers = collections.defaultdict(list)  # buffer -> the kernels touching it
    for kernel, names in zip(program.kernels, used):
        for name in names:
            touchers[name].append(kernel)
    rows = {}  # buffer -> its row's elements, or None: decided once for all the kernels touching it
    for kernel in program.kernels if row_local else ():
        for name in kernel.outputs():
            if name not in rows:
                rows[name] = row_local_size(program, name, touchers[name])
            if rows[name] is not None:
                program.buffers[name].kind = BufferKind.LOCAL
                kernel.local[name] = rows[name]
    return program


def row_local_size(program, name, kernels):
    """The elements of one row of temporary `name` if only one kernel touches it (`kernels`: those
    touching it, the steps' copies of a body kernel counting as one: a scan's temporary is local
    in every step, when each copy writes it, at one row; a carry a step writes and the next reads
    is not), all at one outer point: every access the same in its outer loops (and constant),
    unguarded; else None."""
    if program.buffers[name].kind not in (BufferKind.TEMP, BufferKind.LOCAL):
        return None
    sizes = (_row_size(program, k, name) if name in k.outputs() else None for k in kernels)
    size = next(sizes)  # the first kernel's first: most temporaries are not local
    if size is None or len(kernels) > 1 and len({id(k.body_kernel() or k) for k in kernels}) != 1:
        return None
    return size if all(other == size for other in sizes) else None


def _row_size(program, kernel, name):
    """The elements of one row of `name` if `kernel` stores and reads it at one outer point only
    (None if not). Rows side by side keep a block's rows of it (codegen/llvm_rows.py `_block_local`)."""
    if kernel.strategy != Strategy.POINT and not side_by_side(kernel) or kernel.outer == len(kernel.extents):
        return None
    accesses = [s.access for s in kernel.stores if s.buffer == name]
    reads = [load for load in kernel.loads if isinstance(load, Load) and load.buffer == name]
    if any(load.indirect for load in reads):
        return None
    accesses += [load.access for load in reads]
    outer = {(a.form.coeffs[:kernel.outer], a.form.const, a.step, a.guards) for a in accesses}
    if len(outer) != 1 or next(iter(outer))[2:] != (1, ()):
        return None
    low, high = accesses[0].within_row(kernel.outer).form.bounds(kernel.extents)
    if low >= 0 and high < ROW_LOCAL_MAX and high + 1 < math.prod(program.buffers[name].shape):
        return high + 1
    return None


def in_place_updates(program, used) -> dict:
    """Update output buffer -> the state input buffer it can overwrite. Safe when one kernel
    writes the output, no later kernel reads the state, and that kernel reads the state (if at
    all) only in the phase that stores the output, at the element it stores, and not through a
    BLAS call, whose product is not the output (BLAS would overwrite the state before the phase
    reads it); and the output is nothing else. An optimizer update fused after a weight
    gradient's gemm is then in place: the MLP step's 784x512 w, m and v were copied back
    after every step (0.3 ms of its 6-8). `used`: each kernel's buffers (Kernel.buffers)."""
    split = len(program.outputs) - program.updates
    updates = program.outputs[split:]
    writers, last = {}, {}  # buffer -> the kernels writing it; -> the last kernel touching it
    for index, (kernel, names) in enumerate(zip(program.kernels, used)):
        for name in kernel.outputs():
            writers.setdefault(name, []).append(index)
        last.update(dict.fromkeys(names, index))
    safe, phase_loads = {}, {}  # kernel index -> the loads each of its phases reads (`_phase_loads`)
    for out, state in zip(updates, program.updated):
        if out in program.outputs[:split] or updates.count(out) > 1 or len(writers.get(out, ())) != 1:
            continue
        (index,) = writers[out]
        if last.get(state, -1) > index:
            continue
        if _reads_only_where_it_writes(program.kernels[index], state, out, phase_loads, index):
            safe[out] = state
    return safe


def _reads_only_where_it_writes(kernel, state, out, phase_loads, index) -> bool:
    if state not in kernel.reads():
        return True
    if kernel.gemm is not None and (out == kernel.gemm.out or state in (kernel.gemm.a.buffer, kernel.gemm.b.buffer)) \
            or kernel.scatter is not None:
        return False
    if index not in phase_loads:
        phase_loads[index] = _phase_loads(kernel)
    for phase, loads in zip(kernel.phases, phase_loads[index]):
        stores = [s for s in phase.stores if s.buffer == out]
        for load in loads:
            if load.buffer == state and (load.indirect or not stores or load.access != stores[0].access):
                return False
    return True


def _phase_loads(kernel) -> list:
    """Per phase of `kernel`, the Loads its expressions read: walked once per kernel, not once per
    state it updates (Adam's merged update of many parameters is one kernel)."""
    return [[kernel.loads[n] for n in with_picks(kernel.loads, leaf_set(phase.expressions()))
             if isinstance(n, int) and isinstance(kernel.loads[n], Load)]
            for phase in kernel.phases]
