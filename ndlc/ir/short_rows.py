"""Rows side by side: a row reduction over short rows (passes/schedule.py SHORT_ROW) runs as a
'rows' kernel whose block holds whole rows, one per lane; decided here once for the schedule, the
kernel's text and codegen (codegen/llvm_rows.py)."""
from .scalar import PRIMITIVES, leaves, postorder


def along_rows(kernel) -> bool:
    """Whether every load a kernel's reductions read moves along its one inner loop by 0 or 1
    element (a row reduction: softmax's, logsumexp's, a row sum's)."""
    used = {n for r in kernel.reductions for n in leaves(r.body) if isinstance(n, int)}
    return kernel.outer == len(kernel.extents) - 1 and bool(used) \
        and all(kernel.loads[n].access.form.coeffs[-1] in (0, 1) for n in used)


def side_by_side(kernel) -> bool:
    """Whether a 'rows' kernel's block holds whole rows side by side, one per lane (where a 'rows'
    kernel's own reductions read strided): each lane gathers its row's elements and sums them in
    the row's order, with no fold across lanes (float32 only, as the schedule chooses it)."""
    return kernel.strategy == "rows" and along_rows(kernel) and all(r.dtype == "f32" for r in kernel.reductions)


def polynomial(kernel) -> bool:
    """Whether some expression of the kernel calls a mathlib polynomial (exp, log, tanh...): per row
    on codegen's own order a scalar one (a logsumexp's log), side by side one per lane."""
    return any(e.prim in PRIMITIVES and PRIMITIVES[e.prim].llvm[0].startswith("mathlib.")
               for _, expr, _ in kernel.expressions() for e in postorder(expr))
