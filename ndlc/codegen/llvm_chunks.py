"""The 'chunks' strategy's loops (passes/schedule.py): a mixin of the kernel emitter (codegen/llvm.py),
which supplies `kernel`, the builder `b`, `vars`, `offsets`, `pointers`, `shared`, `chunk_counters`,
the loop helpers (`_for`, `_loops`, `_range`, `_counted`) and the phases' code (`_initialise`,
`_accumulate`, `_combine`, `_stores`)."""
from llvmlite import ir

from . import mathlib
from .llvm_calls import done_counter, take_in_turn, wait_for
from .llvm_scalar import I64, TYPES
from .llvm_vector import ZERO

# columns of a 'chunks' kernel a thread takes at once to combine their partials: one column at a
# time (an atomic take, then 15 dependent scalar additions) was 60% of BatchNorm1d's 256x1024
# forward; a block of them vectorises
COMBINE_BLOCK = 64

# rows of a chunk whose elements add into a column's partial at once (in their order, so the bits are
# the rows' one at a time): rows wide enough that their partials leave the L1 cache (a sum over axis 0
# of 256x257x63, rows of 16191 columns: partials of 64 KiB) cost a load and a store of L2 for every
# element read; ROWS_AT_ONCE rows share them, and stream side by side
ROWS_AT_ONCE = 8


class Chunks:
    """A column reduction's long reduced loop in fixed chunks whose partials combine in order."""

    def _chunks(self):
        """One outer loop j, the first inner loop i cut into CHUNKS fixed chunks: per phase, the
        threads take chunks in turn (`_taken`) and accumulate each chunk's partials for every j
        (whole rows stream through memory, ROWS_AT_ONCE side by side), then, once every chunk is done, take blocks of
        COMBINE_BLOCK columns j in turn, combine their partials in chunk order (a chunk's partials
        for the whole block at a time, so the additions and the stores vectorise along j) and make
        the phase's stores; a phase starts once every block of the one before is done.
        Chunks do not depend on the thread count, so neither do the results."""
        k, b = self.kernel, self.b
        n, columns, count = k.extents[k.outer], k.extents[0], k.chunks
        size = -(-n // count)
        inner_rest = (k.outer + 1, len(k.extents))

        def over_my_rows(number, body, first=lambda: None, backwards=False, jammed=1):
            """first(), then body() at every (i, rest of the inner loops, j), of each chunk taken
            (`backwards`: the chunks last to first, the c-th taken being number count - 1 - c);
            `jammed` > 1 (no other inner loop): at each j, body() at `jammed` consecutive i in turn
            (ROWS_AT_ONCE), then the chunk's last rows one at a time: each j sees the i in order."""
            def chunk(c):
                self.chunk = c = b.sub(ir.Constant(I64, count - 1), c) if backwards else c
                first()
                start = b.mul(c, ir.Constant(I64, size))
                stop = mathlib.intrinsic(b, "llvm.smin", b.add(start, ir.Constant(I64, size)), ir.Constant(I64, n))
                along = ir.Constant(I64, columns)
                if jammed == 1:
                    self._for(k.outer, start, stop, lambda: self._loops(*inner_rest, lambda: self._counted(
                        0, ZERO, along, body)))
                    return

                def rows(i, group):
                    def at_column():
                        for u in range(group):
                            self.vars[k.outer] = b.add(i, ir.Constant(I64, u), flags=["nsw", "nuw"])
                            body()
                    self._counted(0, ZERO, along, at_column)
                grouped = b.sub(stop, ir.Constant(I64, jammed - 1))
                self._range(self.counters[k.outer], start, grouped, lambda i: rows(i, jammed), step=jammed)
                self._range(self.chunk_counters[2], b.load(self.counters[k.outer]), stop, lambda i: rows(i, 1))
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
                over_my_rows(2 * p, lambda phase=phase, slots=slots: self._accumulate(phase, slots, self._partial),
                             lambda phase=phase, slots=slots: self._counted(0, ZERO, ir.Constant(
                                 I64, columns), lambda: self._initialise(phase, slots, self._partial)),
                             jammed=ROWS_AT_ONCE if k.outer + 1 == len(k.extents) else 1)

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

