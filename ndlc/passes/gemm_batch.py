"""gemm batches folded into rows: a gemm kernel whose batch items share the right operand and whose
left operand's rows run on from one item to the next is one BLAS call over all the items' rows.

`(16, 257, 100) @ (100, 63)` ran 16 calls of 257 rows, each packing the same right operand, the
batch loop split over the threads (4 pieces of 4 items); as one call of 4112 rows it packs it once
and the schedule cuts its rows (passes/gemm_pieces.py), as PyTorch folds such a product into one
mm. Only where one call's bits are each item's call's: on FINE_CORES' kernels where each item takes
the packed path (its rows reach `packed_rows`; float32: ~850 random products, none differed; float64
items of rows not a multiple of FINE_ROWS differed in 23 of 150, so those stay) and runs as one call,
not in `small_calls` (cut otherwise than the items, such calls sum some rows otherwise; the items'
own small calls ran faster than one packed call anyway, one core, CPU time, load ~5: 16 items of
257x100 @ 100x63 in 2 calls each 522 us against 665 folded), on TILED_CORES' where each item is a
multiple of GEMM_ROWS rows; elsewhere the batch loop stays."""
from dataclasses import replace

from ..ir.indexing import Access, Affine
from ..ir.kernel import Phase
from .gemm_pieces import FINE_CORES, FINE_ROWS, GEMM_ROWS, TILED_CORES, packed_rows, small_calls


def folded_gemm_batches(program, blas_core=""):
    """`program` with each foldable gemm kernel's last batch loop merged into its rows, repeatedly
    (see the module docstring); returns it."""
    program.kernels = [_folded(kernel, blas_core) for kernel in program.kernels]
    return program


def _folded(kernel, blas_core):
    """`kernel` with its batch loops folded into the gemm's rows while they fold."""
    while True:
        folded = _fold_last(kernel, blas_core)
        if folded is None:
            return kernel
        kernel = folded


def _fold_last(kernel, blas_core):
    """`kernel` with its last batch loop merged into the gemm's rows, or None where it cannot be:
    not a gemm, no batch loop, a scan step's copy (its loops must match the copy before), a right
    operand that moves with the batch, a left one whose rows do not run on across items, an
    epilogue access that does not regroup, or rows whose bits one call would change."""
    g, extents = kernel.gemm, kernel.extents
    batch = len(extents) - 2
    if g is None or batch < 1 or kernel.step or 0 in extents or not _same_bits(g, blas_core):
        return None
    a, b = (m.offset.form.padded(len(extents) + 1) for m in (g.a, g.b))
    if g.a.transposed or a.coeffs[batch - 1] != g.m * g.a.ld or b.coeffs[batch - 1] != 0:
        return None
    new = extents[:batch - 1] + (extents[batch - 1] * g.m, g.n)
    loads = [load.access.reshape(extents, new) for load in kernel.loads]
    stores = [[s.access.reshape(extents, new) for s in p.stores] for p in kernel.phases]
    if any(x is None for x in loads + [s for p in stores for s in p]):
        return None

    def dropped(matrix, form):
        return replace(matrix, offset=Access(Affine(form.coeffs[:batch - 1] + (0, 0, 0), form.const)))
    gemm = replace(g, a=dropped(g.a, a), b=dropped(g.b, b), m=new[-2])
    phases = [Phase(list(p.reductions), [replace(s, access=x) for s, x in zip(p.stores, xs)], p.inner)
              for p, xs in zip(kernel.phases, stores)]
    return replace(kernel, extents=new, outer=len(new), gemm=gemm, phases=phases,
                   loads=[load.with_access(x) for load, x in zip(kernel.loads, loads)])


def _same_bits(gemm, blas_core):
    """Whether one BLAS call over several items' rows sums each output as each item's own call does
    on `blas_core`'s kernels."""
    if blas_core in FINE_CORES:
        return gemm.m >= packed_rows(gemm) and not small_calls(gemm, blas_core) \
            and (gemm.dtype == "f32" or gemm.m % FINE_ROWS[gemm.dtype] == 0)
    return blas_core in TILED_CORES and gemm.m % GEMM_ROWS == 0
