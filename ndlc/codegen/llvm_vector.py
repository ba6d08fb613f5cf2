"""Innermost loops shaped for LLVM's loop vectoriser: a mixin of the kernel emitter
(codegen/llvm.py), which supplies `kernel`, `types`, `ranges`, `vars` and `_for`.

LLVM picks a vector width that divides a loop's known trip count rather than leave a scalar
remainder, so a short row runs narrow: LeNet's 28-wide feature maps ran 4 wide, their sigmoid's
exp half as fast as 8 wide. Two shapes avoid it: loops that address memory as one (every access's
stride in the outer is the inner's times its extent) run as one loop, and a row of any other
length runs as a loop over its largest multiple of the width, then one over the rest. A
reduction's rows are not split, and its first reduced loop is not collapsed (codegen/llvm.py
`_loops`): a per-channel sum over [N, C, 28, 28] runs 784-wide rows.

Kernels that move data (`moves`: maps and 'chunks' kernels) run on codegen's own vectors
(codegen/llvm_lanes.py) where LLVM's vectoriser used to be needed: a load strided along the lane
loop is gathered (`_gathered`: stride 2, a pooling window's, as two overlapping vector loads and
a shuffle; others a load per lane), a strided store scattered a lane at a time, a row padded by
its guards split into its borders (one point at a time) and its middle (vectors: llvm_guards.py),
and a row shorter than the width runs as vectors of its powers of two. Each lane moves what one
scalar iteration moved, so the results are those of the scalar loops, bit for bit.
"""
from math import prod

from llvmlite import ir

from ..ir.kernel import Strategy
from ..ir.kernel_leaves import Acc, infer_dtypes
from ..ir.types import numpy_dtype
from .llvm_scalar import I64, MEMORY

I32 = ir.IntType(32)

# bytes of the vectors LLVM vectorises with on an AVX2 host (and on an AVX-512 one, where LLVM
# prefers 256-bit vectors by default)
VECTOR_BYTES = 32
POINTS_MOST = 64  # a loop of at most this many points is emitted as one body per point (llvm_guards.py _by_points)
ZERO = ir.Constant(I64, 0)  # the value of a loop variable folded into the loop after it
# the strategies whose last loop is innermost, its body a point's loads and stores (a rows or chunks
# kernel runs a loop over its block or columns inside)
INNERMOST = (Strategy.POINT, Strategy.GEMM)


def expression_dtypes(kernel) -> dict:
    """id(node) -> the dtype of each node of the kernel's expressions (ir/kernel.py infer_dtypes)."""
    types = {}
    for phase in kernel.phases:
        def leaf(payload, phase=phase):
            return phase.reductions[payload.index].dtype if isinstance(payload, Acc) else kernel.loads[payload].dtype
        for expr in phase.expressions():
            types.update(infer_dtypes(expr, leaf))
    return types


def moves(kernel) -> bool:
    """Whether codegen's vectors may gather, scatter, split a row by its guards and run rows
    shorter than the width (`VectorLoops._gathered`, `_scattered`): a map, or a 'chunks' kernel
    (each lane its own column), whose lanes carry nothing from one iteration to the next, so
    that moving data changes no result."""
    return kernel.strategy == Strategy.CHUNKS or kernel.strategy == Strategy.POINT and not kernel.reductions


def strided_along(access, var, moving) -> bool:
    """Whether codegen's vectors make `access` along loop `var`: contiguous, or where the kernel
    `moves` data, a forward stride (a gather, or a scatter)."""
    along = access.form.coeffs[var]
    return access.step == 1 and (along == 1 or moving and along > 1)


def interleaved_rows(kernel, width) -> bool:
    """Whether a map's last loop is shorter than the vector `width` and every store is contiguous
    over its last two loops while every load stays put along the last, or reads at one of its
    iterations only (`point_guards`: a phase of strided col2im, ir/ops/windows.py), each guard along
    the loop before an interval (`_split_by_guards`): then the loop before runs as the lanes and the
    last loop's few values per lane are interleaved into one contiguous store (`_interleaved`),
    where a lane loop of 2 stored 8 bytes at a time (pooling's gradient, an upsampling: rows of 2
    from a value each) or its iterations ran one point at a time (col2im's phases)."""
    last, n = len(kernel.extents) - 1, kernel.extents[-1]
    if kernel.strategy != Strategy.POINT or kernel.reductions or not 2 <= n < width or last < 1 \
            or kernel.extents[last - 1] < 2 or kernel.local or kernel.streams and kernel.streams.buffers \
            or kernel.split and kernel.split.loop == last - 1:
        return False
    stored = {s.buffer for s in kernel.stores}
    if any(s.dtype == "bool" or s.access.step != 1 or s.access.guards or s.access.form.coeffs[last] != 1
           or s.access.form.coeffs[last - 1] != n for s in kernel.stores):
        return False
    if not any(x.access.form.coeffs[last - 1] for x in kernel.loads):  # else the loops collapse into one
        return False
    points = set().union(*point_guards(kernel, last).values())
    for x in kernel.loads:
        at_point = any(g in points for g in x.access.guards)
        if x.access.step != 1 or x.access.form.coeffs[last] and not at_point or getattr(x, "buffer", None) in stored:
            return False
        if any(g not in points and (g.form.coeffs[last] or g.form.coeffs[last - 1] and not splittable(g, last - 1))
               for g in x.access.guards):
            return False
    return True


def point_guards(kernel, var) -> dict:
    """{i: the guards that hold only at i} when every iteration i of loop `var` (at most
    POINTS_MOST) is such a point of some load's guard: a stack's output reads one of its T
    inputs at each i, through T padded loads."""
    extent = kernel.extents[var]
    points = {}
    for load in kernel.loads:
        for g in load.access.guards:
            f = g.form
            if g.bound == 1 and g.step == 1 and f.coeffs[var] == 1 and not any(c for i, c in enumerate(f.coeffs) if i != var):
                points.setdefault(-f.const, set()).add(g)
    return points if 1 < extent <= POINTS_MOST and set(points) == set(range(extent)) else {}


def splittable(guard, var) -> bool:
    """Whether `guard` bounds loop `var` as an interval (codegen/llvm_guards.py `_split_by_guards`)."""
    return guard.step == 1 and abs(guard.form.coeffs[var]) == 1


def vector_width(kernel, types) -> int:
    """Elements of the kernel's widest type (`types`: its expressions' dtypes) in a vector (what
    bounds LLVM's width, and the width of codegen's own vectors)."""
    dtypes = {*types.values(), *(load.dtype for load in kernel.loads), *(store.dtype for store in kernel.stores)}
    return max(VECTOR_BYTES // max((numpy_dtype(d).itemsize for d in dtypes if d), default=1), 1)


class VectorLoops:
    """Collapsing contiguous innermost loops, splitting a row at the vector width, and strided
    loads and stores as codegen's vectors (which also supplies `b`, `lanes`, `mask`, `_get`)."""

    def _collapsible(self, first, last) -> bool:
        """Whether the innermost loops first..last-1 address every buffer as one loop: in each
        access and guard, a loop's coefficient is the next loop's times the next loop's extent."""
        k = self.kernel
        if last != len(k.extents) or last - first < 2 or k.strategy not in INNERMOST \
                or any(v in self.ranges for v in range(first, last)):
            return False
        forms = [x.access.form for x in (*k.loads, *k.stores)]
        forms += [g.form for x in (*k.loads, *k.stores) for g in x.access.guards]
        return all(f.coeffs[v] == f.coeffs[v + 1] * k.extents[v + 1] for f in forms for v in range(first, last - 1))

    def _collapse(self, first, last):
        """Loops first..last-1 as loop last-1 over their product (the others' variables 0): its
        (start, stop)."""
        for v in range(first, last - 1):
            self.vars[v] = ZERO
        return ZERO, ir.Constant(I64, prod(self.kernel.extents[first:last]))

    def _split_by_width(self, var, start, stop, body):
        """Innermost loop `var` from 0 to a constant n as two: up to n's largest multiple of the
        vector width, then the rest (which LLVM vectorises narrower, or not at all)."""
        constant = var == len(self.kernel.extents) - 1 and start is ZERO and isinstance(stop, ir.Constant)
        n = stop.constant if constant and self.kernel.strategy in INNERMOST else 0
        whole = n - n % self.width
        if 0 < whole < n:
            self._for(var, start, ir.Constant(I64, whole), body)
            start = ir.Constant(I64, whole)
        self._for(var, start, stop, body)

    def _gathered(self, pointer, ty, stride):
        """The lanes' elements `stride` apart from `pointer` (a pooling window's, a transpose's):
        stride 2 as two overlapping vector loads of the span and one shuffle of its even elements
        (what LLVM's vectoriser makes of an interleaved group), another as a load per lane; in a
        partial vector the lanes that load nothing read lane 0's element instead."""
        b, w = self.b, self.lanes
        vector = ir.VectorType(ty, w)
        if stride == 2 and self.mask is None:  # elements [0, 2w - 1): at 0 and at w - 1
            low = self._get(pointer, ty)
            high = self._get(b.gep(pointer, [ir.Constant(I64, w - 1)], inbounds=True, source_etype=ty), ty)
            picks = [2 * lane if 2 * lane < w else 2 * lane + 1 for lane in range(w)]
            return b.shuffle_vector(low, high, ir.Constant(ir.VectorType(I32, w), picks))
        value = ir.Constant(vector, ir.Undefined)
        for lane in range(w):
            element = b.load(b.gep(pointer, [self._lane_offset(lane, stride)], inbounds=True, source_etype=ty), typ=ty)
            value = b.insert_element(value, element, ir.Constant(I32, lane))
        return value

    def _scattered(self, value, pointer, stride):
        """The lanes of `value` stored `stride` apart from `pointer`, one store per lane; in a
        partial vector the lanes that store nothing store lane 0's value at lane 0's element again."""
        b = self.b
        first = b.extract_element(value, ir.Constant(I32, 0))
        for lane in range(value.type.count):
            element = b.extract_element(value, ir.Constant(I32, lane)) if lane else first
            if lane and self.mask is not None:
                element = b.select(b.extract_element(self.mask, ir.Constant(I32, lane)), element, first)
            b.store(element, b.gep(pointer, [self._lane_offset(lane, stride)], inbounds=True,
                                   source_etype=value.type.element))

    def _lane_offset(self, lane, stride):
        """Lane `lane`'s element offset from lane 0's: 0 where the lane is masked off."""
        offset = ir.Constant(I64, lane * stride)
        if not lane or self.mask is None:
            return offset
        return self.b.select(self.b.extract_element(self.mask, ir.Constant(I32, lane)), offset, ZERO)

    def _interleaved(self, var, inner):
        """inner() (a map's stores) at each of loop `var`'s few iterations (each knowing which of its
        points' guards hold), the lanes running the loop before it (`interleaved_rows`), then each
        store's values interleaved: lane j's value of iteration u at element j * n + u of one
        contiguous vector store (a single lane: each value stored where it is)."""
        b, n, w = self.b, self.kernel.extents[var], self.lanes
        if w:  # else one lane (a rest of 1), stored where it is
            self.collected = {id(store): [] for store in self.kernel.stores}
        points = point_guards(self.kernel, var)
        every, known, failing = set().union(*points.values()), self.known, self.failing
        for u in range(n):  # at a point, the loads of the others read nothing (their additions of zeros stay)
            self.known, self.failing = known | points.get(u, set()), failing | (every - points.get(u, set()))
            self.vars[var] = ir.Constant(I64, u)
            inner()
        self.known, self.failing = known, failing
        values, self.collected = self.collected, None
        if not w:
            return
        self.vars[var] = ZERO
        picks = ir.Constant(ir.VectorType(I32, n * w), [u * w + j for j in range(w) for u in range(n)])
        for store in self.kernel.stores:
            whole = joined(b, values[id(store)])
            index, _ = self._address(store.access)
            pointer = b.gep(self.pointers[store.buffer], [index], inbounds=True, source_etype=MEMORY[store.dtype])
            self._put(b.shuffle_vector(whole, ir.Constant(whole.type, ir.Undefined), picks), pointer)


def joined(b, vectors):
    """One vector of `vectors`' lanes one after another (as many again of the first appended up
    to a power of two of them: lanes past the given ones are not meant to be read)."""
    vectors = list(vectors) + [vectors[0]] * ((1 << (len(vectors) - 1).bit_length()) - len(vectors))
    while len(vectors) > 1:
        count = vectors[0].type.count
        order = ir.Constant(ir.VectorType(I32, 2 * count), list(range(2 * count)))
        vectors = [b.shuffle_vector(vectors[i], vectors[i + 1], order) for i in range(0, len(vectors), 2)]
    return vectors[0]
