"""Register tiles of outer products: a 'rows' kernel whose reduction reads each operand invariant
along one of its last two outer loops (a direct convolution: the input along the output channels,
the weight along the pixels) accumulates a tile of R x C outputs in vector registers, so that each
loaded vector serves R outputs and each broadcast C. The schedule emits them (passes/schedule.py);
a convolution keeps its direct loop nest where one fits (ir/ops/conv.py)."""

VECTOR_BYTES = 32  # an AVX2 register
# Vector registers (AVX2's 16) a tile may fill: its accumulators, the C / lanes vectors a step loads
# (each used by R rows) and one broadcast. Measured, one thread: LeNet's conv2 as R x C = 5 x 16
# f32 outputs (10 accumulators, 13 registers) 3.7-4.2 -> 1.5-1.6 ms; LeNet's conv1 (over wide rows)
# as 3 x 32 (12 + 4 + 1 = 17 registers: spills) 1.7 -> 3.0 ms
REGISTERS = 16
TILE_LEAST = 4  # fewer accumulators than this leave the adds' latency exposed: no tile


def register_tile(rows: int, columns: int, itemsize: int):
    """(R, C): a tile of R of `rows` (R divides it) by C of `columns` (a multiple of the vector's
    lanes dividing it) within REGISTERS; the most accumulators, then the fewest loads a step (R
    broadcasts and C / lanes vectors). None where no tile reaches TILE_LEAST accumulators."""
    lanes = VECTOR_BYTES // itemsize
    best, key = None, None
    for c in range(lanes, min(columns, REGISTERS * lanes) + 1, lanes):
        vectors = c // lanes
        most = (REGISTERS - vectors - 1) // vectors  # rows whose accumulators fit beside the step's loads
        if columns % c or most < 1:
            continue
        r = max(d for d in range(1, min(rows, most) + 1) if rows % d == 0)
        if r * vectors >= TILE_LEAST and (key is None or (r * vectors, -(r + vectors)) > key):
            best, key = (r, c), (r * vectors, -(r + vectors))
    return best
