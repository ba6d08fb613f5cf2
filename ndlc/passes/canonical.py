"""canonical loops: each kernel's loops of one iteration dropped, so that equal loop nests compare
equal (before merging); then each reduction's loops reordered so that memory runs along the last
ones, and its outer loops, and its inner loops, merged where memory runs on across them (after
merging, before the schedule).

A keepdims statistic (`x.sum((0,)).reshape((1, d))`) and the same statistic without the unit axis
(`x.sum((0,))`) are the same d elements, but fusion lowers an elementwise kernel over the first to
loops (i0<1 i1<d) and one over the second to (i0<d): merge.py would find their loops different and
keep them apart, so how a program was spelled would decide its kernels. A loop of one iteration
adds nothing (its variable is always 0): dropping it, and its coefficients from every access,
leaves every element where it was. Runs between lowering and merging (fusion.fuse).

A sum over the first axis of [256, 257, 63] reduces over loops (i0<257 i1<63 | i2<256): the
schedule's blocks run along the last outer loop alone, 63 outputs each across 256 far-apart slabs,
3.5x slower than the same data as [256, 16191]. Where every access of every phase (loads, stores,
guards) steps by a loop's coefficient times its extent in the loop before, the two loops are one
loop over their product (`Access.reshape`): (i0<16191 | i1<256). Each output sums the same
elements in the same order, so results are unchanged bit for bit. Inner loops merge alike: a sum
over (0, 2, 3) of NCHW (BatchNorm2d's statistics, a conv's bias gradient) or over (2, 3) reads
each plane as rows of W, whose short vector loops and tails cost 6x a loop along the whole plane
(sum over (2, 3) of [64, 16, 28, 28], one thread: 0.295 -> 0.049 ms); the sum's vector partials
then group along the plane, so it changes by rounding (a max not at all). Before merging, a
reduction over a permuted view gets its loops reordered so that a loop memory runs along is the
last outer loop (the 'rows' blocks) or the innermost (`_contiguous_last`): `x.permute((0, 2, 1))
.sum((1, 2))` of [64, 256, 256] read each column down 256 rows, 140 ms, and reads x in order,
0.4 ms. Runs on the merged kernels (jit/pipeline.py), so that merging and the permuted-store
folds still see the loops as lowered. Last, an elementwise kernel that reads across the loop it
stores along (a transpose) gets the loop its load steps by one element cut into blocks of a cache
line, the block innermost (`_transpose_blocked`): a [128, 512] transpose read 2 KiB apart at every
step, 146 us, and reads a line at a time, 22 us; each element as before, bit for bit.
"""
from dataclasses import replace

from ..ir.kernel import Phase
from ..ir.kernel_leaves import Load
from ..ir.scalar import leaves
from ..ir.types import numpy_dtype
from ..ir.tiles import L1_SETS, reordered
from .schedule import ROWS_MIN


def canonical_loops(program):
    """`program` with the unit loops of its kernels dropped; returns it."""
    program.kernels = [_without_unit_loops(kernel) for kernel in program.kernels]
    return program


def merged_outer_loops(program):
    """`program` with each reduction's loops ordered so that a strided one is not last where a
    contiguous one can be (`_contiguous_last`), then its adjacent loops merged where every access
    runs on across them; returns it."""
    program.kernels = [_transpose_blocked(_outer_loops_merged(_contiguous_last(kernel))) for kernel in program.kernels]
    return program


TRANSPOSE_BLOCK = 64  # bytes of a transposing load's rows read at a time: a cache line
L1_WAYS = 8  # lines an L1 set holds (32 KiB, 8 ways: Zen 3 and 4, Skylake)
L1_ALIAS = 4096  # bytes apart at which loads fall in one L1 set (64 sets of 64-byte lines)


def _transpose_blocked(kernel):
    """An elementwise kernel that stores along its last loop and loads across it (a transpose:
    a load whose step along the last loop is a row, while an earlier loop steps it by one element)
    with that earlier loop cut into blocks of a cache line, the block innermost: the loads then
    read a line at a time, the stores write a line's worth of rows side by side (fewer where those
    rows' lines would crowd one L1 set: _block). Each element is
    computed as before: bit for bit. Not a scan step's copy (the schedule gives a copy the
    decisions of the copy before, whose loops must match), nor a guarded access."""
    extents, last = kernel.extents, len(kernel.extents) - 1
    if kernel.reductions or kernel.gemm is not None or kernel.step or last < 1 or 0 in extents \
            or extents[last] < TRANSPOSE_BLOCK // 4:
        return kernel
    accesses = [load.access for load in kernel.loads] + [s.access for s in kernel.stores]
    if any(a.guards or a.step != 1 for a in accesses) or any(s.access.form.coeffs[last] != 1 for s in kernel.stores):
        return kernel
    for load in kernel.loads:
        coeffs, block = load.access.form.coeffs, TRANSPOSE_BLOCK // numpy_dtype(load.dtype).itemsize
        across = next((v for v in range(last) if coeffs[v] == 1 and extents[v] % _block(block, kernel.stores, v) == 0),
                      None)
        if across is None:
            continue
        block = _block(block, kernel.stores, across)
        if block > 1 and abs(coeffs[last]) >= block:
            cut = extents[:across] + (extents[across] // block, block) + extents[across + 1:]
            blocked = _reshaped(kernel, cut, len(cut))
            return reordered(blocked, [v for v in range(len(cut)) if v != across + 1] + [across + 1])
    return kernel


def _block(block, stores, across):
    """The rows a transpose's block writes side by side: `block`, halved while the stores' lines
    of those rows (their step along loop `across` apart) fall more than L1_WAYS to an L1 set, where
    they evict each other before the block's next element (a (32, 32, 32, 32) permute whose rows
    are 4 KiB apart, 16 rows a block 6.1 ms, 8 rows 1.0: one thread, NDLC_PROFILE); at least 1."""
    def crowded(rows):
        sets = [v * abs(s.access.form.coeffs[across]) * numpy_dtype(s.dtype).itemsize // 64 % L1_SETS
                for s in stores for v in range(rows)]
        return max(sets.count(k) for k in sets) > L1_WAYS
    while block > 1 and crowded(block):
        block //= 2
    return block


def aliased_transpose(a, b) -> str:
    """Why merging (passes/merge.py) keeps map `a` apart from reduction `b` ('' where it need not):
    a transpose reading each element into the L1 set of the one before (L1_ALIAS apart), which
    alone is blocked a line at a time (_transpose_blocked) and in a reduction's loops is not (a
    32x32x32x32 adjoint copied for a weight gradient's tiles: 3.8 ms merged, 0.4 alone)."""
    last = len(a.extents) - 1
    blocked = b.reductions and not a.reductions and a.extents and _transpose_blocked(a) is not a
    for load in a.loads if blocked else ():
        coeffs = load.access.form.padded(last + 1).coeffs if isinstance(load, Load) else (0,) * (last + 1)
        step = abs(coeffs[last]) * numpy_dtype(load.dtype).itemsize
        if step and step % L1_ALIAS == 0:
            return f"a transpose reading %{load.buffer} {step} bytes apart along its last loop stays apart (blocked)"
    return ""


def _contiguous_last(kernel):
    """`kernel` with, where some load reads strided along its innermost loop, a loop that every load
    steps through by one element or not at all moved last among the outer loops (the 'rows'
    schedule's block then reads contiguous memory, and each output still sums in its order: bit for
    bit; not a loop shorter than the schedule's ROWS_MIN, which would leave 'rows'), and likewise
    innermost among the inner loops (the loop then vectorises along memory; a sum's partials group
    differently: rounding). Not a BLAS call, a scan step's copy (see `_outer_loops_merged`) or a
    full reduction."""
    extents, outer = kernel.extents, kernel.outer
    if kernel.gemm is not None or kernel.step or not kernel.reductions or not outer or 0 in extents:
        return kernel
    coeffs = [load.access.form.padded(len(extents)).coeffs for load in kernel.loads]
    summed = {n for r in kernel.reductions for n in leaves(r.body) if isinstance(n, int)}
    order = list(range(len(extents)))
    for first, end in ((0, outer), (outer, len(extents))):
        if not any(abs(c[-1]) > 1 for c in coeffs):
            break
        # the outer loops for the reductions' loads: an elementwise phase merged in per outer point
        # (an NHWC conv nest's adjoint copied beside it) must not move its tile's channels off the last loop
        reads = [c for n, c in enumerate(coeffs) if n in summed] if end == outer else coeffs
        if max(abs(c[end - 1]) for c in reads or coeffs) == 1:  # contiguous already
            continue
        moved = next((v for v in reversed(range(first, end - 1))
                      if max(abs(c[v]) for c in coeffs) == 1 and (end == len(extents) or extents[v] >= ROWS_MIN)), None)
        if moved is None:
            continue
        order = [v for v in range(len(extents)) if v != moved]
        order.insert(end - 1, moved)
        kernel = reordered(kernel, order)
        coeffs = [[c[v] for v in order] for c in coeffs]
    return kernel


def _without_unit_loops(kernel):
    """`kernel` over its loops of more than one iteration. A reduction keeps one inner loop (a
    reduce phase reduces over at least one); a BLAS call keeps its loops (the call's matrices are
    laid out over them)."""
    extents, outer = kernel.extents, kernel.outer
    if kernel.gemm is not None or kernel.scatter is not None or 1 not in extents or 0 in extents:
        return kernel
    kept_outer = tuple(n for n in extents[:outer] if n != 1)
    kept_inner = tuple(n for n in extents[outer:] if n != 1) or extents[outer:outer + 1]
    return _reshaped(kernel, kept_outer + kept_inner, len(kept_outer))


def _outer_loops_merged(kernel):
    """`kernel` with each run of outer loops, and each run of inner loops, that every access
    addresses as one loop merged into it. A full reduction (no outer loop: a loss) keeps its inner
    loops as lowered: its sum's vector partials group along them, and a scan's stacked results
    run on across the steps where the unrolled steps' results do not (tests/jit/test_scan_steps.py
    holds the two bit for bit equal). Only reductions (an elementwise kernel's contiguous loops
    run as one in codegen already, codegen/llvm_vector.py); not a BLAS call (its matrices are laid
    out over its loops) nor a scan step's copy (the schedule gives a copy the decisions of the copy
    before, whose loops must match)."""
    extents, outer = kernel.extents, kernel.outer
    if kernel.gemm is not None or kernel.step or not kernel.reductions or 0 in extents:
        return kernel
    accesses = [load.access for load in kernel.loads] + [s.access for p in kernel.phases for s in p.stores]
    merged_outer = _merged_runs(extents, 0, outer, accesses)
    inner = _merged_runs(extents, outer, len(extents), accesses) if outer else extents[outer:]
    return _reshaped(kernel, merged_outer + inner, len(merged_outer))


def _merged_runs(extents, first, end, accesses):
    """The extents of loops first..end-1 of `extents`, each run of them that every access steps
    through as one loop (`Access.reshape`) merged into one."""
    if end - first < 2:
        return extents[first:end]
    groups = [extents[first]]
    for v in range(first + 1, end):
        pair = extents[:v - 1] + (extents[v - 1] * extents[v],) + extents[v + 1:]
        if all(access.reshape(extents, pair) is not None for access in accesses):
            groups[-1] *= extents[v]
        else:
            groups.append(extents[v])
    return tuple(groups)


def _reshaped(kernel, extents, outer):
    """`kernel` over loops of `extents` (the same points in row-major order, `outer` of them outer),
    every access regrouped; `kernel` itself where the loops stay as they are."""
    if extents == kernel.extents:
        return kernel

    def move(access):
        return access.reshape(kernel.extents, extents)
    loads = [load.with_access(move(load.access)) for load in kernel.loads]
    phases = [Phase(list(p.reductions), [replace(s, access=move(s.access)) for s in p.stores], p.inner)
              for p in kernel.phases]
    return replace(kernel, extents=extents, outer=outer, loads=loads, phases=phases)
