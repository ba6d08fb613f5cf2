"""Batched matrix multiplication with numpy's broadcasting of the batch axes."""
import numpy as np

from ..graph import check
from ..registry import AxisIndex, LoopNest, OpDef, register
from ..types import TensorType
from .layout import sum_to_shape


def _matmul_infer(types):
    a, b = types
    check(a.ndim >= 2 and b.ndim >= 2, "operands need rank >= 2 (reshape vectors to matrices)")
    check(a.dtype == b.dtype, "operand dtypes differ (cast explicitly)")
    check(a.shape[-1] == b.shape[-2], f"inner dimensions {a.shape[-1]} and {b.shape[-2]} differ")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        check(False, f"batch dimensions {a.shape[:-2]} and {b.shape[:-2]} do not broadcast")
    return TensorType(tuple(batch) + (a.shape[-2], b.shape[-1]), a.dtype)


def _swap_last(b, v):
    return b.transpose(v, axes=(v.ndim - 2, v.ndim - 1))


def _matmul_grad(b, n, g):
    x, y = n.operands
    return [sum_to_shape(b, b.matmul(g, _swap_last(b, y)), x.shape),
            sum_to_shape(b, b.matmul(_swap_last(b, x), g), y.shape)]


def _operand_map(operand, batch, rows, cols):
    """Batch axes aligned right (size 1 broadcast), then the matrix axes read loop axes rows, cols."""
    lead = batch - (operand.ndim - 2)
    axes = tuple(AxisIndex() if d == 1 else AxisIndex(((a + lead, 1),))
                 for a, d in enumerate(operand.shape[:-2]))
    return axes + (AxisIndex(((rows, 1),)), AxisIndex(((cols, 1),)))


def _matmul_loops(types, result):
    """Loops (batch..., m, n | k): x[..., m, k] * y[..., k, n]."""
    x, y = types
    batch = result.ndim - 2
    k = result.ndim
    return LoopNest((x.shape[-1],), (_operand_map(x, batch, batch, k), _operand_map(y, batch, k, batch + 1)),
                    "add", lambda a, b: a * b)


register(OpDef("matmul", 2, _matmul_infer, np.matmul, _matmul_grad, None, "matmul", {},
               "x @ y over the last two axes, batch axes broadcast", loop_nest=_matmul_loops, blas=True))
