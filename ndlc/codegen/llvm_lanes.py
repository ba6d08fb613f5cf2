"""Innermost loops emitted as explicit vectors, a vector's width of iterations at a time (`<8 x
float>` on an AVX2 host), then one at a time for the rest: a mixin of the kernel emitter
(codegen/llvm.py), which supplies `kernel`, the builder `b`, `counters`, `width`, `_range` and `_at`.

A kernel whose innermost loops all run so (`lane_loop`) leaves LLVM nothing to vectorise, and
runtime/native.py compiles it without the loop and SLP vectorisers (their analyses were a third
of the optimiser's time). Such a loop carries no value from one iteration to the next (a map; a
'chunks' kernel's partials, one per column; a 'rows' kernel's block of accumulators, one per
output), so each lane computes what one iteration of the
scalar loop computed, with the same instructions and the same contraction (mathlib's `contract`
steps, no other): its results are the scalar loop's, and LLVM's vectorised copy of it, bit for
bit. A kernel that reduces along its innermost loop (whose order LLVM's vectoriser keeps by its
`reassoc` rules) stays scalar, for LLVM to vectorise.
"""
from llvmlite import ir

from ..ir.kernel import Index, Load, Strategy
from . import mathlib
from .llvm_scalar import I64, constant
from .llvm_vector import ZERO, expression_dtypes, vector_width

I32, PTR = ir.IntType(32), ir.PointerType()
# a loop of at most this many whole vectors of a constant trip count is emitted straight, one copy
# per vector: a 'rows' block's accumulators then sit at constant offsets, which LLVM keeps in
# registers across the reduced loops (a block of 32 floats, or a register tile's rows of 16)
STRAIGHT = 4


def lane_loop(kernel, debug=None):
    """The loop of `kernel` whose iterations its innermost loops run as vectors, or None where
    its code is left to LLVM's loop vectoriser: a reduction along the innermost loop (a 'point'
    kernel's), bounds checks (`debug`), a loop shorter than the width, or an access that is guarded
    along the loop, strided along it (a gather), a store not contiguous along it, or a load of a
    stored buffer elsewhere than where it is stored (a later iteration would read an earlier one's
    store), or streaming stores (llvm_stream.py groups a cache line of scalar points). 'point'
    and 'gemm' kernels run their last loop as vectors, 'chunks' kernels their columns, 'rows'
    kernels their block (the last outer loop: each lane sums its own output in the loops' order)."""
    if debug is not None or any(r.dtype == "bool" for r in kernel.reductions):  # i1 partials: not bytes as vectors
        return None
    if kernel.streams is not None and kernel.streams.buffers:  # llvm_stream.py stores a cache line of points
        return None
    if kernel.strategy == Strategy.CHUNKS:
        var = 0
    elif kernel.strategy == Strategy.ROWS:  # along the block: each lane accumulates its own output
        var = kernel.outer - 1
    elif kernel.strategy in (Strategy.POINT, Strategy.GEMM) and kernel.extents and not kernel.reductions:
        var = len(kernel.extents) - 1
    else:
        return None
    if kernel.extents[var] < vector_width(kernel, expression_dtypes(kernel)):
        return None

    def made(x):  # an access as the emitter makes it (codegen/llvm_memory.py _local)
        local = not isinstance(x, Index) and x.buffer in kernel.local
        return x.access.within_row(kernel.outer) if local else x.access

    stored = {}
    for store in kernel.stores:
        access = made(store)
        if access.form.coeffs[var] != 1 or access.step != 1 or any(g.form.coeffs[var] for g in access.guards):
            return None
        stored.setdefault(store.buffer, set()).add((access.form, access.step))
    if any(len(places) > 1 for places in stored.values()):
        return None
    for load in kernel.loads:
        access = made(load)
        along = access.form.coeffs[var]
        if any(g.form.coeffs[var] for g in access.guards) or along and access.step != 1:
            return None
        if isinstance(load, Load) and (along not in (0, 1) or load.buffer in stored
                                       and stored[load.buffer] != {(access.form, access.step)}):
            return None
    return var


class Lanes:
    """Vector loops and the values in them: inside one (`lanes` > 0) every value is a vector of
    the lanes' values, an access contiguous along the loop one vector load or store, any other
    (invariant along it) one element's value for all the lanes."""
    lanes = 0  # the width of the vector loop being emitted; 0 outside one
    mask = None  # the lanes that load and store, in a loop's last, partial vector

    def _counted(self, var, start, count, body, whole_vectors=False):
        """body() at var = start + i for i in [0, count) (a constant or a value): where `var` is
        the lane loop, `width` iterations at once while as many are left, then a constant rest
        as vectors of its powers of two (a row of 36: 4 vectors of 8 and one of 4, as LLVM's
        vectoriser ran it; masked vectors were 12% slower on this AMD host), a variable rest as
        one vector whose other lanes load and store nothing; elsewhere one iteration at a time.
        At most STRAIGHT whole vectors of a constant count run without a loop; a variable count
        that is known to be `whole_vectors` (a multiple of the width) has no rest."""
        b, w = self.b, self.width if var == self.lane_var else 1
        known = isinstance(count, ir.Constant)
        if w == 1 and self._streams_along(var):  # its stores a cache line at a time (llvm_stream.py)
            self._streamed_for(var, start, b.add(start, count), body)
            return
        if w == 1:
            self._range(self.counters[var], ZERO, count, lambda offset: self._at(var, start, offset, body))
            return
        # the iterations the whole vectors take (w is a power of two)
        whole = ir.Constant(I64, count.constant - count.constant % w) if known \
            else count if whole_vectors else b.and_(count, ir.Constant(I64, -w))

        def vector(offset, rest=None, w=w):  # `rest`: how many lanes load and store (None: all)
            self.lanes = w if w > 1 else 0
            if rest is not None:
                self.mask = b.icmp_unsigned("<", ir.Constant(ir.VectorType(I64, w), list(range(w))), self._splat(rest))
            self._at(var, start, offset, body)
            self.lanes, self.mask = 0, None
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
        while rest:
            piece = 1 << (rest.bit_length() - 1)
            vector(ir.Constant(I64, offset), w=piece)
            offset, rest = offset + piece, rest - piece

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

    def _get(self, pointer, ty, along=True):
        """The `ty` at `pointer`; inside a vector loop, the lanes' consecutive elements from it
        (`along` the loop), or its one element in every lane."""
        if self.lanes and along:
            vector = ir.VectorType(ty, self.lanes)
            if self.mask is not None:
                load = self._masked("load", vector, [PTR, self.mask.type, vector])
                return self.b.call(load, [pointer, self.mask, mathlib.const(vector, 0)])
            return self.b.load(pointer, typ=vector, align=_bytes(ty))
        return self._splat(self.b.load(pointer, typ=ty))

    def _put(self, value, pointer):
        """Store `value` at `pointer` (inside a vector loop, the lanes' consecutive elements)."""
        if self.mask is not None:
            self.b.call(self._masked("store", ir.VoidType(), [value.type, PTR, self.mask.type]),
                        [value, pointer, self.mask])
        elif self.lanes:
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


def _bytes(ty) -> int:
    """The size (and alignment) of a scalar type in memory."""
    return ty.width // 8 if isinstance(ty, ir.IntType) else 8 if isinstance(ty, ir.DoubleType) else 4
