"""schedule: per kernel, the reduction strategy and which loop runs on several threads.

Reduction strategy (`Kernel.strategy`):
  - 'point': one point of the outer loops at a time, every phase in turn, reductions in registers
    (row sums, LayerNorm's and softmax's rows: any kernel whose reductions' loads step by 0 or 1
    along the innermost loop, so that loop vectorises and a row stays in cache between phases);
  - 'rows': where a reduction reads strided along the innermost loop (column sums, BatchNorm's
    statistics, matmul's right operand as a loop nest), the last outer loop runs in blocks whose
    outputs accumulate side by side, so the innermost loop runs along the block and vectorises
    (blocks of ROWS_BLOCK; of REGISTER_BLOCK, kept in registers, over short reduced loops; where
    each load is invariant along one of the last two outer loops, an outer product such as a direct
    convolution, a register tile of both: ir/tiles.py), each product of two loads added in a fused
    multiply-add (ir/tiles.py multiply_add); also maxima over short windows that step along the
    last outer loop (max pooling: `_windowed`), its outputs then codegen's lanes, windows gathered,
    and row reductions calling exp or log along short rows (SHORT_ROW), whole rows side by side,
    one per lane (ir/short_rows.py);
  - 'chunks': the same with one outer loop (BatchNorm1d's D) and a long first inner loop (its N):
    that loop is cut into CHUNKS fixed pieces whose partial results (scratch buffers) combine in
    order. Threads share the chunks, so each streams whole rows of memory: splitting the outer loop
    instead had two threads read halves of every row, slower than one thread (65536x256 column sums:
    3.8 ms on one thread, 8.4 on two). The sums are blocked, and the same for any thread count.

Threads: a kernel whose `work` (iterations times body cost) reaches THRESHOLD runs one non-reduced
loop (the outermost with at least as many iterations as threads, else the longest) cut into
PIECES_PER_THREAD pieces per thread, which the threads of one `ndlc_parallel` region (codegen/llvm_pool.py) take in turn
(codegen/llvm_calls.py): on a shared machine a thread that lost its core holds
back one piece, not half the kernel; pieces are smaller where that balances the threads better
(BALANCE). Each output element is computed by one thread in the serial order, so results equal the
serial code's bit for bit. A gemm kernel splits its batch loop, or its
rows in pieces of a multiple of rows that keep one BLAS call's bits on the host's OpenBLAS kernels
(passes/gemm_pieces.py; on SkylakeX's, only pieces on the whole call's path, or a float32 gemm's
small-matrix calls where one call would pack, its pieces then; elsewhere than Haswell's and Zen's,
only pieces that are large) (the last
piece is what remains, so the pieces,
taken in turn, balance: 400 rows are 192 x 2 + 16, not 144 x 2 + 112): each piece is one BLAS
call, the fewest calls that balance as well as any (GEMM_BALANCE), and only where a cost model of
those calls (GEMM_CALL_US) says the busiest thread finishes before one call on one thread would.
Kernels without an outer loop (full reductions) and small ones stay serial; the dump says which
and why. A kernel that moves more than the cache holds writes its large outputs with streaming
stores (passes/streaming.py), the dump saying which and why.

One thread pool: a program that calls BLAS holds OpenBLAS to one thread while it runs
(runtime/libraries.py), so OpenBLAS's workers and ndlc's team never compete for the cores (they
did: OpenBLAS's idle workers spin ~0.1 s after each call, and a program that mixed the two pools
on 2 cores ran its MLP step in 65 ms instead of 10.6), and a gemm sums the same way at any budget.

CUDA (`schedule_gpu`): every kernel gets blocks of threads over its outer points (Kernel.gpu):
  - elementwise kernels (no inner loops), a gemm's epilogue, and reductions of at most
    SMALL_INNER elements per point (a convolution's input gradient): one point per thread,
    grid-stride; VECTOR consecutive points per thread with float4 loads and stores where every
    access is unguarded float32, contiguous along the last loop and aligned;
  - row reductions (loads contiguous or broadcast along the reduced loops: LayerNorm, softmax,
    row sums): `lanes` threads per row, the fastest-varying thread index along the row, so a warp
    reads a row's consecutive elements and combines with warp shuffles; short rows share a block;
  - column reductions (the reduced loop strided: BatchNorm's statistics, column sums): a `tile`
    of consecutive outer points per block, the fastest thread index along them, so a warp reads
    consecutive elements of one row; the lanes of each point combine through a shared-memory tree;
  - where the outer points give too few blocks for the GPU (BatchNorm over 65536 rows of 1024
    columns: 32 blocks of 32 columns; a full sum: 1 block), the reduced loops are cut into chunks:
    one launch computes every chunk's partials (scratch buffers), a second combines them in chunk
    order and makes the per-point stores, a third the stores over the inner loops.
The combination order is fixed by the schedule, so results do not depend on how blocks are run.
"""
import math
from dataclasses import dataclass

from ..env import vector_registers
from ..errors import UnsupportedError
from ..ir.kernel import Buffer, BufferKind, Combine, GpuLaunch, Program, Split, Strategy
from ..ir.kernel_leaves import Acc, Load
from ..ir.scalar import cost, leaves
from ..ir.short_rows import along_rows, polynomial, side_by_side
from ..ir.tiles import ragged_problem, register_tile, reordered, tile_guards
from .gemm_pieces import fewest_calls, gemm_estimates, gemm_rows, makespan, small_calls
from .streaming import choose_streams

# Work from which 2 threads beat 1 (measured, 2 cores: x+y breaks even near 2**16, x+y, exp(x)*y and
# row sums are 10-15% faster at 2**17; a region cost ~2 us with libgomp's spin-waiting, ndlc's team replacing it)
THRESHOLD = 1 << 17
ROWS_MIN = 4  # shortest output row worth accumulating in place ('rows' strategy)
ROWS_BLOCK = 4096  # 'rows': outputs accumulated side by side (a row of them streams through memory)
# ... or this many, where they divide the last outer loop, the reduced loops are at most REGISTER_INNER
# steps (a convolution's taps) and no load is guarded (a guard splits each block's loop in three): LLVM
# then keeps the block's accumulators in vector registers across the reduced loops instead of loading
# and storing them at every step (LeNet conv1 over wide rows, one thread: 3.6 -> 1.7 ms; blocks of 64
# or 128 stayed in memory)
REGISTER_BLOCK = 32
REGISTER_INNER = 256
# a window's innermost loop shorter than this (a vector of float32) runs its maxima side by side
# ('rows', `_windowed`): max_pool k3 s2 over 32x32x33x33 1.1 -> 0.22 ms on one thread
WINDOW_ROW = 8
# A float32 reduction along rows shorter than SHORT_ROW (its one inner loop) that calls a mathlib
# polynomial (a logsumexp's exp and log) runs 'rows' with whole rows side by side, SIDE_BY_SIDE per
# block, one per lane (ir/short_rows.py): a lane gathers its row and sums it in order, with no masks
# and no fold across lanes, and a polynomial runs once per 8 rows, not once per row. Where a phase
# stores along the rows (softmax: its exponentials kept for the block, its output transposed into
# rows), only rows shorter than SHORT_STORED_ROW: softmax 4000xN, one thread, CPU ms, 'point' ->
# side by side: N 20 0.089 -> 0.048, 32 0.075 -> 0.073, 40 0.089 -> 0.094, 48 0.100 -> 0.116,
# 77 0.20 -> 0.19, 80 0.16 -> 0.19 (a row of whole vectors is 'point''s best case).
# Plain sums (row sums, LayerNorm) stay 'point': their contiguous vectors win.
# Measured (CPU ms, one thread, load ~6, docs/ARCHITECTURE.md): SoftmaxLoss 65536x10 2.6 -> 0.8-1.0,
# 65536x31 3.4 -> 1.9, 4096x100 0.47 -> 0.41, 4096x128 even, 2048x200 0.37 -> 0.41; softmax 65536x10
# 1.33 -> 1.02, 8192x30 0.35 -> 0.40-0.43; row sums 65536x10 0.08 -> 0.10
SHORT_ROW = 128
SHORT_STORED_ROW = 33
SIDE_BY_SIDE = 8  # float32 lanes of an AVX2 vector: the fewest rows side by side, and a block of them
WIDE_SIDE_BY_SIDE = 16  # ... of an AVX-512 vector: a block where the host has it (env.vector_registers),
# twice the rows an exp's latency-bound loop steps (each lane sums its row alone: the same bits):
# CPU ms, one thread, Zen 4: SoftmaxLoss 1000x77 0.056 -> 0.045, 590x30 0.025 -> 0.018
CHUNKS = 16  # pieces of the reduced loop of a 'chunks' kernel
CHUNKS_MIN_ROWS = 256  # shortest reduced loop worth cutting into chunks
PIECES_PER_THREAD = 2  # pieces of a split loop per thread, taken in turn (measured: docs/ARCHITECTURE.md)
BALANCE = 1.05  # a split loop's pieces: the largest whose busiest thread runs at most this over an even share
FLOAT_BYTES = {"f32": 4, "f64": 8}  # the dtypes a register tile accumulates


def schedule(program: Program, threads=1, blas_core="") -> Program:
    """Chooses each kernel's reduction strategy and the loop it splits over `threads` threads (or
    why it runs serially); returns `program`. `blas_core`: the core numpy's OpenBLAS runs kernels for
    (runtime/libraries.py), which says where a gemm's rows may be cut (passes/gemm_pieces.py). A scan step's
    copy of a body kernel (`Kernel.origin`) takes the decisions of the copy before it: nothing here
    reads where a copy's buffers lie."""
    decided = {}  # id(body kernel) -> its copy scheduled last
    for kernel in program.kernels:
        body = kernel.body_kernel()
        same = body is not None and decided.get(id(body))
        if same:
            for name in DECISIONS:
                setattr(kernel, name, getattr(same, name))
            continue
        _schedule(kernel, program, threads, blas_core)
        kernel.streams = choose_streams(kernel, program.buffers)
        if body is not None:
            decided[id(body)] = kernel
    return program


DECISIONS = ("strategy", "split", "serial_why", "chunks", "scratch", "block", "tile", "calls", "streams")  # the fields set here


def _schedule(kernel, program, threads, blas_core):
    """Chooses `kernel`'s strategy and split (its scratch buffers added to `program`)."""
    kernel.strategy = _strategy(kernel)
    kernel.split, kernel.serial_why = None, _serial_why(kernel, threads)
    kernel.calls = small_calls(kernel.gemm, blas_core) if kernel.gemm else 0
    if kernel.strategy == Strategy.CHUNKS:
        kernel.chunks = min(CHUNKS, kernel.extents[1])
        kernel.scratch = tuple(_scratch(program, f"{kernel.name}.partials{k}", (kernel.chunks, kernel.extents[0]),
                                        r.dtype) for k, r in enumerate(kernel.reductions))
        if not kernel.serial_why:
            kernel.split = Split(kernel.outer, threads)
        return
    if kernel.strategy == Strategy.ROWS and side_by_side(kernel):
        kernel.block = side_by_side_block()
    elif kernel.strategy == Strategy.ROWS:
        kernel.block = _rows_block(kernel)
        _tile_order(kernel, program)
    if not kernel.serial_why:
        kernel.split, kernel.serial_why = _split(kernel, threads, blas_core)
    if kernel.strategy == Strategy.ROWS and not side_by_side(kernel):
        kernel.tile, kernel.block = _tile(kernel, program) or (0, kernel.block)


def _rows_block(kernel) -> int:
    """Outputs a 'rows' kernel accumulates side by side: REGISTER_BLOCK or ROWS_BLOCK (see there)."""
    unguarded = kernel.extents[kernel.outer - 1] % REGISTER_BLOCK == 0 and not any(x.access.guards for x in kernel.loads)
    return REGISTER_BLOCK if unguarded and math.prod(kernel.extents[kernel.outer:]) <= REGISTER_INNER else ROWS_BLOCK


def _tile(kernel, program):
    """(R, C) of a register tile over the last two outer loops (ir/tiles.py) where every load the
    reductions read is unguarded (or guarded as a tile may read it: tile_guards) and invariant along
    one of them, contiguous or invariant along the last, and the split loop (if any) comes before
    both; else None. A ragged tile (C does not divide the last loop) only where its last block may
    compute whole (ir/tiles.py ragged_problem)."""
    rows, last = kernel.outer - 2, kernel.outer - 1
    if rows < 0 or (kernel.split is not None and kernel.split.loop >= rows) or not kernel.reductions:
        return None
    used = {n for r in kernel.reductions for n in leaves(r.body) if isinstance(n, int)}
    for load in (kernel.loads[n] for n in used):
        coeffs = load.access.form.coeffs
        if not tile_guards(load.access, rows, last) or coeffs[last] not in (0, 1) or (coeffs[rows] and coeffs[last]):
            return None
    if any(r.dtype not in FLOAT_BYTES for r in kernel.reductions):
        return None
    itemsize = max(FLOAT_BYTES[r.dtype] for r in kernel.reductions)
    tile = register_tile(kernel.extents[rows], kernel.extents[last], itemsize, ragged=True)
    if tile is not None and ragged_problem(kernel, program.buffers, tile[1]):
        return None
    return tile


def _tile_order(kernel, program):
    """Moves an outer loop next to the last where the loops as they are give no register tile and
    that gives one (a row_conv's (n, co, ho, wo) run as (n, ho, co, wo): channels x pixels, each
    input vector serving every channel): the outer points are independent, so their order changes
    no result. Not a scan step's copy, which takes the decisions of the copy before it."""
    outer = kernel.outer
    if outer < 3 or kernel.step or _tile(kernel, program) is not None:
        return
    for moved in reversed(range(outer - 2)):
        order = [m for m in range(outer - 1) if m != moved] + [moved, outer - 1]
        order += list(range(outer, len(kernel.extents)))
        candidate = reordered(kernel, order)
        if _tile(candidate, program) is not None:
            kernel.extents, kernel.loads, kernel.phases = candidate.extents, candidate.loads, candidate.phases
            return


def _split(kernel, threads, blas_core):
    """(the Split of a kernel worth running on `threads` threads, or None and why not)."""
    splittable = kernel.outer_extents[:len(kernel.extents) - 1] if kernel.gemm else kernel.outer_extents
    longest = splittable.index(max(splittable))
    loop = next((i for i, n in enumerate(splittable) if n >= threads), longest)
    n = splittable[loop]
    rows = kernel.gemm and loop == len(kernel.extents) - 2
    unit, least, why = gemm_rows(kernel.gemm, n, blas_core) if rows else (1, 1, "")
    if n // unit < 2:
        return None, f"{n} rows: fewer than two pieces of {unit} (BLAS's tiles)"
    if unit == 1:
        piece = _balanced(n, max(1, n // (threads * PIECES_PER_THREAD)), threads)
    else:
        piece = kernel.calls or fewest_calls(n, unit, threads, least)  # calls: a thread takes them whole
        if piece is None:
            return None, f"{n} rows: no pieces of {least} rows or more ({why})"
        serial, split = gemm_estimates(kernel, n, piece, threads)
        epilogue = work(kernel) - math.prod(kernel.extents[:-2]) * kernel.gemm.m * kernel.gemm.n * kernel.gemm.k
        if serial <= split and epilogue < THRESHOLD:  # (an epilogue worth splitting alone is split)
            calls = f"its calls of {kernel.calls} rows" if kernel.calls else "one BLAS call"
            return None, (f"{calls} on one thread, estimated at {serial:.1f} us, against {split:.1f} us "
                          f"for the busiest of {threads} threads taking pieces of {piece} rows")
    return Split(loop, min(threads, -(-n // piece)), piece), ""


def _balanced(n, most, threads):
    """The largest piece of at most `most` iterations of `n` that keeps the busiest thread within
    BALANCE of the most even share, ceil(n / threads), which pieces of 1 always reach (10 rows on
    2 threads: 10 pieces of 1, not 5 of 2, which leave one thread 3 pieces to the other's 2)."""
    even = -(-n // threads)
    return next(piece for piece in range(most, 0, -1) if makespan(n, piece, threads) <= BALANCE * even)


SMALL_INNER = 16  # reductions this short run in one thread each (lanes would mostly idle)
VECTOR = 4  # elements an elementwise thread moves at once where aligned (float4)
COLUMN_TILE = 32  # column reductions: consecutive outputs a warp reads, 32 x 4 B = one 128-byte line;
# the parallelism a narrower tile would add comes from cutting the reduced loop into chunks instead


@dataclass(frozen=True)
class GpuTarget:
    """What the CUDA schedule needs of a device: its multiprocessors and the threads per block
    (the host emulation of the tests runs small blocks of the same code)."""
    multiprocessors: int = 132
    block_threads: int = 256
    blocks_per_multiprocessor: int = 8  # grid-stride beyond this many waves of blocks
    chunk_elements: int = 4096  # fewest reduced elements per chunk when a reduction is cut into chunks

    def __post_init__(self):
        threads = self.block_threads
        if threads < 32 or threads & (threads - 1) or threads > 1024:
            raise UnsupportedError(f"GpuTarget: block_threads={threads}; the CUDA schedule needs a power of two "
                                   "from 32 to 1024 (whole warps, and the shared-memory trees halve the block)")


def schedule_gpu(program: Program, target: GpuTarget = GpuTarget()) -> Program:
    """Chooses each kernel's CUDA blocks (Kernel.gpu, see the module docstring); returns `program`."""
    threads = target.block_threads
    cap = target.multiprocessors * target.blocks_per_multiprocessor
    for kernel in program.kernels:
        kernel.strategy, kernel.split, kernel.serial_why = Strategy.GEMM if kernel.gemm else Strategy.POINT, None, ""
        points = math.prod(kernel.extents if kernel.gemm else kernel.outer_extents)
        inner = 1 if kernel.gemm else math.prod(kernel.extents[kernel.outer:])
        rows = False
        if inner == 1 or not kernel.reductions:
            tile, lanes = threads, 1
            why = "gemm epilogue, a thread per element" if kernel.gemm else "elementwise, a thread per point"
        elif inner <= SMALL_INNER and points >= threads:
            tile, lanes = threads, 1
            why = f"short reductions ({inner} elements): a thread per point loops over them in registers"
        elif _strided(kernel):
            tile = min(COLUMN_TILE, threads, 1 << max(0, points - 1).bit_length())
            lanes = threads // tile
            why = (f"column reduction: a warp reads {tile} consecutive outputs' elements (a full {4 * tile}-byte row "
                   "of float32 where there are 32), lanes combine in shared memory")
        else:
            lanes = max(32, min(threads, 1 << max(0, inner - 1).bit_length()))
            tile, rows = threads // lanes, True
            why = f"row reduction: {lanes} threads per row combine with warp shuffles"
        chunks = _chunks(kernel, points, inner, tile, lanes, target)
        if chunks > 1:
            kernel.scratch = tuple(_scratch(program, f"{kernel.name}.partials{k}", (chunks, points), r.dtype)
                                   for k, r in enumerate(kernel.reductions))
            why += (f"; the reduced loops cut into {chunks} chunks (blocks over its outer points alone: "
                    f"{-(-points // tile)}, too few for {target.multiprocessors} multiprocessors), whose partials "
                    "combine in chunk order in a second launch; stores over the reduced loops run as map launches "
                    "whose points go in memory order (the stored buffer's stride-1 loop fastest: coalesced)")
        vector = VECTOR if lanes == 1 and _vectorisable(kernel) else 1
        if vector > 1:
            why = why.replace("a thread per element", f"{vector} consecutive elements a thread") \
                .replace("a thread per point", f"{vector} consecutive points a thread") + " (float4 loads and stores)"
        kernel.gpu = GpuLaunch(tile, lanes, max(1, min(cap, -(-points // (tile * vector)))), why, rows, vector, chunks)
    return program


def _chunks(kernel, points, inner, tile, lanes, target) -> int:
    """How many pieces a reduction's inner loops are cut into: enough for two blocks per
    multiprocessor where the outer points alone give fewer, each at least target.chunk_elements."""
    blocks, wanted = -(-points // tile), 2 * target.multiprocessors
    if not kernel.reductions or kernel.gemm or lanes == 1 or blocks >= wanted:
        return 1
    return max(1, min(-(-wanted // blocks), inner // target.chunk_elements))


def _vectorisable(kernel) -> bool:
    """Whether an elementwise float32 kernel can move VECTOR elements at once: every load and
    store unguarded, contiguous (or constant) along the last loop and aligned to VECTOR elements."""
    if kernel.reductions or not kernel.extents or (kernel.outer != len(kernel.extents) and not kernel.gemm) \
            or kernel.extents[-1] % VECTOR or kernel.scatter is not None:
        return False
    if not all(isinstance(load, Load) and not load.indirect for load in kernel.loads):
        return False
    for access, dtype in [(load.access, load.dtype) for load in kernel.loads] + \
            [(store.access, store.dtype) for store in kernel.stores]:
        if dtype != "f32" or access.guards or access.step != 1:
            return False
        *rest, last = access.form.coeffs
        if last not in (0, 1) or (last == 1 and any(c % VECTOR for c in rest + [access.form.const])):
            return False
    return all(store.access.form.coeffs[-1] == 1 for store in kernel.stores)


def _strided(kernel) -> bool:
    """Whether some reduction reads strided along the innermost loop (a column reduction)."""
    used = {n for r in kernel.reductions for n in leaves(r.body) if isinstance(n, int)}
    return any(abs(kernel.loads[n].access.form.coeffs[-1]) > 1 for n in used)


def _windowed(kernel) -> bool:
    """Whether the reductions are maxima over short windows (an innermost loop shorter than
    WINDOW_ROW) whose loads step along the last outer loop, each phase storing once per output (a
    max pooling's): the outputs then run side by side, each combining its window in the loops'
    order (exact in any order). A phase that stores over the window (the gradient's shares fused
    in where pooling's windows tile the input) stays a point's: its stores strided along the
    outputs ran 1.7x slower as rows (64x16x32x32 k2 fwd+bwd)."""
    used = {n for r in kernel.reductions for n in leaves(r.body) if isinstance(n, int)}
    return kernel.extents[-1] < WINDOW_ROW and all(r.combine == Combine.MAX for r in kernel.reductions) \
        and not any(phase.inner for phase in kernel.phases) \
        and any(kernel.loads[n].access.form.coeffs[kernel.outer - 1] > 1 for n in used)


def _strategy(kernel) -> str:
    if kernel.gemm is not None:
        return Strategy.GEMM
    if not kernel.reductions or not kernel.outer or kernel.extents[kernel.outer - 1] < ROWS_MIN:
        return Strategy.POINT
    if not _strided(kernel) and not _windowed(kernel):
        return Strategy.ROWS if _short_rows(kernel) else Strategy.POINT
    return Strategy.CHUNKS if kernel.outer == 1 and kernel.extents[1] >= CHUNKS_MIN_ROWS else Strategy.ROWS


def side_by_side_block() -> int:
    """Rows a block of rows side by side holds: a float32 vector's lanes, AVX-512's where the host
    has its registers (env.vector_registers), else AVX2's."""
    return WIDE_SIDE_BY_SIDE if vector_registers() == 32 else SIDE_BY_SIDE


def _short_rows(kernel) -> bool:
    """Whether a row reduction runs its rows side by side (SHORT_ROW): float32 sums and maxima along
    one inner loop of fewer than SHORT_ROW steps (SHORT_STORED_ROW where a phase stores along it)
    calling a mathlib polynomial, at least SIDE_BY_SIDE rows."""
    short = SHORT_STORED_ROW if any(phase.inner for phase in kernel.phases) else SHORT_ROW
    return along_rows(kernel) and kernel.extents[-1] < short and polynomial(kernel) \
        and kernel.extents[kernel.outer - 1] >= SIDE_BY_SIDE and not kernel.local \
        and all(r.dtype == "f32" and r.combine in (Combine.ADD, Combine.MAX) for r in kernel.reductions)


def _scratch(program, name, shape, dtype):
    program.buffers[name] = Buffer(name, shape, dtype, BufferKind.TEMP)
    return name


def work(kernel) -> int:
    """Estimated cost of a kernel: per phase, its iterations times the cost of what it computes
    there (a store counts 1; what several stores or reductions share, computed once, counts once);
    a gemm's multiply-adds; a scatter's zeroed and added elements."""
    total, outer, every = 0, math.prod(kernel.outer_extents), math.prod(kernel.extents)
    if kernel.scatter is not None:
        total += (kernel.scatter.rows + kernel.scatter.count) * kernel.scatter.width
    if kernel.gemm is not None:
        total += math.prod(kernel.extents[:-2]) * kernel.gemm.m * kernel.gemm.n * kernel.gemm.k
    for phase in kernel.phases:
        total += every * _cost(r.body for r in phase.reductions)
        total += (every if phase.inner else outer) * (len(phase.stores) + _cost(s.value for s in phase.stores))
    return total


def _serial_why(kernel, count):
    if count == 1:
        return "one thread (NDLC_THREADS=1 or no thread team on this system)"
    if kernel.gemm is not None and max(kernel.extents[:-1], default=1) == 1:
        return "a single-row BLAS call"
    if max(kernel.outer_extents, default=1) == 1:
        return "no non-reduced loop to split"
    if work(kernel) < THRESHOLD:
        return f"too small (work {work(kernel)} < {THRESHOLD})"
    return ""


def _cost(exprs):
    """Loads and operations of scalar expressions (a load costs 1), shared nodes counted once."""
    return cost(list(exprs), leaf=lambda payload: 0 if isinstance(payload, Acc) else 1)
