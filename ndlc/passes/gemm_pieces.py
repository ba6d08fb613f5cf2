"""Where a gemm kernel's rows are cut into pieces, each one BLAS call, for the threads of the
schedule pass (passes/schedule.py): at multiples of rows that keep one call's bits on the host's
OpenBLAS kernels, as few calls as balance the threads, and only where a cost model of the calls says
the split finishes sooner than one call on one thread."""

# A gemm's row pieces are multiples of this many rows: OpenBLAS's kernels work on tiles of rows
# (float32 12 on Haswell and Zen, float64 2; 4, 8 or 16 on other cores), and a piece boundary inside
# a tile sums that tile's rows in another order (measured: 97x64 @ 64x64 cut every 16 rows differs
# from one call in 60 rows of 97; every 12, 24 or 48 rows in none)
GEMM_ROWS = 48
# ... or of FINE_ROWS[dtype] rows where numpy's OpenBLAS runs one of FINE_CORES' kernels (runtime/
# libraries.py blas_core) and every piece takes the path the whole call takes. There (OpenBLAS 0.3.31,
# SkylakeX kernels, on Zen 4; its cblas_sgemm, disassembled, calls no sgemm_direct) a call runs the
# small-matrix kernels where their permit allows (packed_rows), else the packed path. Pieces of 4 rows
# (float32) or 12 (float64; of 2, 4, 6 or 16 not) gave one call's bits in each of ~2500 random products
# (transposed operands or not) whose pieces all took the whole call's path; where the whole took the
# packed path and a piece the small kernels, half differed. (Pieces of 48 rows left a thread 528 of
# 1024 rows where 512 x 2 balance.)
FINE_CORES = ("skylakex",)
FINE_ROWS = {"f32": 4, "f64": 12}
# SkylakeX's small-matrix kernels' permit (kernel/x86_64/[sd]gemm_small_kernel_permit_skylakex.c, in
# OpenBLAS's column-major terms: a row-major call's rows are its N, a transposed right operand its
# transa): at most SMALL_MACS multiply-adds; a transposed right operand with a plain left one at most
# SMALL_OUTPUT outputs and SMALL_DEPTH reduced steps; float32's both transposed at least SMALL_TT_DEPTH
SMALL_MACS = 100 ** 3
SMALL_OUTPUT = 1200
SMALL_DEPTH = 32
SMALL_TT_DEPTH = 4
# Elsewhere than TILED_CORES' and FINE_CORES' kernels (a core OpenBLAS does not name, or one that
# may run sgemm_direct below FINE_MACS multiply-adds), a gemm is cut only where every piece reaches
# FINE_MACS: a smaller piece, or a smaller whole, may take the direct or small-matrix kernels, whose
# sums follow neither the tiles nor one call (on Zen 4: the sweep's 127x129 @ 129x65 in pieces of 48
# rows differed from one call in 115 of its 127 rows, its pieces taking the small-matrix kernels).
FINE_MACS = 28 * 512 * 512
# TILED_CORES' kernels keep one call's bits at every multiple of GEMM_ROWS (measured on Zen 3,
# OpenBLAS's 'Zen' kernels).
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
# Where SkylakeX's OpenBLAS would run a float32 gemm's whole call on its packed path, calls of fewer
# rows that each take its small-matrix kernels (no packing) ran faster on one core, where each call
# has SMALL_CALL_ROWS rows or more (thread CPU time, min of 7 x 100 calls, 3 alternations, load 1-5):
# 127x129 @ 129x65 25.0 -> 21.4 us in 2 calls of 64 rows, 255x129 @ 129x65 49.2 -> 43.8 in 3 of 88,
# 1000x77 @ 77x333 528 -> 490 in 28 of 36, 4096x100 @ 100x10 174 -> 125 in 5 of 820, 20 shapes with
# an operand transposed or not at 0.68-0.93 of the packed call, 30 random ones (16 to 2000 a side,
# plain, left or both transposed) cut as small_calls cuts them at 0.69-0.97 (median 0.86); in calls of
# 12 rows 0.84-1.02, of 4 1.13 (500^3). Not with a transposed right operand and a plain left one, whose small kernels take at
# most SMALL_OUTPUT outputs (127x129 @ (65x129)^T in 8 calls of 16 rows 1.19, 129x65 @ (127x65)^T in 17
# of 8 1.68), nor float64 (not measured).
SMALL_CALL_ROWS = 32


def gemm_rows(gemm, rows, blas_core):
    """(the multiple of rows a gemm of `rows` rows is cut at, the fewest rows a piece may have, why
    so few): GEMM_ROWS and any on TILED_CORES; FINE_ROWS on FINE_CORES, each piece on the whole
    call's path; elsewhere GEMM_ROWS and pieces of FINE_MACS multiply-adds at least."""
    if blas_core in TILED_CORES:
        return GEMM_ROWS, 1, ""
    if blas_core in FINE_CORES:
        packed = packed_rows(gemm)
        why = f"below which OpenBLAS's {blas_core} kernels take their small-matrix path, the whole call the packed one"
        return FINE_ROWS[gemm.dtype], packed if rows >= packed else 1, why
    return (GEMM_ROWS, -(-FINE_MACS // (gemm.n * gemm.k)),
            f"{FINE_MACS} multiply-adds, below which OpenBLAS's {blas_core or 'unnamed'} kernels may sum "
            "otherwise than one call")


def packed_rows(gemm):
    """The fewest rows of a gemm that SkylakeX's OpenBLAS runs on its packed path (fewer: its small-matrix
    kernels, as their permit says: SMALL_MACS)."""
    a, b, n, k = gemm.a.transposed, gemm.b.transposed, gemm.n, gemm.k
    if b and (k < SMALL_DEPTH if not a else gemm.dtype == "f32" and k < SMALL_TT_DEPTH):
        return 1
    rows = SMALL_MACS // (n * k) + 1
    return min(rows, SMALL_OUTPUT // n + 1) if b and not a else rows


def small_calls(gemm, blas_core):
    """The rows of each of the BLAS calls a gemm runs in, each on SkylakeX's small-matrix kernels,
    where its whole call would take the packed path and calls of SMALL_CALL_ROWS rows or more fit
    their permit (measured faster there: SMALL_CALL_ROWS), else 0 (one call). A call takes an even
    share of the rows (the fewest even number of calls that fit), rounded up to a multiple of FINE_ROWS,
    the last what remains, so that two threads taking them balance; the cut depends on the shape
    alone, so one and two threads sum alike (small-matrix calls cut elsewhere sum some rows otherwise)."""
    if blas_core not in FINE_CORES or gemm.dtype != "f32" or (gemm.b.transposed and not gemm.a.transposed):
        return 0
    unit, packed = FINE_ROWS[gemm.dtype], packed_rows(gemm)
    most = (packed - 1) // unit * unit
    if gemm.m < packed or most < SMALL_CALL_ROWS:
        return 0
    count = -(-gemm.m // most)
    count += count % 2
    even = -(-gemm.m // count)
    return -(-even // unit) * unit


def gemm_estimates(kernel, n, piece, threads):
    """(us of the BLAS calls over all `n` rows on one thread, one or `kernel.calls` rows each, us of
    the busiest of `threads` threads taking pieces of `piece` rows in turn, the region opened), per
    index of the batch loops."""
    gemm = kernel.gemm
    rate = GEMM_MACS_PER_US / (2 if gemm.dtype == "f64" else 1)
    row = gemm.n * gemm.k / rate
    whole, rest = divmod(n, piece)
    rounds, left = divmod(whole, threads)
    calls = rounds + 1 if left or rest else rounds  # the busiest thread's calls (makespan's rows)
    alone = -(-n // kernel.calls) if kernel.calls else 1
    return alone * GEMM_CALL_US + n * row, REGION_US + calls * GEMM_CALL_US + makespan(n, piece, threads) * row


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
