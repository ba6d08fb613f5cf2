"""Which matrix products fusion hands to BLAS, and how BLAS reads an operand in place."""


def gemm_pays(extents):
    """Whether a product (loops batch..., m, n | k) is worth a BLAS call: not when empty, nor with one
    row or one column (m or n of 1), which as a loop nest is a row or column reduction that
    vectorises, where OpenBLAS's sgemm does not use its gemv (one thread, load 6-7: 4096x1000 @
    1000x1 2.0-4.3 ms as sgemm, 0.65-0.76 as a loop nest, PyTorch's gemv 0.74-0.83; 1x4096 @
    4096x1000 1.8-2.7 -> 1.0-1.4 ms, PyTorch 0.54-1.1), nor with a k of 1: an outer product, which
    as a loop nest is elementwise and splits over the threads where sgemm (too few rows to cut) ran
    on one (Linear 1x1024x1024's weight gradient; that step 0.51 -> 0.22-0.29 ms at 2 threads, load ~5)."""
    return 0 not in extents and 1 not in extents[-3:-1] and extents[-1] != 1


def blas_layout(r, c, rows, cols):
    """(leading dimension, transposed) for BLAS to read a rows x cols matrix whose element (i, j)
    is at r*i + c*j: row-major (c == 1) or column-major (r == 1), with lines that do not overlap;
    None otherwise. Strides along axes of one element do not matter."""
    if (c == 1 or cols == 1) and (rows == 1 or r >= cols):
        return (r if rows > 1 else cols), False
    if (r == 1 or rows == 1) and (cols == 1 or c >= rows):
        return (c if cols > 1 else rows), True
    return None
