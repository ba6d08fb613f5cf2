"""Innermost loops shaped for LLVM's loop vectoriser: a mixin of the kernel emitter
(codegen/llvm.py), which supplies `kernel`, `types`, `ranges`, `vars` and `_for`.

LLVM picks a vector width that divides a loop's known trip count rather than leave a scalar
remainder, so a short row runs narrow: LeNet's 28-wide feature maps ran 4 wide, their sigmoid's
exp half as fast as 8 wide. Two shapes avoid it: loops that address memory as one (every access's
stride in the outer is the inner's times its extent) run as one loop, and a row of any other
length runs as a loop over its largest multiple of the width, then one over the rest. A
reduction's rows are not split, and its first reduced loop is not collapsed (codegen/llvm.py
`_loops`): a per-channel sum over [N, C, 28, 28] runs 784-wide rows.
"""
from math import prod

from llvmlite import ir

from ..ir.kernel import Acc, Strategy, infer_dtypes
from ..ir.types import numpy_dtype
from .llvm_scalar import I64

# bytes of the vectors LLVM vectorises with on an AVX2 host (and on an AVX-512 one, where LLVM
# prefers 256-bit vectors by default)
VECTOR_BYTES = 32
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


def vector_width(kernel, types) -> int:
    """Elements of the kernel's widest type (`types`: its expressions' dtypes) in a vector (what
    bounds LLVM's width, and the width of codegen's own vectors)."""
    dtypes = {*types.values(), *(load.dtype for load in kernel.loads), *(store.dtype for store in kernel.stores)}
    return max(VECTOR_BYTES // max((numpy_dtype(d).itemsize for d in dtypes if d), default=1), 1)


class VectorLoops:
    """Collapsing contiguous innermost loops and splitting a row at the vector width."""

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
