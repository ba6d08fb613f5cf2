"""Multi-output kernels, the second half of fusion: kernels that can share one loop nest become one.

Kernels come from fusion.py one stored value each, in schedule order, which is first made as soon as
possible (each kernel right after the last one it depends on). Each is merged into the
closest earlier kernel it may move up to (none of the kernels it skips writes what it reads) whose
loops fit, so sibling reductions share one pass over their input, elementwise consumers are
written in the pass of their producer, a BatchNorm's running statistics join its statistics
kernel and an optimizer's slots and parameter join in one update:
  - same loops (outer | inner): the phases follow each other in one nest; a phase that reads a
    buffer an earlier phase wrote reads it at the outer point being computed, in cache;
  - an elementwise kernel over the other's whole domain becomes a phase over its inner loops
    (LayerNorm's output after its statistics: one row kernel), and one over its outer loops a
    phase per outer point (running statistics after the batch statistics);
  - adjacent phases of one kind join: their stores are made at the same point, and a value read
    where the same phase computes it is taken from the register instead of memory; a temporary
    left with no reader is no longer stored ("recomputed, not stored");
  - a sum of x then a sum of (x - mean)² become one pass of shifted sums (passes/statistics.py).
A kernel is not merged when its loops differ, when it reads a buffer of the other kernel at other
elements than those written for the same outer point (another row, a transposed view), or when
it is a BLAS call (which starts a kernel; elementwise work over its output joins it), nor a transpose
whose loads fall in one L1 set into a reduction (canonical.py aliased_transpose: alone it is blocked
a line at a time); the kernel's `boundary` says which, `merged` what joined it, and
NDLC_LOG=fusion logs both.
"""
import itertools
import logging
import math
from dataclasses import replace

from ..ir.indexing import contiguous
from ..ir.kernel import BufferKind, Phase
from ..ir.kernel_leaves import Acc, Load
from ..ir.scalar import ScalarExpr, cost, leaf_set, leaves, map_leaves
from ..ir.types import numpy_dtype
from .canonical import aliased_transpose
from .statistics import one_pass_statistics

log = logging.getLogger("ndlc.fusion")
LARGE = 400  # fusion stores a definition costing more, and passes that big are not joined: this
# bounds the size of a kernel's expressions, so LLVM's compile time (a 5000-op chain compiles)
KERNEL_LARGE = 2 * LARGE  # nor are kernels merged past this many operations in all
MIN_OUTER_POINTS = 16  # a reduction with fewer outer points takes no elementwise phase (threads split outer loops)
# bytes apart (a page) past which a kernel's consecutive stores no longer share a page: loops are not
# reordered to merge where a store then strides further along the innermost loop (measured, one thread:
# conv2's adjoint copied to (Ho, Wo, N, Cout) for its weight gradient, 256x16x10x10, stores 16 KB apart
# inside the bias gradient's loops (Cout | N, Ho, Wo) 2.16 ms; alone 0.43 ms and the sum 0.52 ms)
PAGE_BYTES = 4096


def merge_kernels(program):
    """`program` with its kernels merged into multi-output kernels where legal; returns it. A
    scan's step kernels (`Kernel.step`: merged within its body already) stay as they are, and no
    kernel merges across them."""
    kernels = []
    for is_step, run in itertools.groupby(program.kernels, key=lambda k: bool(k.step)):
        kernels += list(run) if is_step else _merged(list(run), program.name)
    program.kernels = _drop_dead_stores(kernels, program)
    for i, kernel in enumerate(program.kernels):
        kernel.name = f"k{i}"
    return program


def _merged(kernels, name):
    """A run of kernels merged into multi-output kernels."""
    merged, writer, known = [], {}, _Known()
    for kernel in _as_soon_as_possible(kernels):
        target, aligned = _target(merged, kernel, writer, known)
        if target is None:
            reason = aligned
            kernel.boundary = reason
            if reason:
                log.info("%s: %s starts a kernel: %s", name, _outs(kernel), reason)
            merged.append(kernel)
            target = len(merged) - 1
        else:
            before = _outs(merged[target])
            merged[target], how = _merge(merged[target], aligned, known)
            merged[target].merged += (f"{_outs(kernel)} ({how})",)
            log.info("%s: %s joins the kernel of %s: %s", name, _outs(kernel), before, how)
        known.place(target, merged[target])
        for out in kernel.outputs():
            writer[out] = target
    one_pass = [one_pass_statistics(k) for k in merged]
    return [k if k is m else _compact(k) for k, m in zip(one_pass, merged)]


class _Known:
    """What merging a run of kernels keeps besides the kernels: the merged kernels indexed by the
    element counts of their loops and of their outer loops (a kernel can join only one whose
    loops, or outer loops, hold as many points as its own, or its outer loops as many as that
    one's loops: alignments reorder or regroup an elementwise kernel's loops, keeping their
    product), so that `_target` tries those instead of every earlier kernel; and each phase's
    operation count, which every candidate and every join asks for again."""

    def __init__(self):
        self.points, self.outer_points, self.keys = {}, {}, {}
        self.costs = {}  # id(phase) -> (phase, _cost(phase)): phases are not changed once made

    def cost(self, phase):
        """Operations of a phase's expressions (counted only until past LARGE)."""
        found = self.costs.get(id(phase))
        if found is None or found[0] is not phase:
            found = self.costs[id(phase)] = phase, cost(phase.expressions(), LARGE)
        return found[1]

    def place(self, index, kernel):
        """Index `kernel` as the merged kernel at `index` (new, or replacing what was there)."""
        for table, key in zip((self.points, self.outer_points), self.keys.get(index, ())):
            table[key].discard(index)
        self.keys[index] = math.prod(kernel.extents), math.prod(kernel.outer_extents)
        for table, key in zip((self.points, self.outer_points), self.keys[index]):
            table.setdefault(key, set()).add(index)

    def candidates(self, kernel) -> set:
        """Indices of the merged kernels `kernel` may join (and some it may not)."""
        points, outer = math.prod(kernel.extents), math.prod(kernel.outer_extents)
        return self.points.get(points, set()) | self.outer_points.get(points, set()) | self.points.get(outer, set())


def _as_soon_as_possible(kernels):
    """`kernels` ordered by how many kernels stand between them and the inputs (stable, loop-less
    kernels first among equals), so that a small independent kernel (Adam's bias corrections) does
    not stand between a producer and its consumers and keep them apart."""
    level, writer = [], {}
    for kernel in kernels:
        level.append(1 + max((level[writer[name]] for name in kernel.reads() if name in writer), default=-1))
        for name in kernel.outputs():
            writer[name] = len(level) - 1
    return [kernels[i] for i in sorted(range(len(kernels)), key=lambda i: (level[i], bool(kernels[i].extents)))]


def _outs(kernel):
    return ", ".join("%" + name for name in kernel.outputs())


def _target(merged, kernel, writer, known):
    """(index of the kernel to merge `kernel` into, `kernel` aligned to it) or (None, why it starts
    its own: why not the nearest). The kernel at the index may be replaced by an alignment of its
    loops. Among the kernels it may join (`known`: what is known of `merged`), it prefers loops as
    they are over reordered ones, then a kernel that produces what it reads, then the nearest."""
    producers = [writer[name] for name in kernel.reads() if name in writer]
    earliest = max(producers, default=0)
    tried = known.candidates(kernel) | {len(merged) - 1}  # the nearest's reason is the one given
    nearest, best = "", None
    for index in sorted((index for index in tried if index >= earliest), reverse=True):
        reason = ""
        for reordered, (a, b, refused) in enumerate(_alignments(merged[index], kernel)):
            reason = refused or _why_not(a, b, known)
            if not reason:
                rank = (reordered > 0, index not in producers, len(merged) - index)
                if best is None or rank < best[0]:
                    best = (rank, index, a, b)
                break
        nearest = nearest or reason  # the reason of the last alignment tried: the most specific
    if best is None:
        return None, nearest
    _, index, a, b = best
    merged[index] = a
    known.place(index, a)
    return index, b


def _alignments(a, b):
    """(a, b) as they are, then, where one is elementwise, with its loops reordered to match the
    other's (BatchNorm's normalisation over (N, D) beside its statistics over (D | N)) or regrouped
    to them (a conv's bias over (N, C, H, W) beside its gemm over (N, C, H·W)); each with why that
    alignment may not merge ('' where it may)."""
    yield a, b, ""
    for fixed, moving, moving_is_b in ((a, b, True), (b, a, False)):
        if moving.gemm is not None or moving.outer != len(moving.extents) or fixed.extents == moving.extents:
            continue
        if sorted(fixed.extents) == sorted(moving.extents):
            for order in itertools.permutations(range(len(moving.extents))):
                if tuple(moving.extents[j] for j in order) == fixed.extents:
                    moved = _permuted(moving, order)
                    yield ((a, moved) if moving_is_b else (moved, b)) + (_scattered(moving, order),)
        elif math.prod(fixed.extents) == math.prod(moving.extents):
            moved = _regrouped(moving, fixed.extents)
            if moved is not None:
                yield ((a, moved) if moving_is_b else (moved, b)) + ("",)


def _scattered(kernel, order) -> str:
    """Why `kernel` with its loops in `order` stores too scattered to merge ('' where it does not): a
    store more than PAGE_BYTES apart along the new innermost loop that was not along the old."""
    last, new = len(order) - 1, order[-1]
    for phase in kernel.phases:
        for store in phase.stores:
            size = numpy_dtype(store.dtype).itemsize
            coeffs = store.access.form.coeffs
            if abs(coeffs[new]) * size > PAGE_BYTES >= abs(coeffs[last]) * size:
                return (f"its loops reordered to fit would store %{store.buffer} {abs(coeffs[new]) * size} bytes "
                        f"apart along the innermost loop (more than a page)")
    return ""


def _permuted(kernel, order):
    """An elementwise kernel with its loops reordered: new loop j is old loop order[j]."""
    def move(x):
        return x.with_access(x.access.permuted(order))
    phases = [Phase([], [replace(s, access=s.access.permuted(order)) for s in p.stores], p.inner)
              for p in kernel.phases]
    return replace(kernel, extents=tuple(kernel.extents[j] for j in order),
                   loads=[move(load) for load in kernel.loads], phases=phases)


def _regrouped(kernel, extents):
    """An elementwise kernel over loops of `extents` (the same elements in row-major order), or
    None where an access is not evenly strided within a merged group of loops."""
    def move(access):
        return access.reshape(kernel.extents, extents)
    loads = [load.with_access(move(load.access)) if move(load.access) is not None else None for load in kernel.loads]
    stores = [[replace(s, access=move(s.access)) if move(s.access) is not None else None for s in p.stores]
              for p in kernel.phases]
    if any(x is None for x in loads) or any(s is None for p in stores for s in p):
        return None
    phases = [Phase([], p_stores, p.inner) for p, p_stores in zip(kernel.phases, stores)]
    return replace(kernel, extents=tuple(extents), outer=len(extents), loads=loads, phases=phases)


def _shape(kernel):
    outer = " ".join(f"i{i}<{n}" for i, n in enumerate(kernel.outer_extents))
    inner = " ".join(f"i{i}<{n}" for i, n in enumerate(kernel.extents) if i >= kernel.outer)
    return f"({outer or 'scalar'}{' | ' + inner if inner else ''})"


def _placement(a, b):
    """How b's loops sit in a's: 'same', 'b-inner' (b is elementwise over a's whole domain),
    'a-inner' (the converse), 'b-outer' (b is elementwise over a's outer loops), 'a-outer', or None."""
    ea, eb = a.extents, b.extents
    a_map, b_map = a.outer == len(ea), b.outer == len(eb)
    if ea == eb and a.outer == b.outer:
        return "same"
    if ea == eb and b_map:
        return "b-inner"
    if ea == eb and a_map:
        return "a-inner"
    if b_map and eb == a.outer_extents and len(eb) < len(ea):
        return "b-outer"
    if a_map and ea == b.outer_extents and len(ea) < len(eb):
        return "a-outer"
    return None


def _why_not(a, b, known) -> str:
    """Why b cannot join a ('' when it can); `known`: a _Known."""
    if b.gemm is not None:
        return "a BLAS call starts a kernel"
    if a.scatter is not None or b.scatter is not None:
        return "a scatter-add's kernel stays apart (it adds rows at indices read at run time)"
    if any(load.indirect for k in (a, b) for load in k.loads if isinstance(load, Load)):
        return "a kernel of indirect loads (a gather's rows) stays apart"
    if 0 in a.extents or 0 in b.extents:
        return "an empty loop"
    placement = _placement(a, b)
    if placement is None:
        return f"its loops {_shape(b)} differ from {_shape(a)}'s loops"
    if sum(map(known.cost, a.phases + b.phases)) > KERNEL_LARGE:
        return f"together they would pass {KERNEL_LARGE} operations (a kernel that big is slow to compile)"
    if a.gemm is not None and placement != "same":
        return "only elementwise work over a BLAS call's output joins it"
    aliased = aliased_transpose(a, b) or aliased_transpose(b, a)
    if aliased:
        return aliased
    if placement in ("a-inner", "b-inner"):
        reducing = a if placement == "b-inner" else b
        points = math.prod(reducing.outer_extents)
        if points < MIN_OUTER_POINTS:
            return (f"an elementwise pass over the inner loops of {_shape(reducing)} would run on "
                    f"{points} outer point(s): too few to share among threads")
    written = {s.buffer: s.access for s in a.stores}
    if a.gemm is not None:
        written[a.gemm.out] = contiguous(a.extents)
    extents = a.extents if len(a.extents) >= len(b.extents) else b.extents
    for load in b.loads:
        if isinstance(load, Load) and load.buffer in written:
            if _specialised(load.access, extents) != _specialised(written[load.buffer], extents):
                return f"it reads %{load.buffer} at other elements than the kernel of %{load.buffer} writes"
    return ""


def _merge(a, b, known):
    """The kernel doing a's work then b's, and a phrase saying how they were put together."""
    placement = _placement(a, b)
    extents = a.extents if len(a.extents) >= len(b.extents) else b.extents
    outer = b.outer if placement in ("a-inner", "a-outer") else a.outer
    a_phases = _placed(a, extents, inner=placement == "a-inner")
    b_phases = _placed(b, extents, inner=placement == "b-inner")
    loads = list(dict.fromkeys(_padded(load, extents) for load in a.loads))
    a_phases = _renumber(a_phases, a, extents, loads)
    b_phases = _renumber(b_phases, b, extents, loads)
    phases, joined, floor = list(a_phases), [], 0
    for phase in b_phases:  # each in the earliest pass it can share, in b's order
        q = _earliest_join(phases, phase, loads, floor, known)
        if q is None:
            phases.append(phase)
            floor = len(phases) - 1
        else:
            phases[q] = _join(phases[q], phase, loads)
            joined.append(q)
            floor = q
    kernel = replace(a, extents=extents, outer=outer, loads=loads, phases=phases, fused=a.fused + tuple(
        m for m in b.fused if m not in a.fused), merged=a.merged + b.merged,
        recomputes=a.recomputes + tuple(r for r in b.recomputes if r not in a.recomputes),
        lowered=a.lowered + tuple(r for r in b.lowered if r not in a.lowered))
    kernel = _compact(kernel) if joined else kernel  # only a join leaves loads unread (it reads stored values)
    how = "a later phase of the same loops" if not joined else \
        f"in the pass of phase {', '.join(map(str, joined))}" + ("" if len(joined) == len(b_phases) else " and later phases")
    if placement in ("b-outer", "a-outer"):
        how += ", once per outer point"
    elif placement in ("b-inner", "a-inner"):
        how += ", over the inner loops"
    return kernel, how


def _padded(load, extents):
    access = _specialised(load.access, extents)
    return load if access is load.access else load.with_access(access)


def _specialised(access, extents):
    """`access.specialised(extents)`, or `access` itself where that is equal to it (no guards to
    drop, as many loops): a kernel growing by merges has its accesses padded at every merge."""
    if not access.guards and len(access.form.coeffs) == len(extents):
        return access
    return access.specialised(extents)


def _placed(kernel, extents, inner):
    """kernel's phases, an elementwise one marked as running over the inner loops where asked
    (phases are not changed in place once made: the others are kernel's own, whose operation
    counts `_Known` keeps)."""
    if inner:
        return [Phase([], list(p.stores), True) for p in kernel.phases]
    return list(kernel.phases)


def _renumber(phases, kernel, extents, loads):
    """phases with kernel's load numbers mapped into `loads` (extended as needed) and accesses
    padded to `extents`."""
    numbers, position = {}, {load: n for n, load in reversed(list(enumerate(loads)))}
    for n, load in enumerate(kernel.loads):
        padded = _padded(load, extents)
        if padded not in position:
            position[padded] = len(loads)
            loads.append(padded)
        numbers[n] = position[padded]
    if all(numbers[n] == n and loads[n] == load for n, load in enumerate(kernel.loads)) and all(
            _specialised(s.access, extents) == s.access for phase in phases for s in phase.stores):
        return phases  # the kernel's own loads, in order, over its own loops: nothing to rewrite

    def leaf(payload):
        return ScalarExpr("arg", payload=payload if isinstance(payload, Acc) else numbers[payload])

    result = []
    for phase in phases:
        reductions = [replace(r, body=map_leaves(r.body, leaf)) for r in phase.reductions]
        stores = [replace(s, access=_specialised(s.access, extents), value=map_leaves(s.value, leaf))
                  for s in phase.stores]
        result.append(Phase(reductions, stores, phase.inner))
    return result


def _earliest_join(phases, phase, loads, floor, known):
    """The first of `phases` from `floor` on that `phase` can join, after every phase storing what
    it reads; or None."""
    read = {loads[n].buffer for n in leaf_set(phase.expressions()) if isinstance(n, int) and isinstance(loads[n], Load)}
    first = max([floor] + [p for p, ph in enumerate(phases) if read & {s.buffer for s in ph.stores}])
    return next((q for q in range(first, len(phases)) if _joinable(phases[q], phase, loads, known)), None)


def _joinable(first, second, loads, known) -> bool:
    """Whether `second` can run in the same pass as `first` (before it: its reductions read
    nothing `first` stores, since those stores come after all reductions)."""
    if first.inner != second.inner or (second.reductions and (first.inner or not first.reductions)):
        return False
    if known.cost(first) + known.cost(second) > LARGE:
        return False
    written = {s.buffer for s in first.stores}
    for r in second.reductions:
        if any(isinstance(p, int) and isinstance(loads[p], Load) and loads[p].buffer in written
               for p in leaves(r.body)):
            return False
    return True


def _join(first, second, loads):
    """One phase doing both; `second`'s reads of what `first` stores at that element use the value,
    and its accumulators are numbered after `first`'s."""
    values = {(s.buffer, s.access): s.value for s in first.stores}
    shift = len(first.reductions)

    def leaf(payload):
        if isinstance(payload, Acc):
            return ScalarExpr("arg", payload=Acc(payload.index + shift))
        if isinstance(payload, int) and isinstance(loads[payload], Load):
            load = loads[payload]
            value = values.get((load.buffer, load.access))
            if value is not None:
                return value
        return ScalarExpr("arg", payload=payload)
    stores = [replace(s, value=map_leaves(s.value, leaf)) for s in second.stores]
    reductions = [replace(r, body=map_leaves(r.body, leaf)) for r in second.reductions]
    return Phase(first.reductions + reductions, first.stores + stores, first.inner)


def _compact(kernel):
    """kernel without the loads no expression reads, the rest renumbered in order."""
    used = sorted(p for p in leaf_set(expr for _, expr, _ in kernel.expressions()) if isinstance(p, int))
    if used == list(range(len(used))):  # unread loads only at the end (reads of what the kernel now
        # computes, added last by the merge): no load's number changes
        return replace(kernel, loads=kernel.loads[:len(used)]) if len(used) < len(kernel.loads) else kernel
    numbers = {old: new for new, old in enumerate(used)}

    def leaf(payload):
        return ScalarExpr("arg", payload=numbers[payload] if isinstance(payload, int) else payload)
    phases = [Phase([replace(r, body=map_leaves(r.body, leaf)) for r in p.reductions],
                    [replace(s, value=map_leaves(s.value, leaf)) for s in p.stores], p.inner)
              for p in kernel.phases]
    return replace(kernel, loads=[kernel.loads[i] for i in used], phases=phases)


def _drop_dead_stores(kernels, program):
    """Stores of temporaries that no kernel reads any more (all their readers took the value in
    registers) are dropped, and their buffers with them."""
    read = set().union(*(k.reads() for k in kernels)) | set(program.outputs)
    dead = {name for name, b in program.buffers.items() if b.kind == BufferKind.TEMP and name not in read}
    if not dead:
        return kernels
    result = []
    for kernel in kernels:
        if not any(s.buffer in dead for s in kernel.stores):
            result.append(kernel)
            continue
        phases = []
        for phase in kernel.phases:
            stores = [s for s in phase.stores if s.buffer not in dead]
            if stores or phase.reductions:
                phases.append(Phase(phase.reductions, stores, phase.inner))
            kernel.merged += tuple(f"%{s.buffer} recomputed in registers, not stored"
                                   for s in phase.stores if s.buffer in dead)
        result.append(_compact(replace(kernel, phases=phases)))
    for name in dead:
        del program.buffers[name]
    return result
