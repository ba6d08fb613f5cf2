"""Row reductions in codegen's own order: partial vectors opened on the stack, each vector of a row
added into one, then folded and reduced by halves; a mixin of the kernel emitter (codegen/llvm.py,
beside llvm_lanes.py's `Lanes`, which supplies `lane_var`, `lanes`, `mask` and `_entry_alloca`).

A sum calling a mathlib polynomial (a softmax's, logsumexp's or SoftmaxLoss's exponentials) runs in
vectors of WIDE_F32_LANES where the target has AVX-512: its exp scales by one `vscalefps` there, and
512-bit vectors halve the instructions a row takes, which Zen 4 issues as two 256-bit halves each
(SoftmaxLoss 4096x1000 forward: docs/ARCHITECTURE.md). Its sums then add in that order: the width is
part of it, so a host with AVX-512 sums those rows in another order than one without.
"""
import contextlib
from math import prod

from llvmlite import ir

from ..ir.kernel import Combine
from ..ir.scalar import PRIMITIVES, postorder
from . import mathlib
from .llvm_lanes import F32_LANES, I32, PARTS, calls_mathlib
from .llvm_scalar import I1, I64, TYPES, Values
from .llvm_text import string_attribute
from .llvm_vector import ZERO

# codegen's own order keeps at most this many partial vectors (of AVX2's 16 registers) across a row,
# leaving the rest to the body's values
OWN_REGISTERS = 8
WIDE_F32_LANES = 16  # float32 lanes of a sum of exponentials on an AVX-512 target


def own_parts(phase, n, w) -> int:
    """How many partial vectors of `w` lanes codegen's own order keeps per reduction of `phase`
    over rows of `n`: PARTS where a row has as many vectors, fewer where the values the phase
    carries (a max's NaN flag counted) would take more than OWN_REGISTERS vector registers."""
    carried = len(phase.reductions) + sum(r.combine == Combine.MAX for r in phase.reductions)
    return max(1, min(PARTS, n // w, OWN_REGISTERS // max(carried, 1)))


class RowPartials:
    """Partial vectors of 'point' reductions along a row (`_in_order`, and `Lanes._reduce`'s in
    LLVM's order)."""

    @contextlib.contextmanager
    def _wide_map(self, stores):
        """A 'point' kernel's map along its row (the lane loop) whose float32 values call a mathlib
        polynomial (softmax's exponentials) in vectors of WIDE_F32_LANES where the target has
        AVX-512, as its sums of exponentials run: a map's lanes are independent, so the values are
        the same, in half the instructions of a latency-bound loop; its rest one masked vector
        (`Lanes._counted`, `polynomial`)."""
        k = self.kernel
        wide = self.avx512 and self.width == F32_LANES and self.lane_var == len(k.extents) - 1 \
            and all(s.dtype == "f32" for s in stores) \
            and any(e.prim in PRIMITIVES and PRIMITIVES[e.prim].llvm[0].startswith("mathlib.")
                    for s in stores for e in postorder(s.value))
        if wide:
            string_attribute(self.function, "min-legal-vector-width", str(WIDE_F32_LANES * 32))
            self.width, self.polynomial = WIDE_F32_LANES, True
        try:
            yield
        finally:
            self.width = F32_LANES if wide else self.width
            self.polynomial = False

    def _in_order(self, phase, slots):
        """Codegen's order: the row is the last loop and the loops after the first inner loop that
        address memory as one with it (a per-channel sum over [N, C, 28, 28]: rows of 784, one per
        image, as LLVM's loops ran). Over the rows in the order of the loops before it, vector v of
        each row (its elements v*W .. v*W + W-1, the last one masked where W does not divide the
        row, its other lanes the identity) goes into partial vector v mod P (`own_parts`); after
        the last row the partials are folded left and reduced by halves (`_close_parts`); a body
        calling mathlib one vector a step into a `cycled` array (P a step, LLVM spilled them), W 16
        where the target has AVX-512 (else 8)."""
        k, cycled = self.kernel, calls_mathlib(phase.reductions)
        w = WIDE_F32_LANES if cycled and self.avx512 else F32_LANES  # though a label's i64 narrows the kernel's
        if w > F32_LANES:  # LLVM splits the function's vectors into halves where prefer-256-bit has it
            string_attribute(self.function, "min-legal-vector-width", str(w * 32))
        last = len(k.extents)
        first = next((f for f in range(k.outer + 1, last - 1) if self._collapsible(f, last)), last - 1)
        n = prod(k.extents[first:])
        count = own_parts(phase, n, w)
        parts_at = self._open_parts(phase, slots, w, count, cycled)
        whole, vectors = n // w, -(-n // w)
        main = whole - whole % count

        def row():
            for var in range(first, last - 1):
                self.vars[var] = ZERO
            if main and cycled:
                span = ir.Constant(I64, count * w)
                self._range(self.counters[self.lane_var], ZERO, ir.Constant(I64, main * w),
                            lambda i: self._add_part(phase, parts_at, self.b.urem(i, span), i, w, 0), step=w)
            elif main:
                self._range(self.counters[self.lane_var], ZERO, ir.Constant(I64, main * w),
                            lambda i: [self._add_part(phase, parts_at, p, i, w, p) for p in range(count)],
                            step=count * w)
            for v in range(main, vectors):
                rest = n - v * w
                if rest < w:
                    self.mask = ir.Constant(ir.VectorType(I1, w), [lane < rest for lane in range(w)])
                self._add_part(phase, parts_at, v % count, ZERO, w, v)
                self.mask = None
        self._loops(k.outer, first, row, reduce=True)
        self._close_parts(parts_at, w)

    def _open_parts(self, phase, slots, w, count, cycled=False):
        """`count` vectors of `w` lanes of partials per reduction of `phase` in stack slots (one array
        if `cycled`): the accumulator's value in lane 0 of the first (the others -0.0; a max's in every
        lane), and a max's NaN flags. Returns {slot: (its reduction, its parts, its flags or None)}."""
        b, f32 = self.b, TYPES["f32"]
        vector, flags = ir.VectorType(f32, w), ir.VectorType(I1, w)
        parts_at = {}
        for slot, r in zip(slots, phase.reductions):
            acc, zero = b.load(self.accs[slot]), mathlib.const(vector, -0.0)
            starts = [b.insert_element(zero, acc, ir.Constant(I32, 0))] + [zero] * (count - 1) \
                if r.combine == Combine.ADD else [self._splat_to(acc, w)] * count
            array = cycled and self._entry_alloca(vector, f"parts{slot}.{w}", size=ir.Constant(I32, count))
            parts = [b.gep(array, [ir.Constant(I32, p)]) if cycled else
                     self._entry_alloca(vector, f"part{slot}.{w}.{p}") for p in range(count)]
            for value, part in zip(starts, parts):
                b.store(value, part)
            seen = None
            if slot in self.nans:
                seen = self._entry_alloca(flags, f"nans{slot}.{w}")
                b.store(mathlib.const(flags, 0), seen)
            parts_at[slot] = (r, parts, seen)
        return parts_at

    def _add_part(self, phase, parts_at, p, start, w, v):
        """The bodies of `phase`'s reductions at the `w` iterations from start + v*w combined into
        their partial vectors number `p` (a value: the partial `p` floats into a cycled array); in
        a masked vector (`mask`), lanes past the row add the identity."""
        b, f32 = self.b, TYPES["f32"]
        self.lanes, self.vars[self.lane_var] = w, b.add(start, ir.Constant(I64, v * w), flags=["nsw", "nuw"])
        memo = Values()
        values = [self._emit(r.body, memo) for r in phase.reductions]
        for (r, parts, seen), value in zip(parts_at.values(), values):
            if self.mask is not None:
                value = b.select(self.mask, value, mathlib.const(value.type, -0.0 if r.combine == Combine.ADD
                                                                 else float("-inf")))
            part = parts[p] if isinstance(p, int) else b.gep(parts[0], [p], inbounds=True, source_etype=f32)
            b.store(self._fold(r, b.load(part), value), part)
            if seen is not None:
                b.store(b.or_(b.load(seen), b.fcmp_unordered("uno", value, value)), seen)
        self.lanes = 0

    def _close_parts(self, parts_at, w):
        """Each reduction's partial vectors folded left into the first (p1 + p0, then + p2, + p3)
        and its lanes reduced by LLVM's `vector.reduce` (reassociating: halves, as LLVM expands it)
        into the accumulator; a max's NaN flag takes an `or` of its lanes' flags."""
        b, f32 = self.b, TYPES["f32"]
        vector, flags = ir.VectorType(f32, w), ir.VectorType(I1, w)
        for slot, (r, parts, seen) in parts_at.items():
            total = b.load(parts[0])
            for part in parts[1:]:
                total = self._fold(r, b.load(part), total)
            if r.combine == Combine.ADD:
                total = b.call(self._reduction("fadd", vector, [f32, vector]), [mathlib.const(f32, -0.0), total],
                               fastmath=("reassoc",))
            else:
                total = b.call(self._reduction("fmax", vector, [vector]), [total], fastmath=("nnan", "nsz"))
            b.store(total, self.accs[slot])
            if seen is not None:
                nan = b.call(self._reduction("or", flags, [flags]), [b.load(seen)])
                b.store(b.or_(b.load(self.nans[slot]), nan), self.nans[slot])

    def _fold(self, reduction, acc, value):
        """acc combined with value: a plain fadd (no `reassoc`), or a max's maxnum (its NaNs flagged)."""
        if reduction.combine == Combine.ADD:
            return self.b.fadd(acc, value)
        return mathlib.intrinsic(self.b, "llvm.maxnum", acc, value, fastmath=("nnan", "nsz"))

    def _reduction(self, name, vector, args):
        """LLVM's `vector.reduce.<name>` intrinsic over `vector`, declared once."""
        symbol = f"llvm.vector.reduce.{name}.v{vector.count}{vector.element.intrinsic_name}"
        return self.b.module.globals.get(symbol) or ir.Function(
            self.b.module, ir.FunctionType(vector.element, args), symbol)

