"""What the host does to run a CUDA program, in schedule order: kernel launches, cuBLAS gemms (one
per batch index, at the element offsets `GemmCall.batches` gives) and device-to-device copies."""
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
