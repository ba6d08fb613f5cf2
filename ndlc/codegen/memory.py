"""Memory planning over the kernel schedule: which new state values can be written straight into
their state's storage, instead of into a separate buffer copied back after the run."""
from .kernel import Load


def plan_memory(program):
    """Records in `program.in_place` which state updates may overwrite their state; returns it."""
    program.in_place = in_place_updates(program)
    return program


def in_place_updates(program) -> dict:
    """Update output buffer -> the state input buffer it can overwrite. Safe when one kernel
    writes the output, no later kernel reads the state, that kernel reads the state (if at all)
    only at the element it writes and reduces nothing, and the output is nothing else."""
    split = len(program.outputs) - program.updates
    updates = program.outputs[split:]
    writers = {}
    for index, kernel in enumerate(program.kernels):
        writers.setdefault(kernel.out, []).append(index)
    safe = {}
    for out, state in zip(updates, program.updated):
        if out in program.outputs[:split] or updates.count(out) > 1 or len(writers.get(out, ())) != 1:
            continue
        (index,) = writers[out]
        if any(state in later.buffers() for later in program.kernels[index + 1:]):
            continue
        if _reads_only_its_own_element(program.kernels[index], state):
            safe[out] = state
    return safe


def _reads_only_its_own_element(kernel, state) -> bool:
    if state not in kernel.buffers():
        return True
    if kernel.gemm is not None or kernel.reduce_count:
        return False
    return all(load.access == kernel.store for load in kernel.loads
               if isinstance(load, Load) and load.buffer == state)
