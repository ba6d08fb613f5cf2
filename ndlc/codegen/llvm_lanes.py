"""Innermost loops emitted as explicit vectors, a vector's width of iterations at a time (`<8 x
float>` on an AVX2 host), then one at a time for the rest: a mixin of the kernel emitter
(codegen/llvm.py), which supplies `kernel`, the builder `b`, `counters`, `width`, `_range` and `_at`.

A kernel whose innermost loops all run so (`lane_loop`) leaves LLVM nothing to vectorise, and
runtime/native.py compiles it without the loop and SLP vectorisers (their analyses were a third
of the optimiser's time). Such a loop carries no value from one iteration to the next (a map; a
'chunks' kernel's partials, one per column; a 'rows' kernel's block of accumulators, one per
output), so each lane computes what one iteration of the
scalar loop computed, with the same instructions and the same fused multiply-adds (mathlib's,
no other): its results are the scalar loop's, and LLVM's vectorised copy of it, bit for
bit. A 'point' kernel that reduces along its innermost loop (float32 sums and maxima) sums in
the order LLVM's vectoriser chose by its `reassoc` rules where that order is known (`interleaved`,
`Lanes._reduce`), and in codegen's own order elsewhere (llvm_partials.py `_in_order`: rows of any length,
mathlib in the body, several values carried), fixed per row, so never dependent on the threads.
"""
from llvmlite import ir

from ..ir.kernel import Combine, Strategy
from ..ir.kernel_leaves import Index, Load
from ..ir.scalar import PRIMITIVES, postorder
from ..ir.short_rows import side_by_side
from . import mathlib
from .llvm_scalar import I64, constant
from .llvm_vector import (VECTOR_BYTES, ZERO, expression_dtypes, interleaved_rows, moves, splittable, strided_along,
                          vector_width)

I32, PTR = ir.IntType(32), ir.PointerType()
# a loop of at most this many whole vectors of a constant trip count is emitted straight, one copy
# per vector: a 'rows' block's accumulators then sit at constant offsets, which LLVM keeps in
# registers across the reduced loops (a block of 32 floats, or a register tile's rows of 16)
STRAIGHT = 4
# A 'point' kernel's reduction along its inner loop, in the order LLVM's loop vectoriser sums it
# (`Lanes._reduce`): PARTS vectors of partial results per reduction (its interleave count on AVX2
# hosts where its estimate of the registers a step needs allows it), for loops of at least
# REDUCED_LEAST iterations (from there the trip count over twice the vector allows PARTS). The
# registers: LIVE[n] is the most distinct loads and operations the reduction bodies of a phase
# carrying n values (sums; a max carries its NaN flag too) may have; measured against LLVM
# (tests/codegen/test_lanes.py): one sum of 8 operations on 6 loads interleaved 4 times, of 10
# less; two sums of 4 operations on 4 loads 4 times, of 7 on 6 less, and a max beside a sum less.
# A body calling a mathlib polynomial is left to LLVM.
PARTS = 4
REDUCED_LEAST = 64
LIVE = {1: 14, 2: 8}
F32_LANES = VECTOR_BYTES // 4  # float32 lanes of a vector
# A row-local temporary (a softmax's exponentials, a row on the thread's stack) has this many spare
# bytes past its end (an AVX-512 vector), so that a vector loop's rest writes it as a whole vector
# and reads it back as one whose other lanes it then replaces with 0 (`padded`): a masked store is
# not forwarded to later loads, which wait until it retires, and softmax 1000x77's sum of
# exponentials (its 13 last a masked store) waited so for each row's (one thread, CPU-time minima,
# six alternations at load 5.5-7: 41.2-43.6 -> 39.6-40.4 us a call; docs/ARCHITECTURE.md)
LOCAL_SPARE = 64


def lane_loop(kernel, debug=None):
    """The loop of `kernel` whose iterations its innermost loops run as vectors, or None where
    its code is left to LLVM's loop vectoriser: a reduction along the innermost loop other than
    float32 sums and maxima (a 'point' kernel's), bounds checks (`debug`), a loop shorter than
    the width (two, where the kernel `moves` data), or an access that is guarded along the loop
    (but a map's load whose guards split its last loop), strided along it (but forward strides
    where the kernel `moves` data: gathers and scatters), or a load of a stored buffer elsewhere than where it is stored (a later iteration would read an
    earlier one's store), or an indirect load whose row moves along it, or streaming stores of any other kernel. 'point' and 'gemm' kernels run
    their last loop as vectors (a 'point' kernel's float32 reductions along it too: `along_row`),
    'chunks' kernels their columns, 'rows' kernels their block (the last outer loop: each lane
    sums its own output in the loops' order; a max pooling's windows gathered)."""
    if debug is not None or any(r.dtype == "bool" for r in kernel.reductions):  # i1 partials: not bytes as vectors
        return None
    if kernel.streams is not None and kernel.streams.buffers and not (moves(kernel) or _maths_along_row(kernel)):
        return None  # llvm_stream.py groups a line of points along the store loop: a map's as codegen's vectors
    if kernel.strategy == Strategy.CHUNKS:
        var = 0
    elif kernel.strategy == Strategy.ROWS:  # along the block: each lane accumulates its own output
        var = kernel.outer - 1
    elif kernel.strategy in (Strategy.POINT, Strategy.GEMM) and kernel.extents and (
            not kernel.reductions or kernel.strategy == Strategy.POINT and along_row(kernel)):
        var = len(kernel.extents) - 1
    else:
        return None
    # a 'rows' kernel of maxima (max pooling's windows, passes/schedule.py `_windowed`): its loads gathered too
    windows = kernel.strategy == Strategy.ROWS and all(r.combine == Combine.MAX for r in kernel.reductions)
    moving = moves(kernel)  # gathers, scatters, guards and short rows (llvm_vector.py)
    gathers = moving or side_by_side(kernel)  # rows side by side: a lane gathers its row, scatters its stores
    if kernel.extents[var] < (2 if moving else vector_width(kernel, expression_dtypes(kernel))):
        return None
    guarded = moving and kernel.strategy == Strategy.POINT  # a map: its last loop split by its guards

    def made(x):  # an access as the emitter makes it (codegen/llvm_memory.py _local; side by side, a block's rows)
        local = not isinstance(x, Index) and x.buffer in kernel.local and not side_by_side(kernel)
        return x.access.within_row(kernel.outer) if local else x.access
    rows = [made(kernel.loads[x.indirect.index]) for x in kernel.loads if isinstance(x, Load) and x.indirect]
    if guarded and interleaved_rows(kernel, vector_width(kernel, expression_dtypes(kernel))):
        return var - 1 if not any(a.form.coeffs[var - 1] for a in rows) else None  # short rows: the loop before them
    if any(a.form.coeffs[var] for a in rows):
        return None  # an indirect load's row is one for all the lanes (codegen/llvm_memory.py _row)

    stored = {}
    for phase in kernel.phases:
        for store in phase.stores:
            access = made(store)
            if var >= kernel.outer and not phase.inner:  # once per outer point, outside the loop
                if access.form.coeffs[var]:
                    return None
            elif not strided_along(access, var, gathers) or any(g.form.coeffs[var] for g in access.guards):
                return None
            stored.setdefault(store.buffer, set()).add((access.form, access.step))
    if any(len(places) > 1 for places in stored.values()):
        return None
    for load in kernel.loads:
        access = made(load)
        along = access.form.coeffs[var]
        if any(g.form.coeffs[var] and not (guarded and splittable(g, var)) for g in access.guards) \
                or along and access.step != 1:
            return None
        if isinstance(load, Load) and (along and not strided_along(access, var, gathers or windows) or load.buffer in stored
                                       and stored[load.buffer] != {(access.form, access.step)}):
            return None
    return var


def _maths_along_row(kernel) -> bool:
    """Whether a streamed 'point' kernel reduces along its row and stores values calling a mathlib
    polynomial there (a softmax's exponentials): codegen's vectors run that map 16 wide on AVX-512
    (llvm_partials.py `_wide_map`), where LLVM's vectoriser ran the scalar exp 8 wide (softmax
    4096x1000 forward, one thread: 2.8-3.1 -> 1.7 CPU ms, the same bits). LayerNorm's streamed rows,
    without a polynomial, stay LLVM's (65536x256 ran 5.1 -> 7.0 ms as codegen's vectors), and so do
    rows that a wider type narrows below 8 float32 lanes (SoftmaxLoss's gradient, its i64 labels:
    3.0-3.3 -> 3.6 ms in vectors of 4)."""
    return kernel.strategy == Strategy.POINT and bool(kernel.reductions) and along_row(kernel) \
        and vector_width(kernel, expression_dtypes(kernel)) == F32_LANES and any(
        e.prim in PRIMITIVES and PRIMITIVES[e.prim].llvm[0].startswith("mathlib.")
        for phase in kernel.phases if phase.inner for s in phase.stores for e in postorder(s.value))


def interleaved(kernel) -> bool:
    """Whether a 'point' kernel's reductions run as codegen's vectors (`Lanes._reduce`): one
    inner loop of at least REDUCED_LEAST iterations, every value float32, sums and maxima whose
    bodies LLVM's vectoriser interleaves PARTS times (see LIVE), and a rest after the main loop of
    at most one vector, whose epilogue's width (LLVM's cost model picks it) does not change the sums."""
    n = kernel.extents[-1]
    if kernel.outer != len(kernel.extents) - 1 or n < REDUCED_LEAST:
        return False
    dtypes = {*expression_dtypes(kernel).values(), *(x.dtype for x in (*kernel.loads, *kernel.stores))}
    if dtypes - {None} != {"f32"} or n % (PARTS * F32_LANES) > F32_LANES:
        return False
    for phase in kernel.phases:
        carried = len(phase.reductions) + sum(r.combine == Combine.MAX for r in phase.reductions)
        nodes = _distinct([r.body for r in phase.reductions])
        if phase.reductions and (carried not in LIVE or len(nodes) > LIVE[carried]):
            return False
        if any(r.dtype != "f32" or r.combine not in (Combine.ADD, Combine.MAX) for r in phase.reductions) \
                or any(e.prim not in PRIMITIVES for e in nodes.values() if e.prim != "arg") \
                or calls_mathlib(phase.reductions):
            return False
    return True


def calls_mathlib(reductions) -> bool:
    """Whether the bodies of `reductions` call a mathlib polynomial (exp, log, tanh, ...)."""
    return any(e.prim in PRIMITIVES and PRIMITIVES[e.prim].llvm[0].startswith("mathlib.")
               for e in _distinct([r.body for r in reductions]).values())


def along_row(kernel) -> bool:
    """Whether a 'point' kernel's reductions run along its last loop as codegen's vectors: float32
    sums and maxima, in LLVM's order where `interleaved`, else in codegen's own (`_in_order`,
    over any number of inner loops)."""
    return all(r.dtype == "f32" and r.combine in (Combine.ADD, Combine.MAX) for r in kernel.reductions)


def _distinct(exprs) -> dict:
    """The distinct loads and operations of expressions `exprs` (structurally equal ones once, as
    the emitter computes them: llvm_scalar.py Values), by their structure."""
    keys, nodes = {}, {}
    for expr in exprs:
        for e in postorder(expr):
            keys[id(e)] = (e.prim, repr(e.payload), tuple(keys[id(a)] for a in e.args))
            if e.prim != "const":
                nodes[keys[id(e)]] = e
    return nodes


class Lanes:
    """Vector loops and the values in them: inside one (`lanes` > 0) every value is a vector of
    the lanes' values, an access contiguous along the loop one vector load or store, any other
    (invariant along it) one element's value for all the lanes."""
    lanes = 0  # the width of the vector loop being emitted; 0 outside one
    mask = None  # the lanes that load and store, in a loop's last, partial vector
    polynomial = False  # the loop's values call a mathlib polynomial (llvm_partials.py `_wide_map`)

    def _counted(self, var, start, count, body, whole_vectors=False):
        """body() at var = start + i for i in [0, count) (a constant or a value): where `var` is
        the lane loop, `width` iterations at once while as many are left, then a constant rest
        as vectors of its powers of two (a row of 36: 4 vectors of 8 and one of 4, as LLVM's
        vectoriser ran it; masked vectors were 12% slower on this AMD host), a variable rest, or
        a `polynomial` map's rest of several powers of two, as one vector whose other lanes load
        and store nothing (softmax 1000x77's exponentials: a rest of 13 one polynomial, not three);
        elsewhere one iteration at a time.
        At most STRAIGHT whole vectors of a constant count run without a loop; a variable count
        that is known to be `whole_vectors` (a multiple of the width) has no rest."""
        b, w = self.b, self.width if var == self.lane_var else 1
        known = isinstance(count, ir.Constant)
        if self._streams_along(var):  # its stores a cache line at a time (llvm_stream.py)
            self._streamed_for(var, start, b.add(start, count), body)
            return
        if w == 1:
            self._range(self.counters[var], ZERO, count, lambda offset: self._at(var, start, offset, body))
            return
        # the iterations the whole vectors take (w is a power of two)
        whole = ir.Constant(I64, count.constant - count.constant % w) if known \
            else count if whole_vectors else b.and_(count, ir.Constant(I64, -w))

        def vector(offset, rest=None, w=w):
            self._vector(var, start, offset, body, w, rest)
        if known and whole.constant <= STRAIGHT * w:
            for offset in range(0, whole.constant, w):
                vector(ir.Constant(I64, offset))
        else:
            self._range(self.counters[var], ZERO, whole, vector, step=w)
        if not known:
            if not whole_vectors:
                with b.if_then(b.icmp_signed("<", whole, count)):
                    vector(whole, b.sub(count, whole))
            return
        offset, rest = whole.constant, count.constant - whole.constant
        if self.polynomial and rest & (rest - 1):  # one polynomial for the rest, not one per power of two
            vector(ir.Constant(I64, offset), ir.Constant(I64, rest), w=1 << rest.bit_length())
            return
        while rest:
            piece = 1 << (rest.bit_length() - 1)
            vector(ir.Constant(I64, offset), w=piece)
            offset, rest = offset + piece, rest - piece

    def _vector(self, var, start, offset, body, w, rest=None):
        """body() at var = start + offset as one vector of `w` lanes (`w` 1: a scalar iteration);
        `rest`: how many lanes load and store (None: all)."""
        self.lanes = w if w > 1 else 0
        if rest is not None:
            self.mask = self.b.icmp_unsigned("<", ir.Constant(ir.VectorType(I64, w), list(range(w))), self._splat(rest))
        self._at(var, start, offset, body)
        self.lanes, self.mask = 0, None

    def _reduce(self, phase, slots):
        """The reductions of `phase` along the inner loop (the lane loop): in LLVM's vectoriser's
        order where `interleaved`, bit for bit (its main loop of PARTS vectors of the width per
        reduction, then its vectorised epilogue of one vector of half the width, then one iteration
        at a time), else in codegen's own order (`_in_order`)."""
        n, start = self.kernel.extents[self.lane_var], 0
        if not interleaved(self.kernel):
            self._in_order(phase, slots)
            return
        for w, parts in ((self.width, PARTS), (self.width // 2, 1)):
            end = n - (n - start) % (w * parts)
            if end > start and w > 1:
                parts_at = self._open_parts(phase, slots, w, parts)
                self._range(self.counters[self.lane_var], ir.Constant(I64, start), ir.Constant(I64, end),
                            lambda i: [self._add_part(phase, parts_at, p, i, w, p) for p in range(parts)],
                            step=parts * w)
                self._close_parts(parts_at, w)
                start = end
        if start < n:
            def at(i):
                self.vars[self.lane_var] = i
                self._accumulate(phase, slots, self.accs.__getitem__)
            self._range(self.counters[self.lane_var], ir.Constant(I64, start), ir.Constant(I64, n), at)

    def _entry_alloca(self, ty, name, size=None):
        """An alloca of `ty` (`size` of them) in the function's entry block (one stack slot,
        however often the code that uses it runs)."""
        with self.b.goto_entry_block():
            return self.b.alloca(ty, size=size, name=name)

    def _splat_to(self, value, w):
        """A vector of `w` lanes of scalar `value`."""
        lanes, self.lanes = self.lanes, w
        vector = self._splat(value)
        self.lanes = lanes
        return vector

    def _invariant(self, make):
        """make() as scalar code: a value the same in every lane (an optimizer's step size, its
        bias correction's power) computed once, and splatted where a lane's value uses it."""
        lanes, self.lanes = self.lanes, 0
        value = make()
        self.lanes = lanes
        return value

    def _shaped(self, ty):
        """`ty`, or inside a vector loop a vector of it."""
        return ir.VectorType(ty, self.lanes) if self.lanes else ty

    def _constant(self, dtype, value):
        return constant(dtype, value, self.lanes)

    def _splat(self, value):
        """`value`, or inside a vector loop a vector of it in every lane."""
        if not self.lanes:
            return value
        if isinstance(value, ir.Constant):
            return mathlib.const(ir.VectorType(value.type, self.lanes), value.constant)
        key = (id(self.b.block), id(value), self.lanes)  # once per basic block and width
        if key not in self.splats:
            b, vector = self.b, ir.VectorType(value.type, self.lanes)
            first = b.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(I32, 0))
            self.splats[key] = b.shuffle_vector(first, ir.Constant(vector, ir.Undefined),
                                                ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes))
        return self.splats[key]

    def _get(self, pointer, ty, along=True, padded=False):
        """The `ty` at `pointer`; inside a vector loop, the lanes' consecutive elements from it
        (`along` the loop), or its one element in every lane. A masked vector's other lanes are 0:
        loaded as a whole where the buffer is `padded` (LOCAL_SPARE), else masked."""
        if self.lanes and along:
            vector = ir.VectorType(ty, self.lanes)
            if self.mask is not None and padded:
                whole = self.b.load(pointer, typ=vector, align=_bytes(ty))
                return self.b.select(self.mask, whole, mathlib.const(vector, 0))
            if self.mask is not None:
                load = self._masked("load", vector, [PTR, self.mask.type, vector])
                return self.b.call(load, [pointer, self.mask, mathlib.const(vector, 0)])
            return self.b.load(pointer, typ=vector, align=_bytes(ty))
        return self._splat(self.b.load(pointer, typ=ty))

    def _put(self, value, pointer, padded=False):
        """Store `value` at `pointer` (inside a vector loop, the lanes' consecutive elements: a
        masked vector's lanes only, or where the buffer is `padded` (LOCAL_SPARE) all of them)."""
        if self.mask is not None and not padded:
            self.b.call(self._masked("store", ir.VoidType(), [value.type, PTR, self.mask.type]),
                        [value, pointer, self.mask])
        elif self.lanes or self.mask is not None:
            self.b.store(value, pointer, align=_bytes(value.type.element))
        else:
            self.b.store(value, pointer)

    def _masked(self, access, result, args):
        """LLVM's masked load or store (`access`) of vectors of the lanes' type, declared once."""
        vector = args[0] if access == "store" else result
        name = f"llvm.masked.{access}.v{vector.count}{vector.element.intrinsic_name}.p0"
        return self.b.module.globals.get(name) or ir.Function(self.b.module, ir.FunctionType(result, args), name)

    def _along(self, access) -> bool:
        """Whether `access` moves along the vector loop being emitted."""
        return bool(self.lanes) and access.form.coeffs[self.lane_var] != 0

    def _indices(self, index, access):
        """An Index load's value at element position `index`; inside a vector loop, the lanes'."""
        if not self.lanes:
            return index
        step = access.form.coeffs[self.lane_var]
        return self.b.add(self._splat(index), ir.Constant(ir.VectorType(I64, self.lanes),
                                                          [step * lane for lane in range(self.lanes)]))


def spare_elements(ty) -> int:
    """The LOCAL_SPARE bytes past a row-local temporary's end, in elements of its type `ty`."""
    return LOCAL_SPARE // _bytes(ty)


def _bytes(ty) -> int:
    """The size (and alignment) of a scalar type in memory."""
    return ty.width // 8 if isinstance(ty, ir.IntType) else 8 if isinstance(ty, ir.DoubleType) else 4
