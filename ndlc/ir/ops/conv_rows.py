"""A stride-1 conv over the input's NCHW planes in register tiles of channels x pixels (row_conv),
and whether a tiled NHWC conv nest reads its padding in place."""
import numpy as np

from ..tiles import FEW_TO_A_SET, L1_SETS, register_tile, spread
from ..types import numpy_dtype


def padding_in_place(x):
    """Whether a tiled conv nest reads NHWC `x` padded in place (codegen/llvm_rows.py _taps), not a
    padded copy: where its channels' loads spread over the L1 cache, at most FEW_TO_A_SET to a set
    (16 channels' planes 4 KiB apart: 2x slower; 3 channels' read in place: ir/tiles.py)."""
    return spread(x.shape[3], channel_stride(x), numpy_dtype(x.dtype).itemsize, FEW_TO_A_SET)


def channel_stride(x):
    """Elements between channels (axis 3) of `x` in the value it views through permutes (an NCHW plane)."""
    axis = 3
    while x.node is not None and x.node.op == "permute":
        axis = x.node.attrs["axes"][axis]
        x = x.node.operands[0]
    return int(np.prod(x.shape[axis + 1:]))


def row_tiled(out):
    """Whether a stride-1 conv of output type `out` (NHWC) runs over NCHW planes (conv_rows) in
    register tiles of channels x pixels along its rows: Wo a multiple of the tile's vectors, or
    ragged rows that fill most of theirs (ir/tiles.py): that tile, else None."""
    return register_tile(out.shape[3], out.shape[2], numpy_dtype(out.dtype).itemsize, ragged=True)


def conv_rows(b, x, w, p):
    """The conv over the input's NCHW planes, padded there (a copy of rows, where NHWC padding
    transposed the input), into the NCHW output (row_conv): each tile of channels x pixels loads
    the input's row as vectors and stores the output's rows, so nn.Conv's permute back is none and
    its bias an epilogue, and every reader reads NCHW. Where the tile's pixels do not divide Wo, a
    row's last block computes whole (the schedule checks its reads stay in their buffer) and
    stores Wo's remainder: the planes carry the columns it reads past the row, and as many more as
    keep the channels' planes apart in the L1 cache (spread_row)."""
    planes = b.permute(x, axes=(0, 3, 1, 2))
    width = x.shape[2] + 2 * p - w.shape[1] + 1
    itemsize = numpy_dtype(x.dtype).itemsize
    tile = register_tile(w.shape[3], width, itemsize, ragged=True)
    row = spread_row(x.shape[1] + 2 * p, x.shape[2] + 2 * p - width % -tile[1], x.shape[3], itemsize)
    extra = row - x.shape[2] - 2 * p  # columns past the padding: the last block's reads, the spread
    if p or extra:
        planes = b.pad(planes, widths=((0, 0), (0, 0), (p, p), (p, p + extra)))
    return b.permute(b.row_conv(planes, w, width=width), axes=(0, 2, 3, 1))


def spread_row(rows, least, channels, itemsize):
    """The padded planes' row, at least `least` elements (the first of the next L1_SETS), whose
    planes of `rows` rows put the same element of each of `channels` channels (what a tile's steps
    read) at most two to an L1 set (L1_SETS of 64-byte lines)."""
    for row in range(least, least + L1_SETS):
        if spread(channels, rows * row, itemsize):
            return row
    return least  # more channels than two to a set can place
