"""A program's new kernels dealt into modules for the builders' shares (runtime/builders.py): one
share per thread of the budget, of about the same estimated LLVM cost, one module per pipeline in
each, and the kernels that need no loop strength reduction in a module of their own where that
shortens the costliest share (`modules`)."""
from . import libraries

PARALLEL_KERNELS = 8  # new kernels per module at least when several compile in parallel: forking a
# worker costs ~20 ms, a small kernel's optimisation a few ms; a module more costs its pipeline and
# its own copy of mathlib's functions (4 modules instead of 2: the MLP's LLVM time +10-25%)
KERNEL_COST = 1000  # a kernel's estimated LLVM cost, in characters of its Kernel IR text, beyond that
# text's length (fitted to the MLP's, LeNet's and the Transformer's kernels: 500-2700)
VECTORISER_COST = 1.2  # a kernel through O3 with the vectorisers costs this many times one of the same
# estimate on codegen's vectors (each kernel compiled alone, LLVM CPU per character of the estimate, O3
# against the cheap pipeline: MLP 15 and 12 us, Transformer 13 and 12, LeNet 26 and 23)
WITHOUT_LSR = ("point", "chunks")  # strategies whose kernels on codegen's vectors run as fast without
# LLVM's loop strength reduction: per kernel cycles, 1 thread, the least of 8-12 interleaved blocks,
# load 6-9, LSR on -> off: MLP point -7%, chunks -1%; LeNet point -10%, chunks -14%; where the
# register tiles' addresses need it: MLP gemm +25%, LeNet rows +9% (same bits: it rewrites addresses)
WITHOUT_LSR_COST = 0.85  # such a module costs this share of its estimate without it (the MLP's 17 such
# kernels: 0.261 -> 0.224 CPU s building, optimising and making machine code)


def shares(symbols) -> int:
    """Into how many builders' shares to deal `symbols` (kernels to compile): as many as the
    thread budget has threads, each of at least PARALLEL_KERNELS kernels (one when they are few)."""
    return max(1, min(libraries.threads(), len(symbols) // PARALLEL_KERNELS))


def modules(symbols, cost, vectorised, lsr_free=lambda symbol: False) -> list:
    """(kernel symbols, whether LLVM vectorises them, whether it reduces their loops' strength) of
    each module to compile `symbols` in, costliest first, as the builders take them: the kernels
    LLVM vectorises dealt into modules of about the same estimated `cost`, each given to the
    builder's share of least cost so far, then the kernels on codegen's own vectors (`vectorised`)
    dealt onto the shares, so that every share, one module per pipeline, costs about the same (not
    each pipeline's modules apart: a builder would then finish its cheap module's share and the O3
    module after it, alone); of those, the share of least cost takes the `lsr_free` ones into a
    module without loop strength reduction where the costliest share is then cheaper (`_lsr_free`)."""
    totals = [0.0] * shares(symbols)
    found = []  # (estimated cost, symbols, whether LLVM vectorises them, whether LSR runs)
    others = [symbol for symbol in symbols if not vectorised(symbol)]
    for group in _deal(others, cost, [0.0] * shares(others)):
        least = totals.index(min(totals))
        totals[least] += sum(map(cost, group))
        found.append((sum(map(cost, group)), group, True, True))
    lanes = [symbol for symbol in symbols if vectorised(symbol)]
    dealt = list(totals)
    groups = _deal(lanes, cost, dealt)
    free = _lsr_free(lanes, cost, lsr_free, totals)
    if free is not None and max(free[1]) < max(dealt):
        groups, dealt = free
    for group, total, start in zip(groups, dealt, totals):
        found.append((total - start, group, False, not group or not all(map(lsr_free, group))))
    found.sort(key=lambda module: module[0], reverse=True)
    return [(group, vectorise, lsr) for _, group, vectorise, lsr in found if group]


def _lsr_free(symbols, cost, lsr_free, totals):
    """(groups, the shares' estimated costs after them) where the share of least cost so far
    (`totals`) takes the `lsr_free` symbols, costliest first, that keep it at most the shares'
    mean (at WITHOUT_LSR_COST of their estimate), and the others are dealt onto the other shares;
    None where there is one share."""
    if len(totals) < 2:
        return None
    least = totals.index(min(totals))
    after, free = list(totals), []
    unplaced = sum(map(cost, symbols))
    for symbol in sorted(filter(lsr_free, symbols), key=cost, reverse=True):
        cheaper = WITHOUT_LSR_COST * cost(symbol)
        if len(after) * (after[least] + cheaper) <= sum(after) + cheaper + unplaced - cost(symbol):
            free.append(symbol)
            after[least] += cheaper
            unplaced -= cost(symbol)
    rest = [symbol for symbol in symbols if symbol not in free]
    others = after[:least] + after[least + 1:]
    groups = _deal(rest, cost, others)
    return groups[:least] + [free] + groups[least:], others[:least] + [after[least]] + others[least:]


def _deal(symbols, cost, totals) -> list:
    """`symbols` in len(totals) groups, costliest first, each to the group of least estimated
    `cost` so far (`totals`: each group's cost before, updated)."""
    groups = [[] for _ in totals]
    for symbol in sorted(symbols, key=cost, reverse=True):
        least = totals.index(min(totals))
        totals[least] += cost(symbol)
        groups[least].append(symbol)
    return groups
