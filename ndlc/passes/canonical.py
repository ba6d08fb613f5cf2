"""canonical loops: each kernel's loops of one iteration dropped, so that equal loop nests compare equal.

A keepdims statistic (`x.sum((0,)).reshape((1, d))`) and the same statistic without the unit axis
(`x.sum((0,))`) are the same d elements, but fusion lowers an elementwise kernel over the first to
loops (i0<1 i1<d) and one over the second to (i0<d): merge.py would find their loops different and
keep them apart, so how a program was spelled would decide its kernels. A loop of one iteration
adds nothing (its variable is always 0): dropping it, and its coefficients from every access,
leaves every element where it was. Runs between lowering and merging (fusion.fuse).
"""
from dataclasses import replace

from ..ir.kernel import Phase


def canonical_loops(program):
    """`program` with the unit loops of its kernels dropped; returns it."""
    program.kernels = [_without_unit_loops(kernel) for kernel in program.kernels]
    return program


def _without_unit_loops(kernel):
    """`kernel` over its loops of more than one iteration. A reduction keeps one inner loop (a
    reduce phase reduces over at least one); a BLAS call keeps its loops (the call's matrices are
    laid out over them)."""
    extents, outer = kernel.extents, kernel.outer
    if kernel.gemm is not None or 1 not in extents or 0 in extents:
        return kernel
    kept_outer = tuple(n for n in extents[:outer] if n != 1)
    kept_inner = tuple(n for n in extents[outer:] if n != 1) or extents[outer:outer + 1]
    kept = kept_outer + kept_inner
    if kept == extents:
        return kernel

    def move(access):
        return access.reshape(extents, kept)
    loads = [load.with_access(move(load.access)) for load in kernel.loads]
    phases = [Phase(list(p.reductions), [replace(s, access=move(s.access)) for s in p.stores], p.inner)
              for p in kernel.phases]
    return replace(kernel, extents=kept, outer=len(kept_outer), loads=loads, phases=phases)
