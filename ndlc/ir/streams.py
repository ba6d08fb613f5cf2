"""Streaming (non-temporal) stores: which of a kernel's stores bypass the cache, the loop they run
along, and how the decision reads in the kernel's text (passes/streaming.py makes it,
codegen/llvm_stream.py emits it). A store that misses the cache first reads its line (a 16 MB
output written through the cache moves 32 MB); a streaming store writes whole lines and leaves the
cache to the data that is read again."""
import re
from dataclasses import dataclass

_STREAMING = re.compile(r"  streaming stores to (%\S+(?:, %\S+)*): (.*)$")
_CACHED = "  stores cached: "


@dataclass(frozen=True)
class Streams:
    """`buffers`: those stored with streaming stores (none: a large output's stores go through the
    cache); `why`: the measure that decided."""
    buffers: tuple
    why: str


def stream_lines(streams) -> list:
    """The kernel text's line for a decision (none without one)."""
    if streams is None:
        return []
    if streams.buffers:
        return [f"  streaming stores to {', '.join('%' + n for n in streams.buffers)}: {streams.why}"]
    return [_CACHED + streams.why]


def parse_streams(line):
    """The Streams of a kernel text's line, or None where the line is not one."""
    streaming = _STREAMING.match(line)
    if streaming:
        return Streams(tuple(name[1:] for name in streaming.group(1).split(", ")), streaming.group(2))
    return Streams((), line[len(_CACHED):]) if line.startswith(_CACHED) else None


def store_loop(kernel):
    """The loop along which a kernel's stores at every point run innermost (its map phases', a
    map kernel's): the last loop, or the columns of a 'chunks' kernel; None for other strategies."""
    if kernel.strategy == "chunks":
        return 0
    return len(kernel.extents) - 1 if kernel.strategy == "point" and kernel.extents else None


def stream_problem(kernel, store) -> str:
    """Why `store` (of `kernel`) cannot be a streaming store, or "": the code groups a vector of
    consecutive points' values before storing them, so the store must run at every point of the
    store loop, unguarded, to consecutive elements along it, into a buffer the kernel does not read."""
    loop = store_loop(kernel)
    phase = next(p for p in kernel.phases if any(s is store for s in p.stores))
    if loop is None:
        return f"a '{kernel.strategy}' kernel"
    if not (phase.inner or kernel.outer == len(kernel.extents)):
        return "stored once per outer point"
    access = store.access
    if access.guards or access.step != 1 or access.form.coeffs[loop] != 1:
        return f"not stored to consecutive elements along i{loop}"
    if store.buffer in kernel.reads() or any(x.access.guards for x in kernel.loads):
        return "a kernel that reads it, or guarded loads"
    if store.dtype not in ("f32", "f64", "i32", "i64"):
        return f"{store.dtype} elements"
    return ""
