"""A kernel's structural key: its Kernel IR up to buffer names, so that kernels computing the same
thing on different buffers (an unrolled LSTM's cell, step after step) share one native function,
compiled once and cached on disk under that key.

The key text names each buffer by its position of first mention (`%b0`, `%b1`, ...) and spells
every field the CPU code generator reads, expressions as a numbered list of distinct nodes (shared
subexpressions stay shared); it leaves out what only explains the kernel (its name, the graph
nodes it fuses, why it was stored or merged). `FINGERPRINT` hashes the sources that turn a kernel
into LLVM IR, so that native code cached by key is never reused after the code generator changed.
"""
import hashlib
import os
from dataclasses import dataclass, replace

from ..ir.indexing import Affine
from ..ir.kernel_leaves import Index, Load
from ..ir.scalar import postorder

_GENERATOR = ("codegen/llvm.py", "codegen/llvm_guards.py", "codegen/llvm_lanes.py", "codegen/llvm_memory.py",
              "codegen/llvm_partials.py", "codegen/llvm_chunks.py",
              "codegen/llvm_rows.py", "codegen/llvm_scalar.py", "codegen/llvm_vector.py", "codegen/llvm_calls.py",
              "codegen/llvm_scatter.py",
              "codegen/llvm_stream.py", "codegen/llvm_text.py", "codegen/mathlib.py", "codegen/mathlib_parts.py", "codegen/kernel_key.py",
              "ir/kernel.py", "ir/kernel_leaves.py", "ir/streams.py", "ir/indexing.py", "ir/scalar.py", "ir/rules.py",
              "ir/short_rows.py", "ir/tiles.py", "ir/types.py")


def _fingerprint() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    for path in _GENERATOR:
        with open(os.path.join(root, path), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


FINGERPRINT = _fingerprint()


@dataclass(frozen=True, eq=False)
class KernelKey:
    """`text`: the kernel up to buffer names and offsets; `buffers`: its buffers (not its row-local
    ones) in the order `text` numbers them, which is the order its native function takes their
    pointers, each `offsets` elements into the buffer; `symbol`: that function's name, the same
    for every kernel with this text; `kernel`: the kernel to generate it from (its accesses
    relative to those offsets)."""
    text: str
    buffers: tuple
    offsets: tuple
    symbol: str
    kernel: object


def kernel_key(kernel, debug=None) -> KernelKey:
    """The structural key of `kernel`. `debug`: None, or what bounds-checked code bakes in (the
    kernel's number, buffer -> element count), which then becomes part of the key (and buffers
    are passed at their start)."""
    offsets = {} if debug is not None else _offsets(kernel)
    kernel = _rebased(kernel, offsets) if offsets else kernel
    names = {}

    def buffer(name):
        return names.setdefault(name, f"%b{len(names)}")

    lines = [f"loops {kernel.extents} outer {kernel.outer} strategy {kernel.strategy!r} chunks {kernel.chunks} "
             f"block {kernel.block} tile {kernel.tile} calls {kernel.calls} "
             f"split {kernel.split!r}"]
    for load in kernel.loads:
        where = buffer(load.buffer) if isinstance(load, Load) else "index"
        rows = f" rows {load.indirect!r}" if isinstance(load, Load) and load.indirect else ""
        lines.append(f"load {where} {load.dtype} {load.access!r}{rows}")
    if kernel.gemm is not None:
        g = kernel.gemm
        lines.append(f"gemm {g.m} {g.n} {g.k} {g.dtype} out {buffer(g.out)}")
        lines += [f"  {buffer(m.buffer)} {m.offset!r} ld {m.ld} transposed {m.transposed}" for m in (g.a, g.b)]
    if kernel.scatter is not None:
        s = kernel.scatter
        lines.append(f"scatter {buffer(s.values)} {buffer(s.indices)} {s.index_dtype} out {buffer(s.out)} "
                     f"at {s.at} {s.count} {s.rows} {s.width} {s.dtype}")
    lines += [f"scratch {buffer(name)}" for name in kernel.scratch]
    lines += [f"local {buffer(name)} {size}" for name, size in kernel.local.items()]
    nodes = {}
    for p, phase in enumerate(kernel.phases):
        lines.append(f"phase {p} inner {phase.inner}")
        for r in phase.reductions:
            lines.append(f"  reduce {r.combine} {r.dtype} {_expression(r.body, nodes, lines)}")
        for s in phase.stores:
            lines.append(f"  store {buffer(s.buffer)} {s.dtype} {s.access!r} {_expression(s.value, nodes, lines)}")
    if kernel.streams and kernel.streams.buffers:
        lines.append(f"streamed {' '.join(names[name] for name in kernel.streams.buffers)}")
    unknown = [name for name in kernel.buffers() if name not in names]
    if unknown or any(isinstance(load, Load) is isinstance(load, Index) for load in kernel.loads):
        raise ValueError(f"kernel {kernel.name}: no structural key for buffers {unknown} or its loads")
    used = tuple(name for name in names if name not in kernel.local)
    if debug is not None:
        number, sizes = debug
        lines.append(f"bounds checked as kernel {number}: {[sizes[name] for name in used]}")
    text = "\n".join(lines)
    return KernelKey(text, used, tuple(offsets.get(name, 0) for name in used),
                     "ndlc_k" + hashlib.sha256(text.encode()).hexdigest()[:20], kernel)


def _offsets(kernel) -> dict:
    """Buffer -> the smallest constant element offset of its accesses, where that is positive and
    every access to it is plain (no guards, no division, not a row-local, scratch or gemm output
    buffer): a step's slice of a sequence is then read through a pointer to the slice, and every
    step's kernel is the same. The element at that offset is one the kernel accesses."""
    return {name: offset for name, offset in _least(kernel).items() if offset > 0}


def _least(kernel) -> dict:
    """Buffer -> the smallest constant element offset of its accesses, for the buffers every
    access to which is plain, none indirect (those `_offsets` may take an offset out of)."""
    accesses = [(load.buffer, load.access) for load in kernel.loads if isinstance(load, Load)]
    accesses += [(store.buffer, store.access) for store in kernel.stores]
    fixed = set(kernel.local) | set(kernel.scratch)
    fixed |= {load.buffer for load in kernel.loads if isinstance(load, Load) and load.indirect}
    if kernel.gemm is not None:
        accesses += [(m.buffer, m.offset) for m in (kernel.gemm.a, kernel.gemm.b)]
        fixed.add(kernel.gemm.out)
    least = dict(zip(kernel.scatter.buffers, kernel.scatter.at)) if kernel.scatter else {}
    for name, access in accesses:
        if access.step != 1 or access.guards:
            fixed.add(name)
        least[name] = min(least.get(name, access.form.const), access.form.const)
    return {name: offset for name, offset in least.items() if name not in fixed}


def _rebased(kernel, offsets):
    """`kernel` with each access to a buffer of `offsets` made relative to its offset."""
    def access(name, a):
        shift = offsets.get(name, 0)
        return replace(a, form=Affine(a.form.coeffs, a.form.const - shift)) if shift else a
    loads = [load.with_access(access(load.buffer, load.access)) if isinstance(load, Load) else load
             for load in kernel.loads]
    phases = [replace(phase, stores=[replace(s, access=access(s.buffer, s.access)) for s in phase.stores])
              for phase in kernel.phases]
    gemm = kernel.gemm
    if gemm is not None:
        gemm = replace(gemm, a=replace(gemm.a, offset=access(gemm.a.buffer, gemm.a.offset)),
                       b=replace(gemm.b, offset=access(gemm.b.buffer, gemm.b.offset)))
    scatter = kernel.scatter and replace(kernel.scatter, at=tuple(at - offsets.get(name, 0) for name, at in
                                                                  zip(kernel.scatter.buffers, kernel.scatter.at)))
    return replace(kernel, loads=loads, phases=phases, gemm=gemm, scatter=scatter)


def _expression(expr, nodes, lines) -> str:
    """The number of `expr`'s node, after the lines defining the nodes it needs that `nodes`
    (id(node) -> number, shared across the kernel) does not hold yet."""
    for e in postorder(expr, stop=lambda e: id(e) in nodes):
        if id(e) in nodes:
            continue
        nodes[id(e)] = number = f"n{len(nodes)}"
        operands = ", ".join(nodes[id(a)] for a in e.args)
        lines.append(f"  {number} = {e.prim}({operands}) {e.payload!r}")
    return nodes[id(expr)]


class Keys:
    """The structural keys of one program's kernels. A scan step's kernel (`Kernel.origin`) takes
    the key of the copy of its body kernel keyed in full last, the buffers and offsets moved by its
    own placement, wherever keying it would give that same text: whatever the sequence length,
    a body kernel is keyed a few times (the first and last steps place its buffers otherwise:
    the scan's operands, the final carries). `keyed`: how many kernels were keyed in full."""
    # what the key reads of the schedule
    SCHEDULE = ("extents", "outer", "strategy", "split", "chunks", "block", "tile", "scratch", "streams")

    def __init__(self):
        self.keyed = 0
        self._first = {}  # id(body kernel) -> (the copy last keyed in full, its key, its _least, the body's buffers)

    def __call__(self, kernel, debug=None) -> KernelKey:
        origin = kernel.origin if debug is None else None  # bounds-checked keys name the kernel's number
        first = origin and self._first.get(id(origin.template))
        moved = first and _moved(first, kernel)
        if moved:
            return moved
        self.keyed += 1
        key = kernel_key(kernel, debug)
        if origin is not None and origin.holds(kernel):  # the next steps move this key (the body
            # kernel, held by the origin, keeps its id)
            self._first[id(origin.template)] = (kernel, key, _least(kernel), origin.template.buffers())
        return key


def _moved(first, kernel):
    """The key of `kernel`, a step's copy of the body kernel another copy of which was keyed
    (`first`: that copy, its key, its _least and the body kernel's buffers), or None where its
    text could differ: both must be scheduled and planned alike and place the body's buffers
    alike (the same ones together in one buffer of the program, each such group moved by one
    shift), and a buffer moved must be one whose offset the key takes out in both (plain
    accesses, at no negative offset)."""
    copy, key, least, body = first
    if not kernel.origin.holds(kernel) or any(getattr(copy, f) != getattr(kernel, f) for f in Keys.SCHEDULE):
        return None
    was, now = copy.origin, kernel.origin
    moves = {}  # the copy's buffer -> (the kernel's, shift in elements)
    for b in body:
        (old, at), (new, to) = was.buffer(b), now.buffer(b)
        if moves.setdefault(old, (new, to - at)) != (new, to - at):
            return None
    if len({new for new, _ in moves.values()}) != len(moves):
        return None
    if {moves.get(n, (n, 0))[0]: size for n, size in copy.local.items()} != kernel.local:
        return None
    buffers, offsets = [], []
    for name, offset in zip(key.buffers, key.offsets):
        there, shift = moves.get(name, (name, 0))
        if shift and not (name in least and least[name] >= 0 and least[name] + shift >= 0):
            return None
        buffers.append(there)
        offsets.append(offset + shift)
    return KernelKey(key.text, tuple(buffers), tuple(offsets), key.symbol, key.kernel)
