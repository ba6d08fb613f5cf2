"""Register tiles of outer products: a 'rows' kernel whose reduction reads each operand invariant
along one of its last two outer loops (a direct convolution: the input along the output channels,
the weight along the pixels) accumulates a tile of R x C outputs in vector registers, so that each
loaded vector serves R outputs and each broadcast C. The schedule emits them (passes/schedule.py);
a convolution keeps its direct loop nest where one fits (ir/ops/conv.py)."""

VECTOR_BYTES = 32  # an AVX2 register
# Accumulators a tile keeps: 16 registers less a loaded vector, a broadcast and spares. Measured on
# LeNet's conv2 (R x C = 5 x 16 f32 outputs, 10 vectors), one thread: 3.7-4.2 ms as blocks of 16
# outputs in memory, 1.5-1.6 ms as a tile
TILE_VECTORS = 12
TILE_LEAST = 4  # fewer accumulators than this leave the adds' latency exposed: no tile


def register_tile(rows: int, columns: int, itemsize: int):
    """(R, C): a tile of R of `rows` (R divides it) by C of `columns` (a multiple of the vector's
    lanes dividing it), at most TILE_VECTORS vectors; the most vectors, then the fewest loads a
    step (R broadcasts and C / lanes vectors). None where no tile reaches TILE_LEAST vectors."""
    lanes = VECTOR_BYTES // itemsize
    best, key = None, None
    for c in range(lanes, min(columns, TILE_VECTORS * lanes) + 1, lanes):
        if columns % c:
            continue
        r = max(d for d in range(1, min(rows, TILE_VECTORS * lanes // c) + 1) if rows % d == 0)
        vectors = r * c // lanes
        if vectors >= TILE_LEAST and (key is None or (vectors, -(r + c // lanes)) > key):
            best, key = (r, c), (vectors, -(r + c // lanes))
    return best
