"""Where a gemm kernel's rows are cut into pieces, each one BLAS call, for the threads of the
schedule pass (passes/schedule.py): at multiples of rows that keep one call's bits on the host's
OpenBLAS kernels, as few calls as balance the threads, and only where a cost model of the calls says
the split finishes sooner than one call on one thread."""

# A gemm's row pieces are multiples of this many rows: OpenBLAS's kernels work on tiles of rows
# (float32 12 on Haswell and Zen, float64 2; 4, 8 or 16 on other cores), and a piece boundary inside
# a tile sums that tile's rows in another order (measured: 97x64 @ 64x64 cut every 16 rows differs
# from one call in 60 rows of 97; every 12, 24 or 48 rows in none)
GEMM_ROWS = 48
# ... or of FINE_ROWS rows for float32 where numpy's OpenBLAS runs one of FINE_CORES' kernels
# (runtime/libraries.py blas_core) and every piece has at least FINE_MACS multiply-adds: such a piece
# takes sgemm's packed path, whose row tiles are 4 rows there (below FINE_MACS, SkylakeX's sgemm_direct
# and small-matrix kernels take over, each tiling rows its own way). Measured on Zen 4 (OpenBLAS 0.3.31,
# SkylakeX kernels): pieces of 4 or 16 rows gave one call's bits in all 93 random products (transposed
# operands or not) whose pieces reach FINE_MACS; float64's pieces of 16 rows did not (12, 24, 48 did).
# Pieces of 48 rows left a thread 528 of 1024 rows (1024^3 on 2 threads) and 144 of the MLP step's 256
FINE_CORES = ("skylakex",)
FINE_ROWS = 16
FINE_MACS = 28 * 512 * 512
# Where OpenBLAS runs other kernels than TILED_CORES' (SkylakeX's, or a core it does not name), a gemm
# is cut only where every piece reaches FINE_MACS: a smaller piece, or a smaller whole, may take the
# direct or small-matrix kernels, whose sums follow neither the tiles nor one call (on Zen 4: the
# sweep's 127x129 @ 129x65 in pieces of 48 rows differed from one call in 115 of its 127 rows; 5 of 60
# random float32 products split at 48 rows and 6 of 40 float64 ones differed). TILED_CORES' kernels
# keep one call's bits at every multiple of GEMM_ROWS (measured on Zen 3, OpenBLAS's 'Zen' kernels).
TILED_CORES = ("haswell", "zen")
# A gemm runs the fewest pieces whose busiest thread runs within this of the best any piece size
# reaches: each piece, one BLAS call, packs the right operand anew (1024^3 on 2 threads: 2 pieces
# of 528 rows 12.1 ms against 5 of 240 12.7, the MLP step 4.9-5.1 ms against 5.2-5.8)
GEMM_BALANCE = 1.05
# A gemm's rows are split only where a cost model of its BLAS calls says the busiest thread finishes
# sooner than one call on one thread: each call costs GEMM_CALL_US (packing the right operand, entering
# OpenBLAS) plus its multiply-adds at GEMM_MACS_PER_US (float32; float64 half as many), and the split
# pays REGION_US to open the team's region. Measured on one core in thread CPU time, December: one call
# of 127x129 @ 129x65 34.8 us, the same in 3 calls of at most 48 rows 38.4 (1.8 us a call more), of
# which ~4 us is the compiled call's Python and 29 its multiply-adds; REGION_US is the region of
# schedule.py's THRESHOLD
GEMM_CALL_US = 1.8
GEMM_MACS_PER_US = 36000
REGION_US = 2.0


def gemm_rows(gemm, blas_core):
    """(the multiple of rows a gemm's pieces are cut at, the fewest rows a piece may have): GEMM_ROWS
    and any on TILED_CORES; elsewhere pieces of FINE_MACS multiply-adds at least, cut at FINE_ROWS
    for float32 on FINE_CORES, else at GEMM_ROWS."""
    if blas_core in TILED_CORES:
        return GEMM_ROWS, 1
    unit = FINE_ROWS if blas_core in FINE_CORES and gemm.dtype == "f32" else GEMM_ROWS
    return unit, -(-FINE_MACS // (gemm.n * gemm.k))


def gemm_estimates(kernel, n, piece, threads):
    """(us of one BLAS call over all `n` rows on one thread, us of the busiest of `threads` threads
    taking pieces of `piece` rows in turn, the region opened), per index of the batch loops."""
    gemm = kernel.gemm
    rate = GEMM_MACS_PER_US / (2 if gemm.dtype == "f64" else 1)
    row = gemm.n * gemm.k / rate
    whole, rest = divmod(n, piece)
    rounds, left = divmod(whole, threads)
    calls = rounds + 1 if left or rest else rounds  # the busiest thread's calls (makespan's rows)
    return GEMM_CALL_US + n * row, REGION_US + calls * GEMM_CALL_US + makespan(n, piece, threads) * row


def fewest_calls(n, unit, threads, least=1):
    """The multiple of `unit` rows of `n` that makes the fewest pieces keeping the busiest thread
    within GEMM_BALANCE of the best any multiple reaches, of those the most even, two pieces at
    least, each of `least` rows at least (None where none is): each piece is a BLAS call, which
    packs the whole right operand again (320 rows on 2 threads: 144 x 2 + 32, 3 calls, not 48 x 6 + 32, 7, for the
    same 176 rows on the busiest thread; 1024 rows in pieces of 16: 512 x 2, not 528 + 496)."""
    sizes = [piece for piece in range(unit, n, unit) if n - (n - 1) // piece * piece >= least <= piece]
    if not sizes:
        return None
    best = min(makespan(n, piece, threads) for piece in sizes)
    return -min((-(-n // piece), makespan(n, piece, threads), -piece) for piece in sizes
                if makespan(n, piece, threads) <= GEMM_BALANCE * best)[2]


def makespan(n, piece, threads):
    """The most rows one of `threads` threads runs when they take pieces of `piece` rows of `n` in
    turn (each the next piece as it finishes one; the last piece, what remains, goes to a thread
    that ran fewer whole pieces, if any)."""
    whole, rest = divmod(n, piece)
    rounds, left = divmod(whole, threads)
    return piece * (rounds + 1) if left else piece * rounds + rest
