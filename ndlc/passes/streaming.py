"""streaming: which of a kernel's stores bypass the cache (non-temporal stores, ir/streams.py).

A store that misses the cache first reads the line it writes: an output larger than the cache
costs twice its size in memory traffic, and evicts the data the kernel reads again (BatchNorm's x,
read by its statistics and again by its output). A streaming store writes whole lines past the
cache. It pays where the kernel's data cannot stay in the cache anyway: measured on this host
(AMD EPYC, 32 MiB L3 shared in a VM, one thread, y = x * s + b after a pass over x, [n, 1024]
float32), n = 1024 (8 MiB moved) 0.23-0.24 ms either way, n = 2048 (16 MiB) 0.75-0.79 ms cached,
0.50-0.52 streamed, n = 4096 (32 MiB) 2.2-2.4 against 1.15-1.55. A map over short rows that are
not whole cache lines streams a head, a line or two and a rest per row, whose overhead costs more
than the lines save: at rows of 31, 77 and 127 float32 its y = x * row + z ran 1.7-3.5x the cached
form, at 255 and 511 0.89-0.98x (Zen 4, one thread, 2^21 elements).
"""
import math

from ..ir.streams import Streams, store_loop, stream_problem
from ..ir.types import numpy_dtype

FOOTPRINT = 16 << 20  # bytes a kernel moves from which its large outputs stream (see above)
SMALLEST = 1 << 20  # bytes of the smallest buffer streamed: smaller ones are cheap to keep cached
MIB = 1 << 20
ROW_LEAST = 1 << 10  # bytes of a map's shortest row that streams unless its rows are whole lines (see above)
LINE = 64  # bytes of a cache line


def choose_streams(kernel, buffers):
    """The Streams of `kernel` (`buffers`: the program's, by name): its outputs of at least
    SMALLEST bytes, where the kernel moves FOOTPRINT bytes and their stores can stream
    (ir/streams.py); None where it stores nothing that large, moves less (its data stays cached),
    or runs in a scan's steps (whose copies share its decisions, but not its buffers' names), or
    is a Scatter (whose adds read what it stores)."""
    if kernel.step or kernel.scatter is not None:
        return None
    itemsize = {name: numpy_dtype(buffers[name].dtype).itemsize for name in kernel.buffers()}
    size = {name: math.prod(buffers[name].shape) * itemsize[name] for name in itemsize}
    large = [name for name in kernel.outputs() if size[name] >= SMALLEST]
    moved = sum(size.values())
    if not large or moved < FOOTPRINT:
        return None
    problems = {name: "BLAS writes it" if kernel.gemm is not None and name == kernel.gemm.out else
                next(filter(None, (stream_problem(kernel, s) for s in kernel.stores if s.buffer == name)),
                                    _short_rows(kernel, itemsize[name]))
                for name in large}
    sizes = [itemsize[name] for name in large if not problems[name]]
    for name in large:  # the code groups one vector of each at a time: elements of one size
        if not problems[name] and itemsize[name] != min(sizes):
            problems[name] = f"{buffers[name].dtype} elements beside narrower ones"
    streamed = tuple(name for name in large if not problems[name])
    cached = [f"%{name} cached: {why}" for name, why in problems.items() if why]
    why = [f"{sum(size[n] for n in streamed) / MIB:.1f} MiB, in a kernel moving {moved / MIB:.1f} MiB "
           f"(over {FOOTPRINT // MIB} MiB: its data leaves the cache anyway)"] if streamed else []
    return Streams(streamed, "; ".join(why + cached))


def _short_rows(kernel, itemsize) -> str:
    """Why a map's stores of `itemsize` bytes stay cached for the length of its rows (the module
    docstring), or "": rows along the store loop shorter than ROW_LEAST bytes, not whole lines."""
    loop = store_loop(kernel)
    if kernel.reductions or loop is None:
        return ""
    row = kernel.extents[loop] * itemsize
    return f"rows of {row} bytes, not whole {LINE}-byte lines" if row < ROW_LEAST and row % LINE else ""
