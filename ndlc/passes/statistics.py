"""Mean and variance in one pass over the data, where a kernel makes two (BatchNorm's, LayerNorm's;
BatchNorm2d's over a conv's output plus its bias, x an expression).

After merging, a normalisation's statistics kernel sums x in one phase, stores the mean
m = Σx / n, then sums (x - m)² in the next: two passes over x. This rewrite sums d = x - k and d²
in one pass instead, k being x at the first inner point (its first row or element: shifted sums,
as PyTorch's CPU kernels do), and derives Σx = Σd + n·k and Σ(x - m)² = max(Σd² - (Σd)²/n, 0).
With a shift drawn from the data, (m - k)² is of the order of the variance, so the cancellation
costs a few bits, not the mean's magnitude (a large mean over a small variance stays accurate).
d is summed scaled, as x·2^(-j/2) - k·2^(-j/2), 2^-j the least even power of two at most
1/(n(n + 1)) and 1/4, so that d² is scaled by 2^-j, and the sums are scaled back after the
subtraction: powers of two, so the same bits wherever the scaled values stay normal, while no sum
overflows where the two-pass sums do not: Σd² is at most n + 1 times the two-pass Σ(x - m)² (each
d² 4 times; rows of ~1e19 were inf - inf = NaN), (Σd)²/n at most Σd² (a column of ~3e19 had a zero
variance), d at most twice the largest float (+3e38 - -3e38 was inf), n·k and Σd n times it (Σx
is (Σd + n·k) scaled, and the mean ((Σd + n·k)·2^(j/2 - 1)/n)·2, finite where Σx rounds past the
largest float: a row whose first element is that float). (Σd)²/n is held to the largest float so
that an overflowed difference is inf, as the two-pass sum is.
Each rewritten kernel says so in its `merged:` line.
"""
import math
from dataclasses import replace

import numpy as np

from ..ir.indexing import Access, Affine
from ..ir.kernel import Combine, Phase
from ..ir.kernel_leaves import Acc, Load
from ..ir.scalar import ScalarExpr, leaves, map_leaves
from ..ir.types import is_float

LARGEST = {"f32": float(np.finfo(np.float32).max), "f64": float(np.finfo(np.float64).max)}


def one_pass_statistics(kernel):
    """`kernel` with each (sum of x, then sum of (x - mean)²) pair of phases made one phase."""
    if kernel.gemm is not None:
        return kernel
    p = 0
    while p + 1 < len(kernel.phases):
        found = _statistics(kernel, p)
        if found is not None:
            kernel = _one_pass(kernel, p, *found)
        p += 1
    return kernel


def _arg(payload):
    return ScalarExpr("arg", payload=payload)


def _same(a, b) -> bool:
    """Whether two scalar expressions compute the same thing (structurally equal)."""
    return a.prim == b.prim and a.payload == b.payload and len(a.args) == len(b.args) \
        and all(_same(x, y) for x, y in zip(a.args, b.args))


def _deviation(expr):
    """(x, m's load) where expr is x - m, m a load and x any expression, else None."""
    if expr.prim == "sub" and expr.args[1].prim == "arg":
        return expr.args[0], expr.args[1].payload
    if expr.prim == "add" and expr.args[1].prim == "neg" and expr.args[1].args[0].prim == "arg":
        return expr.args[0], expr.args[1].args[0].payload
    return None


def _squared_deviation(body):
    """(x, m's load) where body is (x - m)² (a power of 2 or a product), else None."""
    if body.prim == "pow" and body.args[1].prim == "const" and body.args[1].payload == 2:
        return _deviation(body.args[0])
    if body.prim == "mul":
        first, second = (_deviation(a) for a in body.args)
        return first if first is not None and second is not None and first[1] == second[1] \
            and _same(first[0], second[0]) else None
    return None


def _statistics(kernel, p):
    """(slot of Σx in phase p, x, n) where phases p and p + 1 are Σx with the mean stored, then
    Σ(x - mean)² alone, x an expression over plain loads of buffers the kernel does not write (a
    conv's output plus its bias: BatchNorm2d's statistics); else None."""
    first, second = kernel.phases[p], kernel.phases[p + 1]
    if first.inner or second.inner or len(second.reductions) != 1:
        return None
    variance = second.reductions[0]
    if variance.combine != Combine.ADD or not is_float(variance.dtype):
        return None
    found = _squared_deviation(variance.body)
    if found is None:
        return None
    x, m = found
    reads = leaves(x)
    if not all(isinstance(a, int) and isinstance(kernel.loads[a], Load) for a in (*reads, m)):
        return None
    written = {s.buffer for s in kernel.stores}
    if any(kernel.loads[a].buffer in written or kernel.loads[a].access.guards or kernel.loads[a].access.step != 1
           for a in reads) or any(kernel.loads[a].indirect for a in (*reads, m)):
        return None
    m = kernel.loads[m]
    n = 1
    for extent in kernel.extents[kernel.outer:]:
        n *= extent
    if n == 0:  # no first inner element to shift by
        return None
    for slot, r in enumerate(first.reductions):
        if r.combine != Combine.ADD or r.dtype != variance.dtype or not _same(r.body, x):
            continue
        if any((store.buffer, store.access) == (m.buffer, m.access) and _is_mean(store.value, slot, n)
               for store in first.stores):
            return slot, x, n
    return None


def _with_sums(expr, slot, n, mean, total):
    """`expr` (a store's value of the first phase) with Σx / n as `mean` (a running mean's update
    holds it), Σx elsewhere as `total`."""
    if _is_mean(expr, slot, n):
        return mean
    if expr.prim == "arg":
        return total if expr.payload == Acc(slot) else expr
    return ScalarExpr(expr.prim, [_with_sums(a, slot, n, mean, total) for a in expr.args], expr.payload)


def _is_mean(value, slot, n) -> bool:
    """Whether a store's value is Σx / n, Σx the phase's sum in `slot`."""
    return value.prim == "div" and value.args[0].prim == "arg" and value.args[0].payload == Acc(slot) \
        and value.args[1].prim == "const" and value.args[1].payload == n


def _one_pass(kernel, p, slot, x, n):
    """Phases p and p + 1 as one: Σd and Σd² with d = x - x at the first inner point."""
    first, second = kernel.phases[p], kernel.phases[p + 1]
    loads = list(kernel.loads)

    def at_first_inner_point(payload):
        load = loads[payload]
        coeffs = tuple(c if i < kernel.outer else 0 for i, c in enumerate(load.access.form.coeffs))
        shifted = load.with_access(Access(Affine(coeffs, load.access.form.const)))
        if shifted not in loads:
            loads.append(shifted)
        return _arg(loads.index(shifted))
    shift, count = map_leaves(x, at_first_inner_point), ScalarExpr("const", payload=float(n))
    dtype, exponent = second.reductions[0].dtype, max(2, math.ceil(math.log2(n * (n + 1))))
    exponent += exponent % 2  # even: d is scaled by its square root, so that d² is scaled by 2^-exponent
    largest = ScalarExpr("const", payload=LARGEST[dtype])
    root, unroot = (ScalarExpr("const", payload=2.0 ** e) for e in (-(exponent // 2), exponent // 2))
    # d = (x - k)·2^(-exponent/2) as x·2^(-exponent/2) - k·2^(-exponent/2): the same bits where those stay
    # normal, and no overflow where x and k are near the largest float of opposite signs
    d = ScalarExpr("sub", (ScalarExpr("mul", (x, root)), ScalarExpr("mul", (shift, root))))
    squares = len(first.reductions)
    reductions = list(first.reductions)
    reductions[slot] = replace(reductions[slot], body=d)
    reductions.append(replace(second.reductions[0], body=ScalarExpr("mul", (d, d))))
    # Σx = (Σd + n·k)·2^(-exponent/2), scaled back: the same bits, and neither Σd nor n·k overflows where Σx need
    # not (a row mixing ±3e38: d is at most twice the largest float, n·k n times)
    scaled = ScalarExpr("add", (_arg(Acc(slot)), ScalarExpr("mul", (ScalarExpr("mul", (shift, root)), count))))
    total = ScalarExpr("mul", (scaled, unroot))
    mean_part = ScalarExpr("div", (ScalarExpr("mul", (_arg(Acc(slot)), _arg(Acc(slot)))), count))
    spread = ScalarExpr("sub", (_arg(Acc(squares)), ScalarExpr("min", (mean_part, largest))))
    spread = ScalarExpr("mul", (ScalarExpr("max", (spread, ScalarExpr("const", payload=0.0))),
                                ScalarExpr("const", payload=2.0 ** exponent)))  # Σ(x - mean)²
    # the mean Σx/n as ((Σd + n·k)·2^(exponent/2 - 1)/n)·2: the same bits, and finite where Σx, a few
    # roundings of Σd past the largest float, is not (a row's first element the largest float)
    half = ScalarExpr("const", payload=2.0 ** (exponent // 2 - 1))
    mean = ScalarExpr("mul", (ScalarExpr("div", (ScalarExpr("mul", (scaled, half)), count)), ScalarExpr("const", payload=2.0)))
    stores = [replace(s, value=_with_sums(s.value, slot, n, mean, total)) for s in first.stores]
    values = {(s.buffer, s.access): s.value for s in stores}

    def later(a):
        """second's leaves: its sum of squares, and first's stores at their elements, as values."""
        if a == Acc(0):
            return spread
        if isinstance(a, int) and isinstance(loads[a], Load):
            return values.get((loads[a].buffer, loads[a].access), _arg(a))
        return _arg(a)
    stores += [replace(s, value=map_leaves(s.value, later)) for s in second.stores]
    stored = {s.buffer for s in first.stores}
    if any(isinstance(a, int) and isinstance(loads[a], Load) and loads[a].buffer in stored
           for s in stores[len(first.stores):] for a in leaves(s.value)):
        return kernel  # second reads what first stores at other elements: not one phase
    phases = kernel.phases[:p] + [Phase(reductions, stores)] + kernel.phases[p + 2:]
    how = f"statistics of %{kernel.loads[leaves(x)[0]].buffer} in one pass: sums shifted by its first inner element"
    return replace(kernel, loads=loads, phases=phases, merged=kernel.merged + (how,))
