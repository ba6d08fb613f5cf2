"""steps: a scan's body, fused and merged once as a kernel program of its own, run T times.

Each step runs a copy of the body's kernels whose buffers are *placed*: a buffer of the body is
(buffer of the program, element offset), and every access to it moves by that offset. Step t reads
its slice of a stacked x at `t * slice size` in the x's buffer, the consts where they are, its
carries where the step before wrote them (the scan's operands at the first step); it writes each
y into its slot of the scan's packed result and, at the last step, each final carry into its own.
A body output with no slot there (a carry before the last step) is double-buffered: step t writes
buffer t % 2 while it reads the other, which step t - 1 wrote (an LSTM's weight gradients, summed
over the steps, take two buffers, not T). A body's temporary, written and read within a step,
is one buffer for all the steps (`%R.step.name`), which stays in cache from one step to the next;
a kernel that alone touches one may still keep it in per-thread rows in every step
(passes/memory.py counts the steps' copies of a body kernel as one when each writes it). The
copies differ only in constant offsets, which the runner passes as pointer offsets
(codegen/kernel_key.py): every step calls the same native functions. A BLAS call writes its output
at the start of a buffer, so a product that is a y or a final carry is written to a buffer of its
own and copied to its slot.
"""
from dataclasses import replace

from ..ir.indexing import Access, Affine
from ..ir.kernel import Buffer, BufferKind, Kernel, Matrix, Phase, Placement, Store
from ..ir.kernel_leaves import Load
from ..ir.ops.scan import layout
from ..ir.scalar import ScalarExpr


def step_kernels(body, scan, operands, result, buffers) -> list:
    """The kernels running `scan` (a graph node) step after step: `body` its body's kernel program
    (merged, not scheduled); `operands` the (buffer, element offset) of each operand, contiguous;
    `result` the buffer of its packed result. Per-step buffers are added to `buffers`."""
    nc, nx, length = (scan.attrs[k] for k in ("carries", "xs", "length"))
    slots = [offset for offset, _ in layout(scan.attrs["body"], nc, length)]
    size = {name: _size(b) for name, b in body.buffers.items()}
    by_gemm = {k.gemm.out for k in body.kernels if k.gemm is not None}
    carries = list(operands[:nc])
    steps = range(length - 1, -1, -1) if scan.attrs["reverse"] else range(length)
    kernels = []
    for n, t in enumerate(steps):
        where = _Step(t, result)
        place = {}
        for i, name in enumerate(body.inputs):
            buffer, offset = operands[i]
            place[name] = carries[i] if i < nc else (buffer, offset + t * size[name]) if i < nc + nx else (buffer, offset)
        wanted = {}  # output -> the places of the packed result it is written to
        for k, name in enumerate(body.outputs):
            if k >= nc:
                wanted.setdefault(name, []).append((result, slots[k] + t * size[name]))
            elif n == length - 1:
                wanted.setdefault(name, []).append((result, slots[k]))
        copies = []
        for name, buffer in body.buffers.items():
            if buffer.kind not in (BufferKind.TEMP, BufferKind.OUTPUT):
                continue
            targets = wanted.get(name, [])
            if targets and name not in by_gemm:
                place[name], targets = targets[0], targets[1:]
            else:  # an output the next step reads (or a copy): two buffers, steps taking turns; a
                # temporary lives within its step: one buffer for all
                own = f"{result}.{t % 2}.{name}" if buffer.kind == BufferKind.OUTPUT else f"{result}.step.{name}"
                buffers.setdefault(own, Buffer(own, buffer.shape, buffer.dtype, BufferKind.TEMP))
                place[name] = (own, 0)
            copies += [_copy(place[name], target, buffer, where) for target in targets]
        kernels += [_placed(kernel, place, where) for kernel in body.kernels] + copies
        carries = [place[name] for name in body.outputs[:nc]]
    return kernels


def _size(buffer):
    size = 1
    for n in buffer.shape:
        size *= n
    return size


def _moved(access, offset):
    """`access` into a buffer placed `offset` elements into another."""
    if not offset:
        return access
    return Access(Affine(access.form.coeffs, access.form.const + offset * access.step), access.step, access.guards)


def _placed(kernel, place, where):
    """A copy of a body kernel with its buffers placed."""
    loads = [Load(place[load.buffer][0], load.dtype, _moved(load.access, place[load.buffer][1]), load.indirect)
             if isinstance(load, Load) else load for load in kernel.loads]
    phases = [Phase(list(p.reductions), [Store(place[s.buffer][0], _moved(s.access, place[s.buffer][1]), s.value, s.dtype,
                                               s.why and f"in the body, {s.why}") for s in p.stores], p.inner)
              for p in kernel.phases]
    gemm = kernel.gemm
    if gemm is not None:
        a, b = (Matrix(place[m.buffer][0], _moved(m.offset, place[m.buffer][1]), m.ld, m.transposed) for m in (gemm.a, gemm.b))
        gemm = replace(gemm, a=a, b=b, out=place[gemm.out][0], why=gemm.why and f"in the body, {gemm.why}")
    scatter = kernel.scatter
    if scatter is not None:
        (values, v), (indices, i), (out, o) = (place[name] for name in scatter.buffers)
        scatter = replace(scatter, values=values, indices=indices, out=out, at=tuple(a + b for a, b in zip(scatter.at, (v, i, o))),
                          why=scatter.why and f"in the body, {scatter.why}")
    fused = (where.scan,) + tuple(f"body {member}" for member in kernel.fused)
    return replace(kernel, loads=loads, phases=phases, gemm=gemm, scatter=scatter, local=dict(kernel.local), fused=fused, step=str(where),
                   origin=Placement(kernel, place))


def _copy(source, target, buffer, where):
    """A kernel copying `buffer`'s elements from one place to another."""
    flat = Affine((1,))
    load = Load(source[0], buffer.dtype, _moved(Access(flat), source[1]))
    store = Store(target[0], _moved(Access(flat), target[1]), ScalarExpr("arg", payload=0), buffer.dtype,
                  "a slot of the scan's results")
    return Kernel("copy", (_size(buffer),), 1, [load], [Phase([], [store])], fused=(where.scan,), step=str(where))


class _Step:
    """Step `t` of the scan storing `result`: what its kernels say they run, and fuse."""

    def __init__(self, t, result):
        self.t, self.scan = t, f"%{result} scan"

    def __str__(self):
        return f"{self.t} of {self.scan}"
