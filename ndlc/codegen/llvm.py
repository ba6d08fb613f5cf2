"""Kernel IR -> LLVM IR (llvmlite.ir): kernels as functions of a module, one per distinct kernel
(codegen/kernel_key.py), named by its structural key and taking its buffer pointers as `noalias`
arguments (so loops vectorise without runtime alias checks); codegen/llvm_program.py adds the
entry point that runs them in schedule order. A gemm kernel calls the external
`ndlc_sgemm`/`ndlc_dgemm` by name (bound at load: runtime/libraries.py). A split kernel
(passes/schedule.py) runs its body on ndlc's team (`ndlc_parallel`, codegen/llvm_pool.py) through an
outlined `<body>.omp(ptr data)`, its threads taking pieces of its loop (or its chunks) from shared counters;
how many threads is read at run time (llvm_calls.TEAM), so one compiled program runs on any team.
Maps, gemm epilogues, 'chunks' and 'rows' kernels, and 'point' reductions whose order LLVM's
vectoriser is known to give, run their innermost loop as explicit vectors (llvm_lanes.py); the
other kernels' loops are scalar, for LLVM's loop vectoriser.

Reassociation policy: no fast-math flag anywhere except `reassoc` on the accumulating fadd of a
float sum, which lets LLVM vectorise (reorder) sums, and `nnan nsz` on a row max's maxnum, whose
NaNs a flag beside it restores; elementwise arithmetic keeps IEEE semantics (llvm_scalar.py), so
results match the interpreter up to rounding of reordered sums and of mathlib's polynomials (whose
Horner steps are fused multiply-adds where the CPU has them: codegen/mathlib.py).
"""
import gc

from llvmlite import ir

from ..ir.indexing import Access, Affine, contiguous
from ..ir.kernel import Combine, Strategy
from ..ir.kernel_leaves import Acc
from ..ir.tiles import multiply_add
from ..ir.rules import combine_primitive, identity
from ..ir.short_rows import side_by_side
from ..ir.types import is_float
from . import mathlib
from .llvm_calls import CBLAS_NO_TRANS, CBLAS_ROW_MAJOR, CBLAS_TRANS, call_parallel, declare_gemm
from .llvm_chunks import Chunks
from .llvm_guards import GuardedLoops
from .llvm_rows import RowBlocks
from .llvm_lanes import F32_LANES, Lanes, lane_loop, spare_elements
from .llvm_memory import MemoryAccess
from .llvm_partials import RowPartials
from .llvm_scatter import ScatterFunction
from .llvm_scalar import I1, I64, MEMORY, TYPES, ScalarLowering, Values, constant
from .llvm_stream import StreamingStores
from .llvm_text import module_text, string_attribute, uniquely_named
from .llvm_vector import ZERO, VectorLoops, expression_dtypes, vector_width

PTR = ir.PointerType()


def kernel_module(name, kernels, triple="", data_layout="", fma=False, avx512=False) -> str:
    """The LLVM IR text of module `name` defining, for each (kernel, KernelKey, debug) of
    `kernels`, the function `key.symbol(ptr args)` reading the pointers of `key.buffers` (then the
    debug array when bounds-checked: `debug` is (the kernel's number, buffer -> element count), see
    codegen/llvm_program.py) from `args` and running the kernel's body, a split one on its threads.
    `fma`: whether the target has fused multiply-adds (mathlib's are then `llvm.fma`); `avx512`:
    whether it has AVX-512 (mathlib's exp scales by `vscalefps`, llvm_partials.py's sums of
    exponentials are 512 bits wide).
    Python's cyclic garbage collector waits meanwhile: every object built is alive until the text
    is written, and each full collection walks every object of the process (in a forked builder,
    its parent's too, faulting their pages in)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return module_text(kernel_ir(name, kernels, triple, data_layout, fma, avx512))
    finally:
        if collecting:
            gc.enable()


def kernel_ir(name, kernels, triple="", data_layout="", fma=False, avx512=False) -> ir.Module:
    """The llvmlite module of `kernel_module`."""
    module = ir.Module(name=name)
    module.triple, module.data_layout = triple, data_layout
    for kernel, key, debug in kernels:
        used = list(key.buffers) + (["debug"] if debug else [])
        body = ScatterFunction(module, kernel, used, f"{key.symbol}.body", "internal").function if kernel.scatter \
            else _KernelEmitter(module, kernel, used, debug, f"{key.symbol}.body", "internal", fma, avx512).function
        fn = uniquely_named(ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), key.symbol))
        fn.linkage = "weak_odr"  # a kernel found in two cached objects is linked from the first
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        if kernel.split is None:
            b.call(body, [b.load(b.gep(fn.args[0], [ir.Constant(I64, i)], source_etype=PTR), typ=PTR, name=f"arg{i}")
                          for i in range(len(used))])
        else:
            call_parallel(b, kernel, body, fn.args[0], len(used))
        b.ret_void()
    return module


class _KernelEmitter(Chunks, GuardedLoops, Lanes, MemoryAccess, RowBlocks, RowPartials, ScalarLowering,
                     StreamingStores, VectorLoops):
    """Emits one kernel's loop nest as an internal function (see ndlc.ir.kernel for the form).
    `debug`: None, or (the kernel's number, buffer -> element count) for bounds checks; `fma`,
    `avx512`: whether the target has fused multiply-adds, AVX-512."""

    def __init__(self, module, kernel, used, debug, name, linkage, fma, avx512=False):
        self.kernel, self.debug, self.fma, self.avx512 = kernel, debug, fma, avx512
        chunks = kernel.strategy == Strategy.CHUNKS  # split: its counters (llvm_calls.counters), else a range
        split = ([PTR] if chunks else [I64, I64]) if kernel.split else []
        fnty = ir.FunctionType(ir.VoidType(), [PTR] * len(used) + split)
        self.function = fn = uniquely_named(ir.Function(module, fnty, name))
        fn.linkage = linkage
        fn.attributes.add("noinline")  # each kernel optimised alone (inlined into its caller, a loop
        # nest would be optimised again there)
        self.pointers = dict(zip(used, fn.args))
        for arg in fn.args[:len(used)]:
            arg.add_attribute("noalias")
        if debug is not None:
            debug[1].update(kernel.local)
        self.ranges = {kernel.split.loop: tuple(fn.args[len(used):])} if kernel.split and not chunks else {}
        self.shared = fn.args[len(used)] if chunks and kernel.split else None  # the threads' counters
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.counters = [self.b.alloca(I64, name=f"i{i}") for i in range(len(kernel.extents))]
        self.known = set()  # guards that hold throughout the loop being emitted
        self.failing = set()  # ... and guards that fail throughout it (their loads read nothing)
        for name, size in kernel.local.items():  # one row per thread (rows side by side: a block's), on its stack
            dtype = next(s.dtype for s in kernel.stores if s.buffer == name)
            rows = kernel.block if side_by_side(kernel) else 1
            spare = spare_elements(MEMORY[dtype])  # a vector's rest stored whole (llvm_lanes.py)
            self.pointers[name] = self.b.alloca(MEMORY[dtype], size=size * rows + spare, name=f"local.{name}")
            self.pointers[name].type = PTR  # opaque, as the buffers' are: read and written as vectors too
        self.vars = [None] * len(kernel.extents)
        self.offsets = {}  # (basic block, affine form, or a product or partial sum of one, at the variables'
        # values) -> its value (_affine; also chunks' partials' and rows' accumulators' indices)
        self.reductions = kernel.reductions
        rows = kernel.strategy == Strategy.ROWS
        self.block_start = None  # rows: the first index of the block of the last outer loop
        self.tile_start = None  # ... and of the tile's rows of the loop before (with a tile)
        self.phase_slots = ()  # the accumulators the expressions being emitted read as Acc(0), Acc(1), ...
        self.accs = [self.b.alloca(TYPES[r.dtype], size=kernel.block * max(kernel.tile, 1) if rows else None,
                                    name=f"acc{k}")
                     for k, r in enumerate(self.reductions)]
        if rows:  # opaque: _acc_pointer's elements are loaded as scalars or (llvm_lanes.py) as vectors
            for acc in self.accs:
                acc.type = PTR
        # point: a float max combines with maxnum (vmaxps, vectorised) beside a flag of NaNs seen,
        # which makes the result NaN after the loop, as llvm.maximum would (5 instructions an element)
        self.nans = {k: self.b.alloca(I1, name=f"nan{k}") for k, r in enumerate(self.reductions)
                     if kernel.strategy == Strategy.POINT and r.combine == Combine.MAX and is_float(r.dtype)}
        self.block_counter = self.b.alloca(I64, name="block") if rows else None
        self.chunk_counters = [self.b.alloca(I64, name=f"chunk{i}") for i in range(3)] if chunks else None
        self.chunk = None  # chunks: the chunk whose partials are addressed (0 holds the combined values)
        self.slots, first = [], 0  # the accumulator numbers of each phase's reductions
        for phase in kernel.phases:
            self.slots.append(range(first, first + len(phase.reductions)))
            first += len(phase.reductions)
        self.types = expression_dtypes(kernel)
        self.side_by_side = side_by_side(kernel)  # a 'rows' block of whole rows, one per lane (llvm_rows.py)
        self.width = kernel.block if self.side_by_side else vector_width(kernel, self.types)
        if self.width > F32_LANES:  # rows side by side in AVX-512's vectors, which prefer-256-bit would split
            string_attribute(fn, "min-legal-vector-width", str(self.width * 32))
        self.rest = None  # ... the rows of the block being emitted where it is the last, partial one
        self.rows_kept, self.kept = {}, set()  # ... each gathered load's vectors of a block (llvm_memory.py)
        self.keyed = {k for k, r in enumerate(self.reductions)  # ... its maxes, over int32 keys (llvm_rows.py)
                      if self.side_by_side and r.combine == Combine.MAX}
        self.lane_var = lane_loop(kernel, debug)  # the loop codegen vectorises itself (llvm_lanes.py), or None
        self.splats = {}  # (basic block, scalar) -> the vector of it in every lane (_splat)
        if 0 in kernel.extents[:kernel.outer]:  # no output element: nothing to compute ('rows' guards
            self._return()  # would read loop variables an empty loop never bound)
            return
        if kernel.gemm is not None:
            self._loops(0, len(kernel.extents) - 2, self._gemm)
        elif chunks:
            self._chunks()
        elif rows:
            self._loops(0, kernel.outer - (2 if kernel.tile else 1), self._rows)
        else:
            self._loops(0, kernel.outer, self._point)
        self._return()

    # ---- loops ------------------------------------------------------------------------------
    def _loops(self, first, last, inner, reduce=False):
        """Nested counted loops over variables first..last-1 around inner(), the innermost shaped
        for the vectoriser (llvm_vector.py). Where they `reduce`, a row is not split (each part
        would reduce across lanes) and the first reduced loop stays a loop of its own: a scan's
        unrolled steps are stacked along it, guarded, and equal programs must sum in one order."""
        if first == last:
            inner()
            return
        if (not reduce or first > self.kernel.outer) and self._collapsible(first, last):
            start, stop = self._collapse(first, last)
            first = last - 1
        else:
            start, stop = self.ranges.get(first, (ZERO, ir.Constant(I64, self.kernel.extents[first])))
            points = self._points(first)
            if points:
                self._by_points(first, start, stop, points, lambda: self._loops(first + 1, last, inner, reduce))
                return

        def body():
            self._loops(first + 1, last, inner, reduce)
        innermost = all(n == 1 for n in self.kernel.extents[first + 1:last])  # later loops of one iteration
        if first == self.lane_var and last in (first + 1, first + 2):
            count = ir.Constant(I64, stop.constant - start.constant) if isinstance(start, ir.Constant) \
                and isinstance(stop, ir.Constant) else self.b.sub(stop, start)
            if last == first + 2:  # short rows, interleaved (llvm_vector.py), padded rows split by their guards
                def rows():
                    self._interleaved(last - 1, inner)
                if self._splittable(first):
                    self._split_by_guards(first, start, stop, rows)
                else:
                    self._counted(first, start, count, rows)
            elif self._splittable(first):  # a map's padded row
                self._split_by_guards(first, start, stop, body)
            else:
                self._counted(first, start, count, body)
        elif last == len(self.kernel.extents) and innermost and self._splittable(first):
            self._split_by_guards(first, start, stop, body)
        elif not reduce:
            self._split_by_width(first, start, stop, body)
        else:
            self._for(first, start, stop, body)

    def _for(self, var, start, stop, body):
        """for (i_var = start; i_var < stop; i_var++) body() (streamed stores: llvm_stream.py)."""
        def inside(value):
            self.vars[var] = value
            body()
        if self._streams_along(var):
            return self._streamed_for(var, start, stop, body)
        self._range(self.counters[var], start, stop, inside)

    def _range(self, counter, start, stop, body, step=1):
        """for (value = start; value < stop; value += step) body(value), counting in the alloca `counter`."""
        b = self.b
        b.store(start, counter)
        head, inside, done = (b.append_basic_block(f"{part}.{counter.name}") for part in ("loop", "body", "done"))
        b.branch(head)
        b.position_at_end(head)
        value = b.load(counter)
        b.cbranch(b.icmp_signed("<", value, stop), inside, done)
        b.position_at_end(inside)
        body(value)
        b.store(b.add(b.load(counter), ir.Constant(I64, step), flags=["nsw", "nuw"]), counter)
        b.branch(head)
        b.position_at_end(done)

    def _point(self):
        """Every phase at one point of the outer loops: reductions in registers, then stores."""
        k = self.kernel
        inner = (k.outer, len(k.extents))
        for phase, slots in zip(k.phases, self.slots):
            self.phase_slots = slots
            if phase.reductions:
                accumulators = self.accs.__getitem__
                self._initialise(phase, slots, accumulators)
                if self.lane_var is not None:  # codegen's vectors, in LLVM's vectoriser's order (llvm_lanes.py)
                    self._reduce(phase, slots)
                else:
                    self._loops(*inner, lambda phase=phase, slots=slots: self._accumulate(phase, slots, accumulators),
                                reduce=True)
                for slot in set(slots) & self.nans.keys():
                    nan = constant(self.reductions[slot].dtype, float("nan"))
                    self.b.store(self.b.select(self.b.load(self.nans[slot]), nan, self.b.load(self.accs[slot])),
                                 self.accs[slot])
            if phase.inner:
                with self._streaming(phase.stores), self._wide_map(phase.stores):
                    self._loops(*inner, lambda phase=phase: self._stores(phase.stores))
            else:
                self._stores(phase.stores)

    def _initialise(self, phase, slots, pointer):
        """Each reduction's accumulator (at pointer(slot)) set to its combine's identity."""
        for slot, r in zip(slots, phase.reductions):
            self._put(self._keyed(self._init(r)) if slot in self.keyed else self._init(r), pointer(slot))
            if slot in self.nans:
                self.b.store(ir.Constant(I1, 0), self.nans[slot])

    def _accumulate(self, phase, slots, pointer):
        """Each reduction's body at the current point combined into its accumulator at pointer(slot)."""
        memo = Values()
        rows = self.kernel.strategy == Strategy.ROWS
        fused = [rows and multiply_add(r, self.kernel.loads) for r in phase.reductions]
        values = [[self._emit(a, memo) for a in r.body.args] if f else self._emit(r.body, memo)
                  for r, f in zip(phase.reductions, fused)]
        for slot, r, value, f in zip(slots, phase.reductions, values, fused):
            at, b = pointer(slot), self.b
            if f:  # a tap of an outer product, side by side (ir/tiles.py)
                self._put(mathlib.intrinsic(b, "llvm.fma", *value, self._get(at, TYPES[r.dtype])), at)
            elif slot in self.keyed:
                self._put(self._keyed_max(self._get(at, TYPES[r.dtype]), value), at)
            elif slot in self.nans:  # a NaN makes the maxnum poison, and sets the flag that replaces it
                b.store(b.or_(b.load(self.nans[slot]), b.fcmp_unordered("uno", value, value)), self.nans[slot])
                b.store(mathlib.intrinsic(b, "llvm.maxnum", b.load(at), value, fastmath=("nnan", "nsz")), at)
            else:
                self._put(self._combine(r, self._get(at, TYPES[r.dtype]), value), at)

    def _leaf_value(self, payload):
        return self._acc_value(payload.index) if isinstance(payload, Acc) else self._load(payload)

    def _invariant_leaf(self, payload) -> bool:
        """Whether a leaf reads the same value at every point of the loops: an unguarded load of a
        fixed element (an optimiser's hyperparameter), in a fixed row if the load is indirect."""
        if isinstance(payload, Acc):
            return False
        load = self.kernel.loads[payload]
        rows = getattr(load, "indirect", None)
        return not load.access.guards and not any(load.access.form.coeffs) \
            and (rows is None or self._invariant_leaf(rows.index))

    def _acc_value(self, index):
        slot = self.phase_slots[index]
        if self.chunk is not None:
            return self._get(self._partial(slot), TYPES[self.reductions[slot].dtype])
        if self.block_start is not None:  # rows: the block's (inside a vector loop, the lanes')
            return self._get(self._acc_pointer(slot), TYPES[self.reductions[slot].dtype])
        return self.b.load(self.accs[slot])

    def _gemm(self):
        """One BLAS call for the current batch index (and this thread's rows), then the phases over
        its output in place."""
        k, b, g = self.kernel, self.b, self.kernel.gemm
        batch, element = len(k.extents) - 2, TYPES[g.dtype]
        first, stop = self.ranges.get(batch, (ir.Constant(I64, 0), ir.Constant(I64, g.m)))
        flags = [CBLAS_ROW_MAJOR] + [CBLAS_TRANS if m.transposed else CBLAS_NO_TRANS for m in (g.a, g.b)]
        out = Access(Affine(tuple(c if i < batch else 0 for i, c in enumerate(contiguous(k.extents).form.coeffs))))

        def call(first, stop):
            def matrix(buffer, offset, ld, row_stride):
                index, _ = self._address(offset)
                index = b.add(index, b.mul(first, ir.Constant(I64, row_stride)))
                return [b.gep(self.pointers[buffer], [index], inbounds=True, source_etype=element), ir.Constant(I64, ld)]
            b.call(declare_gemm(b.module, g.dtype),
                   [ir.Constant(TYPES["i32"], f) for f in flags] + [b.sub(stop, first)]
                   + [ir.Constant(I64, n) for n in (g.n, g.k)] + [ir.Constant(element, 1.0)]
                   + matrix(g.a.buffer, g.a.offset, g.a.ld, 1 if g.a.transposed else g.a.ld)
                   + matrix(g.b.buffer, g.b.offset, g.b.ld, 0) + [ir.Constant(element, 0.0)]
                   + matrix(g.out, out, g.n, g.n))
        if k.calls:
            self._in_calls(first, stop, k.calls, call)
        else:
            call(first, stop)
        for phase in k.phases:
            self._loops(batch, batch + 2, lambda phase=phase: self._stores(phase.stores))

    def _in_calls(self, first, stop, rows, call):
        """call(start, end) for each `rows` rows of [first, stop) in order, the last what remains
        (a gemm run in calls on BLAS's small-matrix kernels: Kernel.calls)."""
        b = self.b
        entry = b.block
        head, body, done = (b.append_basic_block(f"calls.{part}") for part in ("head", "body", "done"))
        b.branch(head)
        b.position_at_end(head)
        start = b.phi(I64)
        start.add_incoming(first, entry)
        b.cbranch(b.icmp_signed("<", start, stop), body, done)
        b.position_at_end(body)
        end = mathlib.intrinsic(b, "llvm.smin", b.add(start, ir.Constant(I64, rows)), stop)
        call(start, end)
        start.add_incoming(end, b.block)
        b.branch(head)
        b.position_at_end(done)

    def _init(self, reduction):
        return self._constant(reduction.dtype, identity(reduction.combine, reduction.dtype))

    def _combine(self, reduction, acc, value):
        if reduction.combine == Combine.ADD and is_float(reduction.dtype):  # sums may be reordered
            return self.b.fadd(acc, value, flags=["reassoc"])
        return self._apply(combine_primitive(reduction.combine, reduction.dtype), reduction.dtype, [acc, value])
