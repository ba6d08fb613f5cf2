"""What the host does to run a CUDA program, in schedule order: kernel launches, cuBLAS gemms (a
strided batched call per run of evenly spaced batch matrices: `GemmCall.runs`) and device-to-device
copies."""
import math
from dataclasses import dataclass, field

from ..ir.indexing import contiguous
from ..ir.kernel import Gemm

@dataclass(frozen=True)
class Launch:
    """Run `function` on `blocks` blocks of `threads` threads with the buffers `buffers` (in order)."""
    function: str
    blocks: int
    threads: int
    buffers: tuple
    kernel: str


@dataclass(frozen=True)
class GemmCall:
    """cuBLAS's gemm for each batch index (the kernel's loops but the last two) of `extents`."""
    gemm: Gemm
    extents: tuple
    kernel: str

    def batches(self):
        """(a, b, out) element offsets of each batch index's matrices, in row-major batch order."""
        batch = self.extents[:-2]
        found = []
        for flat in range(math.prod(batch)):
            index, rest = [], flat
            for n in reversed(batch):
                index.append(rest % n)
                rest //= n
            point = list(reversed(index)) + [0, 0]
            out = contiguous(self.extents).form
            found.append((at(self.gemm.a.offset.form, point), at(self.gemm.b.offset.form, point),
                          sum(c * v for c, v in zip(out.coeffs[:-2], point))))
        return found

    def runs(self):
        """The batches as strided runs `(a, b, out, stride_a, stride_b, stride_out, count)`: batch
        i of a run at offsets (a + i * stride_a, ...). A kernel's offsets are affine in its batch
        index, so one run covers every batch unless a batch loop is broadcast in a way that no
        single stride describes (then one run per stretch that one does)."""
        found = []
        for offsets in self.batches():
            if found:
                a, b, out, sa, sb, so, count = found[-1]
                step = tuple(o - first for o, first in zip(offsets, (a, b, out)))
                if count == 1 or step == tuple(count * s for s in (sa, sb, so)):
                    strides = tuple(s // count for s in step) if count == 1 else (sa, sb, so)
                    if count > 1 or all(s >= 0 for s in strides):
                        found[-1] = (a, b, out, *strides, count + 1)
                        continue
            found.append((*offsets, 0, 0, 0, 1))
        return found


@dataclass(frozen=True)
class Copy:
    """Device-to-device copy of `nbytes` from buffer `source` to buffer `target` (a new state value
    into its state buffer, where the kernel could not write it there directly)."""
    source: str
    target: str
    nbytes: int


@dataclass
class CudaModule:
    """A program's CUDA C source and the steps that run it (Launch, GemmCall), in schedule order."""
    source: str
    steps: list = field(default_factory=list)


def at(form, point):
    return form.const + sum(c * v for c, v in zip(form.coeffs, point))
