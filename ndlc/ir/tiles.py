"""Register tiles of outer products: a 'rows' kernel whose reduction reads each operand invariant
along one of its last two outer loops (a direct convolution: the input along the output channels,
the weight along the pixels) accumulates a tile of R x C outputs in vector registers, so that each
loaded vector serves R outputs and each broadcast C, a product of two loads added in one fused
multiply-add (multiply_add, as in every 'rows' kernel). The schedule emits them (passes/schedule.py);
a convolution keeps its direct loop nest where one fits (ir/ops/conv.py)."""

import math
from dataclasses import replace
from fractions import Fraction

from ..env import vector_registers
from .kernel import Combine
from .kernel_leaves import Load
from .scalar import leaves

VECTOR_BYTES = 32  # an AVX2 register
# Vector registers a tile may fill (`registers`): all of the host's but one, for its accumulators,
# the C / lanes vectors a step loads (each used by R rows) and one broadcast. Measured on AVX2's 16
# (15), one thread: LeNet's conv2 as R x C = 5 x 16 f32 outputs (10 accumulators, 13 registers)
# 3.7-4.2 -> 1.5-1.6 ms; LeNet's conv1 (over wide rows) as 3 x 32 (12 + 4 + 1 = 17 registers: spills)
# 1.7 -> 3.0 ms. A tile filling all 16 kept its accumulators on the stack, a load and store per tap
# (benchmarks/sweep.py; a 3x3 3 -> 16 conv of 32 images, one thread, load 12-14): rows of 48 as
# 4 x 24 47-70 ms, as 4 x 16 2.0-14; rows of 40 as 2 x 40 30-35 ms, as 8 x 8 1.4-1.5; rows of 33
# as 4 x 24 34 ms, as 8 x 8 0.7-1.2. AVX-512's encodings give 256-bit code 32 (31): the 3x3
# 32x16x32x32 -> 32 forward as 4 x 32 (16 accumulators) where 4 x 16 had 8, 3.5-3.7 -> 3.0-3.1 ms;
# ResNet9's 4x4 layer 4 x 32 0.78 -> 0.72 (CPU-time minima, one thread, load 2-3)
TILE_LEAST = 4  # fewer accumulators than this leave the adds' latency exposed: no tile
# The least share of its vectors' lanes a row of columns must fill for a ragged tile, where no tile
# divides the row: its last block computes whole, past the row, and stores the remainder
# (codegen/llvm_rows.py). Rows of 28 fill 7/8: a 3x3 16 -> 32 conv of 28x28 images over NCHW rows
# in ragged tiles 3.9-4.2 ms, as the NHWC nest and its permute back 4.5-5.5 (one thread, min of 60,
# alternating, load ~6); LeNet conv2's rows of 10 fill 5/8
RAGGED_FILL = 0.75
# Sets of an L1 cache of 64-byte lines (32 KiB, 8 ways: Zen 3, Skylake): elements a multiple of 4 KiB
# apart fall in one set, and a tile that reads or writes one of them for each of its channels evicts
# its own lines (spread)
L1_SETS = 64
# Outputs along a tile's last loop that its stores write at once: its columns, two vectors of f32
# (a conv's channels: LeNet conv2 and ResNet9's 4x4 layers as 5 x 16 and 4 x 16 tiles)
STORED_AT_ONCE = 16
# Lines a tile's loads or stores of its channels may share an L1 set where fewer than all fit two to a
# set (spread's `most`): half its 8 ways. A k7 stride-2 3 -> 32 conv of 32x32 NCHW images, its 3
# channels' planes 4 KiB apart read in place (no padded NHWC copy) and its 16x16 outputs stored as
# NCHW planes 1 KiB apart (four to a set of 16 stores; no permute back), one kernel where three ran:
# 0.79 -> 0.64 ms (one thread, min of 100, 3 alternations, load ~6); 16 to a set halved a 3x3's speed
FEW_TO_A_SET = 4


def registers() -> int:
    """Vector registers a tile may fill on the host: all but one of those LLVM allocates there."""
    return vector_registers() - 1


def register_tile(rows: int, columns: int, itemsize: int, ragged: bool = False, budget: int | None = None):
    """(R, C): a tile of R of `rows` (R divides it) by C of `columns` (a multiple of the vector's
    lanes dividing it; with `ragged`, where none does and the row fills RAGGED_FILL of its vectors,
    any up to the row) within `budget` vector registers (the host's `registers()` unless given);
    the most accumulators, then the fewest loads a step (R broadcasts and C / lanes vectors). None
    where no tile reaches TILE_LEAST accumulators, or where there are no outputs to tile (a batch of 0)."""
    if rows < 1 or columns < 1:
        return None
    lanes, budget = VECTOR_BYTES // itemsize, budget or registers()
    tile = _best_tile(rows, columns, lanes, True, budget)
    if tile is None and ragged and columns >= lanes and columns >= RAGGED_FILL * -(-columns // lanes) * lanes:
        tile = _best_tile(rows, columns, lanes, False, budget)
    return tile


def _best_tile(rows, columns, lanes, dividing, budget):
    """register_tile's choice among C that divide `columns` (or, not `dividing`, any: then the
    accumulators count by the share of the outputs computed that a row keeps, -C % columns of
    them past its end)."""
    best, key = None, None
    for c in range(lanes, min(columns, budget * lanes) + 1, lanes):
        vectors = c // lanes
        most = (budget - vectors - 1) // vectors  # rows whose accumulators fit beside the step's loads
        if (dividing and columns % c) or most < 1:
            continue
        r = max(d for d in range(1, min(rows, most) + 1) if rows % d == 0)
        kept = Fraction(columns, -(-columns // c) * c)
        if r * vectors >= TILE_LEAST and (key is None or (r * vectors * kept, -(r + vectors)) > key):
            best, key = (r, c), (r * vectors * kept, -(r + vectors))
    return best


def multiply_add(reduction, loads) -> bool:
    """Whether a 'rows' kernel (its blocks and register tiles: convolutions, matmuls as loop nests)
    accumulates `reduction` in fused multiply-adds: a float sum of the product of two loads of its
    dtype. A tap is then one instruction an output, not a multiply and an add, and needs no
    register for the product: forwards, min of 40 calls on one thread, 3 alternations, load ~6:
    the 3x3 32x16x32x32 -> 32 4.21-4.69 -> 3.97-4.04 ms, LeNet conv1 0.89-0.93 -> 0.83, conv2
    1.61-1.65 -> 1.37-1.49, ResNet9's 4x4 layer 1.05-1.07 -> 0.91-0.96. Its sums round once a tap
    where they rounded twice, as OpenBLAS's gemms do, within the tolerance of a reordered sum
    (runtime/check.py). 'rows' is chosen without regard to the thread count, so results stay the
    same on any team."""
    body = reduction.body
    return reduction.combine == Combine.ADD and reduction.dtype in ("f32", "f64") and body.prim == "mul" \
        and all(a.prim == "arg" and isinstance(a.payload, int) and isinstance(loads[a.payload], Load)
                and loads[a.payload].dtype == reduction.dtype for a in body.args)


def spread(count: int, stride: int, itemsize: int, most: int = 2) -> bool:
    """Whether `count` elements `stride` elements apart fall at most `most` to a set of the L1 cache
    (L1_SETS of 64-byte lines), where a tile's loads or stores of them keep their lines."""
    sets = [c * stride * itemsize // 64 % L1_SETS for c in range(count)]
    return max(sets.count(s) for s in sets) <= most


def ragged_pieces(rest: int, itemsize: int):
    """(offset, length) of the loops that store a ragged tile's last `rest` outputs a row
    (codegen/llvm_rows.py): its whole vectors, then halves of a vector down to one element, each a
    loop of a constant trip count that LLVM vectorises without masks (a masked loop of 12 f32 kept
    the accumulators in memory and stored them with vmaskmovps: a conv's kernel 20x slower)."""
    lanes = VECTOR_BYTES // itemsize
    pieces, offset, width = [], 0, lanes
    while offset < rest:
        length = (rest - offset) // width * width
        if length:
            pieces.append((offset, length))
            offset += length
        width //= 2
    return tuple(pieces)


def ragged_problem(kernel, buffers, block):
    """Why a 'rows' kernel's last outer loop in blocks of `block` outputs may not run its last block
    whole, past the loop's end (codegen/llvm_rows.py then stores only the outputs within it), or
    "" where it may or the blocks divide the loop. It may with one phase, stored per outer point,
    not a scan step's copy (whose buffers lie elsewhere), and every load the reductions read
    within its buffer over the loop rounded up to whole blocks (the padded planes of a conv)."""
    last = kernel.outer - 1
    if kernel.extents[last] % block == 0:
        return ""
    if len(kernel.phases) != 1 or kernel.phases[0].inner or kernel.step:
        return "its last block computes past the loop's end: it needs one phase of reductions, stored per outer point"
    extents = list(kernel.extents)
    extents[last] = -(-extents[last] // block) * block
    for n in sorted({n for r in kernel.reductions for n in leaves(r.body) if isinstance(n, int)}):
        load = kernel.loads[n]
        form = load.access.form.padded(len(extents))
        if not isinstance(load, Load) or not form.coeffs[last]:  # reads past the loop's end what its last point reads
            continue
        low, high = form.bounds(extents)
        size = math.prod(buffers[load.buffer].shape)
        if load.access.guards or low < 0 or high // load.access.step >= size:
            return (f"its last block computes past the loop's end, where ${n} reaches elements {low}..{high} "
                    f"of %{load.buffer}, which has {size}")
    return ""


def tile_guards(access, rows, last) -> bool:
    """Whether a register tile over loops `rows` x `last` may read `access` guarded (a padded conv's
    input read in place): a broadcast (invariant along the last loop, as an NHWC conv's input is),
    each guard an interval (step 1). Its tile then checks none for the taps whose guards hold for
    every row of the tile, and each row's for the taps that cross the padding (codegen/llvm_rows.py
    _taps); a load along the block would check each lane."""
    return not access.guards or not access.form.padded(last + 1).coeffs[last] and all(
        g.step == 1 and not g.form.padded(last + 1).coeffs[last] for g in access.guards)


def reordered(kernel, order):
    """A copy of `kernel` whose loop j is its loop order[j] (outer loops among themselves: the
    schedule moves one next to the last for a register tile, passes/schedule.py)."""
    def moved(access):
        form = access.form.padded(len(order))
        guards = tuple(replace(g, form=g.form.padded(len(order))) for g in access.guards)
        return replace(access, form=form, guards=guards).permuted(order)
    phases = [replace(phase, stores=[replace(s, access=moved(s.access)) for s in phase.stores])
              for phase in kernel.phases]
    return replace(kernel, extents=tuple(kernel.extents[j] for j in order), phases=phases,
                   loads=[load.with_access(moved(load.access)) for load in kernel.loads])
