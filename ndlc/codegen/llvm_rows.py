"""The 'rows' strategy's loops: a mixin of the kernel emitter (codegen/llvm.py), which supplies
`kernel`, the builder `b`, `vars`, `counters`, `ranges`, `slots`, `accs`, `reductions`, the loop
helpers (`_loops`, `_for`, `_range`, the guard splitting of llvm_guards.py) and the phases' code
(`_initialise`, `_accumulate`, `_stores`)."""
import contextlib
import math

from llvmlite import ir

from . import mathlib
from ..ir.kernel_leaves import Load
from ..ir.scalar import leaves
from ..ir.tiles import multiply_add, ragged_pieces
from ..ir.types import numpy_dtype
from .llvm_scalar import I1, I64, MEMORY, TYPES, Values
from .llvm_lanes import PTR
from .llvm_vector import I32, ZERO

TRANSPOSE_LEAST = 1 << 12  # elements of a kernel below which rows side by side gather their lanes: the
# transposes' shuffles made the MLP's SoftmaxLoss kernel (256x10) 82.7 KB of LLVM IR, not 27.7, 0.05 s
# of a cold compile against a few microseconds of a call; the same values either way


class RowBlocks:
    """The last outer loop in blocks of outputs accumulated side by side, and the register tiles of
    the loop before it (passes/schedule.py)."""

    def _rows(self):
        """The last outer loop in blocks of kernel.block: each phase accumulates a block of outputs side
        by side (the innermost loop runs along the block, so strided reductions vectorise). With a tile,
        the loop before in tiles of kernel.tile rows, each row a copy of the block's code, so that LLVM
        keeps the whole tile in vector registers and shares each invariant load between its rows; where
        the block does not divide the last loop (the schedule checked that its loads stay in their
        buffers), the last block computes whole and stores the remainder (ir/tiles.py ragged_pieces):
        rows of 28 as blocks of 16, the last storing 12."""
        k, b = self.kernel, self.b
        last = k.outer - 1
        start, stop = self.ranges.get(last, (ir.Constant(I64, 0), ir.Constant(I64, k.extents[last])))
        block = ir.Constant(I64, k.block)
        whole_blocks = last not in self.ranges and k.extents[last] % min(  # rows side by side: all lanes rows
            k.block, k.extents[last] if not self.side_by_side else k.block) == 0
        # every block a multiple of the vector width (its blocks, its loop and a thread's pieces are)
        piece = k.split.piece if last in self.ranges else None
        in_vectors = all(n % self.width == 0 for n in (k.block, k.extents[last], piece or 0))
        count = b.udiv(b.add(b.sub(stop, start), ir.Constant(I64, k.block - 1)), block)

        def one_block(first, stored=None):  # the block from `first`; with a tile, `stored`: the pieces it stores
            self.block_start = first
            end = mathlib.intrinsic(b, "llvm.smin", b.add(first, block), stop)

            def along_block(body, innermost=False, pieces=((0, k.block),)):
                if k.tile:  # loops of a constant trip count per row, whose accumulators LLVM keeps in registers
                    checked = self._row_guards() if innermost else ()
                    for row in range(k.tile):
                        self.vars[last - 1] = b.add(self.tile_start, ir.Constant(I64, row))
                        for offset, trip in pieces:
                            at = b.add(first, ir.Constant(I64, offset))
                            with b.if_then(self._hold(checked)) if checked else contextlib.nullcontext():
                                if last == self.lane_var:
                                    self._counted(last, at, ir.Constant(I64, trip), body)
                                else:
                                    self._range(self.counters[last], ir.Constant(I64, 0), ir.Constant(I64, trip),
                                                lambda e, at=at: self._at(last, at, e, body))
                elif last == self.lane_var and self.side_by_side:  # one vector at constant offsets (in registers)
                    self._vector(last, first, ZERO, body, self.width, self.rest)
                elif last == self.lane_var:  # codegen's vectors (llvm_lanes.py): whole blocks a constant count
                    size = ir.Constant(I64, min(k.block, k.extents[last])) if whole_blocks else b.sub(end, first)
                    self._counted(last, first, size, body, whole_vectors=in_vectors)
                elif innermost and self._splittable(last):  # inside the inner loops: split off padding guards
                    self._split_by_guards(last, first, end, body)
                else:
                    self._for(last, first, end, body)

            def phases():
                self.kept = set()  # a block gathers its rows again
                if self._transposing():
                    self._transposed_rows(first)
                for phase, slots in zip(k.phases, self.slots):
                    self.phase_slots = slots
                    if phase.reductions:
                        along_block(lambda phase=phase, slots=slots: self._initialise(phase, slots, self._acc_pointer))
                        def taps(phase=phase, slots=slots):
                            along_block(lambda: self._accumulate(phase, slots, self._acc_pointer), innermost=True)
                        if k.tile:
                            self._taps(k.outer, first, taps)
                        else:
                            self._loops(k.outer, len(k.extents), taps)
                        for slot in self.keyed.intersection(slots):  # the maxes' keys back to floats
                            along_block(lambda slot=slot: self._put(self._keyed(self._get(
                                self._acc_pointer(slot), TYPES["f32"])), self._acc_pointer(slot)))
                    if phase.inner and self._row_stores(phase.stores):
                        self._transposed_row_stores(phase.stores, first)
                    elif phase.inner:
                        self._loops(k.outer, len(k.extents), lambda phase=phase: along_block(
                            lambda: self._stores(phase.stores), innermost=True))
                    elif stored is None and self._transposable(phase.stores):
                        self._transposed_stores(phase.stores, first)
                    else:
                        along_block(lambda phase=phase: self._stores(phase.stores), pieces=stored or ((0, k.block),))

            if self.side_by_side and last == self.lane_var and not whole_blocks:  # the last block's rows masked
                with b.if_else(b.icmp_signed("==", b.sub(end, first), block)) as (whole, partial):
                    with whole:
                        phases()
                    with partial:  # on accumulators of its own: masked accesses keep an alloca in memory
                        self.rest, accs = b.sub(end, first), self.accs
                        self.accs = [self._entry_alloca(acc.allocated_type, f"{acc.name}.rest", acc.operands[0])
                                     for acc in accs]
                        for acc in self.accs:
                            acc.type = PTR
                        phases()
                        self.rest, self.accs = None, accs
            else:
                phases()

        def numbered_block(number):
            one_block(b.add(start, b.mul(number, block)))

        def tile_blocks(tile):  # the whole blocks, then a ragged row's last: computed whole, stored in part
            whole, rest = divmod(k.extents[last], k.block)
            self.tile_start = b.mul(tile, ir.Constant(I64, k.tile))
            self._range(self.block_counter, ir.Constant(I64, 0), ir.Constant(I64, whole), numbered_block)
            if rest:
                one_block(ir.Constant(I64, whole * k.block), ragged_pieces(rest, self._itemsize()))
        if k.tile:
            self._range(self.counters[last - 1], ir.Constant(I64, 0), ir.Constant(I64, k.extents[last - 1] // k.tile),
                        tile_blocks)
        else:
            self._range(self.block_counter, ir.Constant(I64, 0), count, numbered_block)
        self.block_start = self.tile_start = None

    def _row_stores(self, stores) -> bool:
        """Rows side by side: whether a map's `stores` along the rows are row-local temporaries
        (`_block_local`) or float32 rows of their own, contiguous and unguarded, that
        `_transposed_row_stores` stores a vector of each row at a time."""
        k, last = self.kernel, self.kernel.outer - 1
        if not self._transposing():
            return False
        rows = [s for s in stores if s.buffer not in k.local]
        return bool(rows) and all(s.dtype == "f32" and not s.access.guards and s.access.step == 1
                                  and s.access.form.coeffs[-1] == 1
                                  and s.access.form.coeffs[last] >= k.extents[-1] for s in rows)

    def _transposed_row_stores(self, stores, first):
        """A map's stores along the block's rows (`_row_stores`): a vector's width of elements at a
        time, each element's value computed as the vector of the block's lanes (a row-local
        temporary's kept so), the values of each store transposed in registers into each row's
        consecutive elements and stored as one vector (the row's last ones a shorter one; rows past
        a partial block's none): what scattering a lane at a time stored (softmax's output)."""
        k, b, w = self.kernel, self.b, self.width
        last, n = k.outer - 1, k.extents[-1]
        rows = [s for s in stores if s.buffer not in k.local]
        kept, gathered = set(self.kept), set(self.kept)  # each element's code gathers what a block has not kept

        def chunk(at, count=w):
            values = []
            for element in range(count):
                self.kept = set(kept)
                def body(element=element):
                    memo = Values()
                    made = [self._emit(s.value, memo, s.dtype) for s in stores]
                    for s, value in zip(stores, made):
                        if s.buffer in k.local:
                            self._put(value, self._block_local(s.buffer, s.access))
                    values.append([value for s, value in zip(stores, made) if s.buffer not in k.local])
                self.vars[-1] = b.add(at, ir.Constant(I64, element))
                self._vector(last, first, ZERO, body, w, self.rest)
                gathered.update(self.kept)
            self.vars[last], self.vars[-1] = first, at
            for number, store in enumerate(rows):
                pointer = b.gep(self.pointers[store.buffer], [self._address(store.access)[0]], inbounds=True,
                                source_etype=MEMORY["f32"])
                stride = store.access.form.coeffs[last]
                for lane, row in enumerate(_transposed(b, [v[number] for v in values])):
                    at_row = b.gep(pointer, [ir.Constant(I64, lane * stride)], inbounds=True, source_etype=MEMORY["f32"])
                    if self.rest is not None and lane:
                        with b.if_then(b.icmp_signed("<", ir.Constant(I64, lane), self.rest)):
                            b.store(row, at_row, align=4)
                    else:
                        b.store(row, at_row, align=4)
        whole = n // w
        if whole:
            self._range(self._entry_alloca(I64, "stored"), ZERO, ir.Constant(I64, whole),
                        lambda c: chunk(b.mul(c, ir.Constant(I64, w))))
        if n % w:
            chunk(ir.Constant(I64, whole * w), n % w)
        self.kept = gathered

    def _block_local(self, buffer, access):
        """Rows side by side: the element of row-local temporary `buffer` (passes/memory.py) at
        `access`, kept on the stack for the block's rows, an element's rows next to each other:
        at the block's first row, the vector of its lanes."""
        b, last = self.b, self.kernel.outer - 1
        element = self._affine(access.within_row(self.kernel.outer).form)
        row = b.sub(self.vars[last], self.block_start)
        at = b.add(b.mul(element, ir.Constant(I64, self.kernel.block)), row)
        return b.gep(self.pointers[buffer], [at], inbounds=True, source_etype=MEMORY[self._store_dtype(buffer)])

    def _store_dtype(self, buffer):
        """The element type a kernel stores into `buffer`."""
        return next(s.dtype for s in self.kernel.stores if s.buffer == buffer)

    def _transposing(self) -> bool:
        """Rows side by side whose rows `_transposed_rows` and `_transposed_row_stores` load and store
        as vectors: not in debug mode, nor in a kernel of fewer than TRANSPOSE_LEAST elements."""
        return (self.side_by_side and self.kernel.outer - 1 == self.lane_var and self.debug is None
                and math.prod(self.kernel.extents) >= TRANSPOSE_LEAST)

    def _transposed_rows(self, first):
        """Rows side by side: each load that a block gathers (`_gathered_once`) and that runs along
        its rows, its rows at least a vector apart, kept for the block from `first` before its
        phases: a vector's width of elements of each of the block's rows one vector load (the row's
        last ones a masked load), transposed in registers into the vector of each element's lanes.
        The same vectors the loads per lane gathered (SoftmaxLoss 1000x77 forward, 16 lanes, one
        thread: 0.050 -> 0.045 CPU ms)."""
        k, b, w = self.kernel, self.b, self.width
        last, n = k.outer - 1, k.extents[-1]
        for number, load in enumerate(k.loads):
            if not (isinstance(load, Load) and load.indirect is None and load.dtype == "f32" and not load.access.guards
                    and load.buffer not in k.outputs() and load.access.step == 1
                    and load.access.form.coeffs[-1] == 1 and load.access.form.coeffs[last] >= w):
                continue
            stride, mem = load.access.form.coeffs[last], MEMORY[load.dtype]
            vector = ir.VectorType(mem, w)
            if number not in self.rows_kept:
                self.rows_kept[number] = self._entry_alloca(vector, f"kept{number}", n)
            self.vars[last], self.vars[-1] = first, ZERO
            start = b.gep(self.pointers[load.buffer], [self._address(load.access)[0]], inbounds=True, source_etype=mem)
            rows = []
            for lane in range(w):
                offset = ir.Constant(I64, lane * stride)
                if self.rest is not None and lane:  # a lane past the last row reads lane 0's
                    offset = b.select(b.icmp_signed("<", ir.Constant(I64, lane), self.rest), offset, ZERO)
                rows.append(b.gep(start, [offset], inbounds=True, source_etype=mem))

            def chunk(at, count=w, number=number, rows=rows, vector=vector, mem=mem):
                if count == w:
                    values = [b.load(b.gep(row, [at], inbounds=True, source_etype=mem), typ=vector, align=4) for row in rows]
                else:
                    mask = ir.Constant(ir.VectorType(I1, w), [lane < count for lane in range(w)])
                    masked = self._masked("load", vector, [PTR, mask.type, vector])
                    values = [b.call(masked, [b.gep(row, [at], inbounds=True, source_etype=mem), mask,
                                              mathlib.const(vector, 0)]) for row in rows]
                for element, column in enumerate(_transposed(b, values)[:count]):
                    b.store(column, b.gep(self.rows_kept[number], [b.add(at, ir.Constant(I64, element))],
                                          inbounds=True, source_etype=vector))
            whole = n // w
            if whole:
                self._range(self._entry_alloca(I64, f"chunk{number}"), ZERO, ir.Constant(I64, whole),
                            lambda c, chunk=chunk: chunk(b.mul(c, ir.Constant(I64, w))))
            if n % w:
                chunk(ir.Constant(I64, whole * w), n % w)
            self.kept.add(number)

    def _keyed(self, value):
        """A float32 (vector) as the int32 key that orders as the floats do (-0 below +0), bitcast
        back to float32: rows side by side max these keys (`_keyed_max`), and the map is its own
        inverse (the accumulator's key after the loop is its float)."""
        b = self.b
        ty = ir.VectorType(I32, value.type.count) if isinstance(value.type, ir.VectorType) else I32
        bits = b.bitcast(value, ty)
        magnitude = b.and_(b.ashr(bits, self._int32(ty, 31)), self._int32(ty, 0x7FFFFFFF))
        return b.bitcast(b.xor(bits, magnitude), value.type)

    def _keyed_max(self, acc, value):
        """The larger of key `acc` and float `value`'s key, a NaN's the largest of all (its float is
        a NaN): one `vpmaxsd` on the loop's carried value, where llvm.maximum's NaN and signed-zero
        rules carried five dependent instructions (SoftmaxLoss 1000x77 forward, one thread: 28% of it)."""
        b = self.b
        ty = ir.VectorType(I32, acc.type.count) if isinstance(acc.type, ir.VectorType) else I32
        key = b.select(b.fcmp_unordered("uno", value, value), self._int32(ty, 0x7FFFFFFF),
                       b.bitcast(self._keyed(value), ty))
        return b.bitcast(mathlib.intrinsic(b, "llvm.smax", b.bitcast(acc, ty), key), acc.type)

    @staticmethod
    def _int32(ty, value):
        """The int32 constant `value` (in every lane of a vector type)."""
        return ir.Constant(ty, [value] * ty.count if isinstance(ty, ir.VectorType) else value)

    def _taps(self, var, first, body):
        """A register tile's reduced loops from `var` around body(), for its block from `first`: each
        loop that a padding guard bounds (an NHWC conv's input read in place, ir/tiles.py
        tile_guards) in three ranges, the taps whose guards hold for every row of the tile in the
        middle (checked nowhere), those that cross the padding on either side (where a guard the
        tile's rows share fails throughout, its loads read nothing; a guard along the rows is checked
        a row). The taps keep their order, and a tap that reads padding adds the product of a zero,
        as over the padded copy: the sums are that copy's, bit for bit. Taps that read only padding
        for the whole tile are skipped where every product is of such a load (`_zero_products`):
        a sum that starts at +0.0 is never -0.0, so adding a zero leaves it as it is, bit for bit
        (an infinite or NaN weight made the padded copy's sum NaN there: skipped, it is not)."""
        k, b = self.kernel, self.b
        if var == len(k.extents):
            body()
            return
        start, stop = ZERO, ir.Constant(I64, k.extents[var])
        guards = self._tap_guards(var)
        if not guards:
            self._for(var, start, stop, lambda: self._taps(var + 1, first, body))
            return
        rows, last = k.outer - 2, k.outer - 1
        self.vars[last], self.vars[rows] = first, self.tile_start
        low, high = start, stop
        for g in guards:  # 0 <= v + rest + (the tile's reach along its rows and block) < bound
            rest = self._affine(g.form, skip=var)
            reach = g.form.coeffs[rows] * (k.tile - 1) + g.form.coeffs[last] * (k.block - 1)
            low = mathlib.intrinsic(b, "llvm.smax", low, b.neg(rest))
            high = mathlib.intrinsic(b, "llvm.smin", high, b.sub(ir.Constant(I64, g.bound - reach), rest))
        low = mathlib.intrinsic(b, "llvm.smin", low, stop)
        high = mathlib.intrinsic(b, "llvm.smax", high, low)
        shared = len(guards) == 1 and not guards[0].form.coeffs[rows] and not guards[0].form.coeffs[last]
        outside = set(guards) if shared else set()  # fails throughout the outer ranges
        known, failing = self.known, self.failing
        for lo, hi, holds in ((start, low, False), (low, high, True), (high, stop, False)):
            if not holds and self._zero_products(outside):
                continue
            self.known, self.failing = (known | set(guards), failing) if holds else (known, failing | outside)
            self._for(var, lo, hi, lambda: self._taps(var + 1, first, body))
        self.known, self.failing = known, failing

    def _transposable(self, stores) -> bool:
        """Whether a register tile's `stores` write each lane's outputs `stride` apart but its rows
        next to each other (an NHWC conv tile of pixels x channels storing NCHW planes), from values
        that codegen's vectors can compute along the block (unguarded loads of buffers the kernel
        does not write): then `_transposed_stores` stores them, where a lane's element each took 8
        scalar stores a vector (LeNet conv2's forward 1.52 ms, 1.24 storing NHWC, one thread)."""
        k, last = self.kernel, self.kernel.outer - 1
        written = {s.buffer for s in k.stores}
        loads = [k.loads[n] for s in stores for n in leaves(s.value) if isinstance(n, int)]
        return bool(k.tile) and self.lane_var in (last, None) and not self.side_by_side and self.debug is None \
            and not self._streamed() and k.block % self.width == 0 \
            and all(isinstance(x, Load) and not x.access.guards and x.buffer not in written for x in loads) \
            and all(s.buffer not in k.local and not s.access.guards and s.access.form.coeffs[last - 1] == 1
                    and s.access.form.coeffs[last] >= k.tile and numpy_dtype(s.dtype).itemsize * self.width == 32
                    for s in stores)

    def _transposed_stores(self, stores, first):
        """The tile's stores for its block from `first`: each vector of the block's lanes computed
        (as codegen's vectors) at every row, the rows' vectors transposed in registers (in groups of a
        vector's lanes) into one vector per lane of its consecutive rows, stored whole: the same
        values, in fewer stores."""
        k, b, w = self.kernel, self.b, self.width
        last, lane_var = k.outer - 1, self.lane_var
        self.lane_var = last
        for offset in range(0, k.block, w):
            rows = []
            for row in range(k.tile):
                self.vars[last - 1] = b.add(self.tile_start, ir.Constant(I64, row))
                memo = Values()
                self._vector(last, first, ir.Constant(I64, offset), lambda: rows.append(
                    [self._emit(s.value, memo, s.dtype) for s in stores]), w)
            self.vars[last - 1] = self.tile_start
            self.vars[last] = b.add(first, ir.Constant(I64, offset))
            for n, store in enumerate(stores):
                index, _ = self._address(store.access)
                element = MEMORY[store.dtype]
                pointer = b.gep(self.pointers[store.buffer], [index], inbounds=True, source_etype=element)
                stride = store.access.form.coeffs[last]
                for group in range(0, k.tile, w):
                    columns = _transposed(b, [values[n] for values in rows[group:group + w]])
                    for lane, column in enumerate(columns):
                        at = b.gep(pointer, [ir.Constant(I64, lane * stride + group)], inbounds=True, source_etype=element)
                        b.store(column, at, align=numpy_dtype(store.dtype).itemsize)
        self.lane_var = lane_var

    def _zero_products(self, failing) -> bool:
        """Whether every reduction adds, in fused multiply-adds, products of a load that reads
        nothing where `failing` guards fail: taps whose products are zeros, which `_taps` skips."""
        k = self.kernel
        return bool(failing) and all(
            multiply_add(r, k.loads) and any(not failing.isdisjoint(k.loads[a.payload].access.guards) for a in r.body.args)
            for r in k.reductions)

    def _row_guards(self):
        """The guards a tile's taps check a row (along its rows, neither known nor failing here)
        where a row whose check fails adds only zero products (`_zero_products`): `_rows` then
        skips that row's taps, where it added them."""
        k = self.kernel
        used = {n for r in k.reductions for n in leaves(r.body) if isinstance(n, int)}
        checked = frozenset(g for n in used for g in k.loads[n].access.guards) - self.known - self.failing
        return checked if checked and self._zero_products(checked) and all(
            any(checked <= set(k.loads[a.payload].access.guards) for a in r.body.args) for r in k.reductions) else ()

    def _hold(self, guards):
        """Whether all `guards` hold at the current loop variables (an i1)."""
        b, valid = self.b, None
        for g in sorted(guards, key=str):
            f = self._affine(g.form)
            ok = b.and_(b.icmp_signed(">=", f, ZERO), b.icmp_signed("<", f, ir.Constant(I64, g.bound * g.step)))
            if g.step > 1:
                ok = b.and_(ok, b.icmp_signed("==", b.srem(f, ir.Constant(I64, g.step)), ZERO))
            valid = ok if valid is None else b.and_(valid, ok)
        return valid

    def _tap_guards(self, var):
        """The padding guards of the reductions' loads that reduced loop `var` steps by one and no
        later reduced loop moves: those `_taps` splits loop `var` by."""
        k = self.kernel
        used = {n for r in k.reductions for n in leaves(r.body) if isinstance(n, int)}
        guards = {g for n in used for g in k.loads[n].access.guards
                  if g.step == 1 and g.form.coeffs[var] == 1 and g not in self.known and not any(g.form.coeffs[var + 1:])}
        return sorted(guards, key=str)

    def _itemsize(self):
        """Bytes of the widest element the reductions accumulate (a register tile's lanes)."""
        return max(numpy_dtype(r.dtype).itemsize for r in self.reductions)

    def _at(self, var, first, offset, body):
        """body() at loop `var` = first + offset."""
        self.vars[var] = self.b.add(first, offset, flags=["nsw", "nuw"])
        body()

    def _acc_pointer(self, slot):
        """rows: the accumulator of the current element of the block (its offset computed once per
        basic block, for every reduction)."""
        outer = self.kernel.outer
        tile = None if self.tile_start is None else (id(self.vars[outer - 2]), id(self.tile_start))
        key = (id(self.b.block), "accumulator", id(self.vars[outer - 1]), id(self.block_start), tile)
        offset = self.offsets.get(key)
        if offset is None:
            offset = self.b.sub(self.vars[outer - 1], self.block_start)
            if self.tile_start is not None:  # the tile's rows one block after another
                row = self.b.sub(self.vars[outer - 2], self.tile_start)
                offset = self.b.add(offset, self.b.mul(row, ir.Constant(I64, self.kernel.block)))
            self.offsets[key] = offset
        return self.b.gep(self.accs[slot], [offset], inbounds=True, source_etype=TYPES[self.reductions[slot].dtype])


def _transposed(b, vectors):
    """The columns of the rows `vectors` (at most as many as their lanes, a power of two): lane j's
    elements of every row, one vector each of len(vectors) elements. The missing rows undefined,
    log2(lanes) rounds each interleave row i with row i + lanes/2 (low halves, then high)."""
    lanes, count = vectors[0].type.count, len(vectors)
    rows = list(vectors) + [ir.Constant(vectors[0].type, ir.Undefined)] * (lanes - count)
    half = lanes // 2
    low = ir.Constant(ir.VectorType(I32, lanes), [j // 2 + (j % 2) * lanes for j in range(lanes)])
    high = ir.Constant(ir.VectorType(I32, lanes), [half + j // 2 + (j % 2) * lanes for j in range(lanes)])
    for _ in range(lanes.bit_length() - 1):
        rows = [b.shuffle_vector(rows[i], rows[i + half], mask) for i in range(half) for mask in (low, high)]
    if count == lanes:
        return rows
    first = ir.Constant(ir.VectorType(I32, count), list(range(count)))
    return [b.shuffle_vector(row, ir.Constant(row.type, ir.Undefined), first) for row in rows]
