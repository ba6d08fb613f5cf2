"""memory: which new state values can be written straight into their state's storage, instead of
into a separate buffer copied back after the run."""
from ..ir.kernel import Load
from ..ir.scalar import leaves


def plan_memory(program):
    """Records in `program.in_place` which state updates may overwrite their state; returns it."""
    program.in_place = in_place_updates(program)
    return program


def in_place_updates(program) -> dict:
    """Update output buffer -> the state input buffer it can overwrite. Safe when one kernel
    writes the output, no later kernel reads the state, and that kernel reads the state (if at
    all) only in the phase that stores the output, at the element it stores, and not through a
    BLAS call; and the output is nothing else."""
    split = len(program.outputs) - program.updates
    updates = program.outputs[split:]
    writers = {}
    for index, kernel in enumerate(program.kernels):
        for name in kernel.outputs():
            writers.setdefault(name, []).append(index)
    safe = {}
    for out, state in zip(updates, program.updated):
        if out in program.outputs[:split] or updates.count(out) > 1 or len(writers.get(out, ())) != 1:
            continue
        (index,) = writers[out]
        if any(state in later.buffers() for later in program.kernels[index + 1:]):
            continue
        if _reads_only_where_it_writes(program.kernels[index], state, out):
            safe[out] = state
    return safe


def _reads_only_where_it_writes(kernel, state, out) -> bool:
    if state not in kernel.reads():
        return True
    if kernel.gemm is not None:
        return False
    for phase in kernel.phases:
        stores = [s for s in phase.stores if s.buffer == out]
        for expr in phase.expressions():
            for n in leaves(expr):
                load = kernel.loads[n] if isinstance(n, int) else None
                if isinstance(load, Load) and load.buffer == state and (not stores or load.access != stores[0].access):
                    return False
    return True
