"""Streaming (non-temporal) stores (ir/streams.py, chosen by passes/streaming.py): a mixin of the
kernel emitter (codegen/llvm.py), which supplies `b`, `kernel`, `vars`, `counters`, `pointers`,
`debug`, `width`, `lane_var`, `lanes`, `_address`, `_range` and `_for`.

The loop of a phase's streamed stores runs in three parts: its points one at a time until the
first streamed store's address starts a cache line; then groups of a line's worth of points, each
point's values computed as before (other stores made at once; on codegen's lane loop a vector
of points at a time, llvm_lanes.py) and each streamed buffer's line stored as consecutive aligned
vectors with `!nontemporal` metadata (AVX's vmovntps needs the alignment, and LLVM's loop
vectoriser declines a non-temporal store whose alignment it cannot prove); then the rest one at
a time. Buffers whose addresses are not aligned alike (a caller's
output array placed at an odd offset) are stored the usual way throughout; the program's own
arrays are aligned (runtime/program.py). Bounds-checked code stores the usual way too.

Streaming stores are weakly ordered: the kernel's function ends with an sfence (elsewhere a
sequentially consistent fence) before the threads that read the output synchronise with this one
through the team's counters (codegen/llvm_pool.py), whose locked instructions the x86 manuals do
not promise to order them (and
LLVM lowers `fence seq_cst` on x86 to one such, `lock or`, not to mfence).
"""
import contextlib

from llvmlite import ir

from ..ir.streams import store_loop
from ..ir.types import numpy_dtype
from .llvm_scalar import I64, MEMORY
from .llvm_vector import ZERO, joined

I32 = ir.IntType(32)
X86 = ("x86_64", "i386", "i686")  # triples whose streaming stores an sfence orders
# bytes of a cache line: a group writes each streamed buffer's line whole, one store a line (groups of
# 8 float32 let LLVM interleave 4 buffers' half lines: the gradient of relu(x*a+b)*c ran at half speed)
LINE = 64


class StreamingStores:
    """Streamed stores' loops, their vector stores and the fence before the kernel returns."""
    streaming = ()  # the streamed Stores of the phase whose loops are being emitted (None: none at all)
    collected = None  # id(streamed store) -> its values at the group's points, while a group is emitted
    group_counter = None  # the alloca counting groups

    def _streamed_of(self, stores) -> list:
        names = self.kernel.streams.buffers if self.kernel.streams and self.debug is None else ()
        return [s for s in stores if s.buffer in names]

    @contextlib.contextmanager
    def _streaming(self, stores):
        """Within: the loops emitted run `stores`' streamed ones as streaming stores."""
        before, self.streaming = self.streaming, self._streamed_of(stores)
        try:
            yield
        finally:
            self.streaming = before

    def _streamed(self):
        """The streamed stores of the loops being emitted: a phase's, or all of a kernel without
        inner loops (its loops are its stores')."""
        if self.streaming is None:
            return ()
        whole = self.kernel.outer == len(self.kernel.extents) and not self.kernel.reductions
        return self._streamed_of(self.kernel.stores) if whole and not self.streaming else self.streaming

    def _streams_along(self, var) -> bool:
        """Whether loop `var` is the one whose points make the streamed stores."""
        return self.collected is None and var == store_loop(self.kernel) and bool(self._streamed())

    def _streamed_for(self, var, start, stop, body):
        """Loop `var` from start to stop around body(), in the three parts of the module docstring."""
        b, stores = self.b, self._streamed()
        itemsize = numpy_dtype(stores[0].dtype).itemsize  # one for all (passes/streaming.py)
        width, mask = LINE // itemsize, ir.Constant(I64, LINE - 1)
        self.vars[var] = start
        addresses = [b.ptrtoint(self._element(store), I64) for store in stores]
        alike = b.icmp_unsigned("==", b.and_(addresses[0], ir.Constant(I64, itemsize - 1)), ZERO)
        for address in addresses[1:]:
            alike = b.and_(alike, b.icmp_unsigned("==", b.and_(b.sub(address, addresses[0]), mask), ZERO))
        count = b.sub(stop, start)
        head = b.udiv(b.and_(b.sub(ZERO, addresses[0]), mask), ir.Constant(I64, itemsize))
        head = b.select(alike, b.select(b.icmp_signed("<", head, count), head, count), count)
        aligned = b.add(start, head)
        groups = b.udiv(b.sub(stop, aligned), ir.Constant(I64, width))
        rest = b.add(aligned, b.mul(groups, ir.Constant(I64, width)))
        if self.group_counter is None:
            with b.goto_block(self.function.entry_basic_block):
                self.group_counter = b.alloca(I64, name="group")
        self._plain(var, start, aligned, body)
        self._range(self.group_counter, ZERO, groups,
                    lambda g: self._group(var, b.add(aligned, b.mul(g, ir.Constant(I64, width))), width, stores, body))
        self._plain(var, rest, stop, body)

    def _plain(self, var, start, stop, body):
        """Loop `var` with every store made the usual way: on the lane loop as codegen's vectors,
        the last one partial (llvm_lanes.py `_counted`)."""
        before, self.streaming = self.streaming, None
        try:
            if var == self.lane_var:
                self._counted(var, start, self.b.sub(stop, start), body)
            else:
                self._for(var, start, stop, body)
        finally:
            self.streaming = before

    def _group(self, var, first, width, stores, body):
        """body() at the `width` points from `first` (a line's start for every streamed store): one
        point at a time, or on the lane loop a vector's points at once (codegen/llvm_lanes.py);
        then each streamed store's values as non-temporal vector stores."""
        b = self.b
        self.collected = {id(store): [] for store in stores}
        step = min(self.width, width) if var == self.lane_var else 1
        for u in range(0, width, step):
            self.vars[var] = b.add(first, ir.Constant(I64, u)) if u else first
            self.lanes = step if step > 1 else 0
            body()
        values, self.collected, self.lanes = self.collected, None, 0
        self.vars[var] = first
        streaming = b.module.add_metadata([I32(1)])
        for store in stores:  # a line a store (vectors of 8 float32 interleaved the buffers' lines)
            b.store(_line(b, values[id(store)], MEMORY[store.dtype]), self._element(store),
                    align=LINE).set_metadata("nontemporal", streaming)

    def _uncollected(self, stores, values):
        """The (store, value) pairs to store now: those of streamed stores in the group being
        emitted are kept for its vector stores instead."""
        for store, value in zip(stores, values):
            if self.collected is not None and id(store) in self.collected:
                self.collected[id(store)].append(value)
            else:
                yield store, value

    def _element(self, store):
        """The address of `store`'s element at the current point."""
        index, _ = self._address(store.access)
        return self.b.gep(self.pointers[store.buffer], [index], inbounds=True, source_etype=MEMORY[store.dtype])

    def _return(self):
        """The kernel function's return, after the fence that orders its streaming stores (module
        docstring)."""
        if self.kernel.streams and self.kernel.streams.buffers and self.debug is None:
            if self.b.module.triple.startswith(X86):
                sfence = ir.FunctionType(ir.VoidType(), [])
                self.b.call(self.b.module.declare_intrinsic("llvm.x86.sse.sfence", fnty=sfence), [])
            else:
                self.b.fence("seq_cst")
        self.b.ret_void()


def _line(b, values, ty):
    """One vector of a line's `values` of type `ty`: scalars inserted one by one, or vectors joined."""
    if not isinstance(values[0].type, ir.VectorType):
        vector = ir.Constant(ir.VectorType(ty, len(values)), ir.Undefined)
        for u, value in enumerate(values):
            vector = b.insert_element(vector, value, I32(u))
        return vector
    return joined(b, values)
