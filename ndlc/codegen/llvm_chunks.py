"""The 'chunks' strategy's loops (passes/schedule.py): a mixin of the kernel emitter (codegen/llvm.py),
which supplies `kernel`, the builder `b`, `vars`, `offsets`, `pointers`, `shared`, `chunk_counters`,
the loop helpers (`_for`, `_loops`, `_range`, `_counted`) and the phases' code (`_initialise`,
`_accumulate`, `_combine`, `_stores`)."""
from llvmlite import ir

from ..ir.kernel import Combine
from ..ir.kernel_leaves import Load
from ..ir.scalar import leaves
from ..ir.types import is_float, numpy_dtype
from . import mathlib
from .llvm_calls import done_counter, take_in_turn, wait_for
from .llvm_scalar import I64, TYPES, Values
from .llvm_vector import ZERO

# columns of a 'chunks' kernel a thread takes at once to combine their partials: one column at a
# time (an atomic take, then 15 dependent scalar additions) was 60% of BatchNorm1d's 256x1024
# forward; a block of them vectorises
COMBINE_BLOCK = 64

# rows of a chunk whose elements add into a column's partial at once (in their order, so the bits are
# the rows' one at a time), where a phase's partials outgrow the L1 cache (PARTIALS_BYTES): one row at
# a time then loads and stores a partial from L2 for every element read. One thread, CPU time minima,
# load ~5: sums over axis 0 of 256x16191 0.92-0.97 -> 0.39-0.42 ms, a sum and a sum of squares
# 1.6 -> 0.6; over narrower rows the rows side by side were slower (65536x256: 2.4 -> 4.9 ms), and
# over several arrays (x*y: each row of each a stream), fewer rows at once, ROWS_AT_ONCE streams in all
ROWS_AT_ONCE = 8
PARTIALS_BYTES = 32768


class Chunks:
    """A column reduction's long reduced loop in fixed chunks whose partials combine in order."""

    def _chunks(self):
        """One outer loop j, the first inner loop i cut into CHUNKS fixed chunks: per phase, the
        threads take chunks in turn (`_taken`) and accumulate each chunk's partials for every j
        (whole rows stream through memory, wide ones several side by side: `_rows_at_once`), then, once every chunk is
        done, take blocks of COMBINE_BLOCK columns j in turn, combine their partials in chunk order
        (a chunk's partials for the whole block at a time, so the additions and the stores
        vectorise along j) and make the phase's stores; a phase starts once every block of the one
        before is done.
        Chunks do not depend on the thread count, so neither do the results."""
        k, b = self.kernel, self.b
        n, columns, count = k.extents[k.outer], k.extents[0], k.chunks
        size = -(-n // count)
        inner_rest = (k.outer + 1, len(k.extents))

        def over_my_rows(number, body, first=lambda: None, backwards=False, jammed=0):
            """first(), then body() at every (i, rest of the inner loops, j), of each chunk taken
            (`backwards`: the chunks last to first, the c-th taken being number count - 1 - c);
            with `jammed` (no other inner loop), body(rows) at every j for groups of `jammed`
            consecutive i, then for the chunk's last rows one at a time."""
            def chunk(c):
                self.chunk = c = b.sub(ir.Constant(I64, count - 1), c) if backwards else c
                first()
                start = b.mul(c, ir.Constant(I64, size))
                stop = mathlib.intrinsic(b, "llvm.smin", b.add(start, ir.Constant(I64, size)), ir.Constant(I64, n))
                along = ir.Constant(I64, columns)
                if not jammed:
                    self._for(k.outer, start, stop, lambda: self._loops(*inner_rest, lambda: self._counted(
                        0, ZERO, along, body)))
                    return

                def group(i, rows):
                    self._counted(0, ZERO, along, lambda: body(
                        [b.add(i, ir.Constant(I64, u), flags=["nsw", "nuw"]) for u in range(rows)]))
                grouped = b.sub(stop, ir.Constant(I64, jammed - 1))
                self._range(self.counters[k.outer], start, grouped, lambda i: group(i, jammed), step=jammed)
                self._range(self.chunk_counters[2], b.load(self.counters[k.outer]), stop, lambda i: group(i, 1))
            self._taken(number, count, chunk)

        blocks = -(-columns // COMBINE_BLOCK)

        def over_block(block, body):
            """body() at every column j of block number `block` (the innermost loop: it vectorises).
            Where every block is whole, a loop of a constant trip count: vectorised, it needs no
            scalar copy of the body for a remainder (the MLP's Adam stores, 100 instructions)."""
            start = b.mul(block, ir.Constant(I64, COMBINE_BLOCK))
            if columns % COMBINE_BLOCK == 0 or blocks == 1:
                self._counted(0, start, ir.Constant(I64, min(columns, COMBINE_BLOCK)), body)
                return
            stop = mathlib.intrinsic(b, "llvm.smin", b.add(start, ir.Constant(I64, COMBINE_BLOCK)),
                                     ir.Constant(I64, columns))
            self._counted(0, start, b.sub(stop, start), body)

        for p, (phase, slots) in enumerate(zip(k.phases, self.slots)):
            self.phase_slots = slots
            if phase.reductions:
                jammed = self._rows_at_once(phase)
                accumulate = (lambda rows, phase=phase, slots=slots: self._rows_into_partials(phase, slots, rows)) \
                    if jammed else (lambda phase=phase, slots=slots: self._accumulate(phase, slots, self._partial))
                over_my_rows(2 * p, accumulate, lambda phase=phase, slots=slots: self._counted(0, ZERO, ir.Constant(
                    I64, columns), lambda: self._initialise(phase, slots, self._partial)), jammed=jammed)

                def combine(block, phase=phase, slots=slots):
                    def add(c):
                        def at_column():  # every reduction's partial in one loop: one loop for LLVM to vectorise
                            for slot, r in zip(slots, phase.reductions):
                                self.chunk = ir.Constant(I64, 0)
                                total = self._partial(slot)
                                self.chunk = c
                                ty = TYPES[r.dtype]
                                self._put(self._combine(r, self._get(total, ty), self._get(self._partial(slot), ty)), total)
                        over_block(block, at_column)
                    self._range(self.chunk_counters[1], ir.Constant(I64, 1), ir.Constant(I64, count), add)
                    self.chunk = ir.Constant(I64, 0)
                    over_block(block, lambda phase=phase: self._stores(phase.stores))
                self._taken(2 * p + 1, blocks, combine)
            elif phase.inner:  # the chunks the statistics read last are still cached: they go first
                with self._streaming(phase.stores):
                    over_my_rows(2 * p, lambda phase=phase: self._stores(phase.stores), backwards=True)
            else:
                self._taken(2 * p + 1, blocks, lambda block, phase=phase: over_block(
                    block, lambda: self._stores(phase.stores)))
        self.chunk = None

    def _rows_at_once(self, phase) -> int:
        """How many rows of a chunk `phase`'s reductions add into their partials at once
        (ROWS_AT_ONCE over the arrays they read along the rows, at least 2), or 0: one at a time,
        where the partials of a row fit in PARTIALS_BYTES or other inner loops follow the rows."""
        k = self.kernel
        if k.outer + 1 != len(k.extents) or \
                k.extents[0] * sum(numpy_dtype(r.dtype).itemsize for r in phase.reductions) < PARTIALS_BYTES:
            return 0
        used = [k.loads[n] for r in phase.reductions for n in leaves(r.body) if isinstance(n, int)]
        streams = {load.buffer for load in used if isinstance(load, Load) and load.access.form.coeffs[k.outer]}
        return max(2, ROWS_AT_ONCE // max(1, len(streams)))

    def _rows_into_partials(self, phase, slots, rows):
        """Each reduction's partial at the current column loaded once, its body at each of `rows`
        (values of the reduced loop) combined into it in their order, and stored once: a chain of
        plain fadds (no `reassoc`: LLVM keeps the rows' order, the bits of one row at a time)."""
        b, k = self.b, self.kernel
        totals = [self._get(self._partial(slot), TYPES[r.dtype]) for slot, r in zip(slots, phase.reductions)]
        for row in rows:
            self.vars[k.outer] = row
            memo = Values()
            values = [self._emit(r.body, memo) for r in phase.reductions]
            totals = [b.fadd(total, value) if r.combine == Combine.ADD and is_float(r.dtype)
                      else self._combine(r, total, value) for r, total, value in zip(phase.reductions, totals, values)]
        for slot, total in zip(slots, totals):
            self._put(total, self._partial(slot))

    def _taken(self, number, total, body, var=None):
        """body(i), loop variable `var` (if any) set to i, for every i < total when the kernel runs
        serially; on several threads, for each i this thread takes from shared counter `number`,
        then until every i is done (what follows reads what they wrote)."""
        def at(i):
            if var is not None:
                self.vars[var] = i
            body(i)
        if self.kernel.split is None:
            self._range(self.chunk_counters[0], ir.Constant(I64, 0), ir.Constant(I64, total), at)
        else:
            counter, done = (self.b.gep(self.shared, [ir.Constant(I64, n)], source_etype=I64)
                             for n in (number, done_counter(self.kernel, number)))
            take_in_turn(self.b, counter, total, at, done)
            wait_for(self.b, done, total)

    def _partial(self, slot):
        """chunks: the partial accumulator of reduction `slot` for the current chunk and column (its
        index computed once per basic block, for every reduction)."""
        key = (id(self.b.block), "partial", id(self.chunk), id(self.vars[0]))
        if key not in self.offsets:
            self.offsets[key] = self.b.add(self.b.mul(self.chunk, ir.Constant(I64, self.kernel.extents[0])),
                                           self.vars[0])
        index = self.offsets[key]
        element = TYPES[self.reductions[slot].dtype]
        return self.b.gep(self.pointers[self.kernel.scratch[slot]], [index], inbounds=True, source_etype=element)

