"""Integer-indexed ops: `arange` (0, 1, ..., size-1) and `gather` (rows of a table picked by
integer indices: an embedding lookup).

Gather declares which rows it reads (`RowsAt`): backends load each row indirectly, at its
index's value (an index outside the table reads a zero row). Its gradient is `scatter_add`: the
adjoint's rows added, in index order, into a zero table's rows at the indices (`scatters`: a
Scatter kernel, ir/kernel.py), microseconds where the one-hot matrix's product with the adjoint
(vocabulary x tokens x width multiply-adds) took 0.45 ms of the LSTM LM's step."""
import numpy as np

from .. import scalar as S
from ..graph import check
from ..registry import Attr, AxisIndex, OpDef, RowsAt, register
from ..types import TensorType, is_integer


def _arange_infer(types, size, dtype):
    check(size >= 0, f"size {size} must be >= 0")
    check(dtype != "bool", "dtype must be numeric, got bool")
    return TensorType((size,), dtype)


register(OpDef("arange", 0, _arange_infer,
               lambda size, dtype: np.arange(size, dtype=TensorType((), dtype).np_dtype),
               kind="creation", scalar=lambda size, dtype: S.cast(S.index(), dtype),
               attrs={"size": Attr("int"), "dtype": Attr("dtype", "i64")},
               doc="0, 1, ..., size - 1"))


def _gather_infer(types):
    table, indices = types
    check(table.ndim >= 1, "the table needs rank >= 1 (one row per index value)")
    check(table.dtype != "bool", "the table must be numeric, got bool")
    check(is_integer(indices.dtype), f"indices must be integers, got {indices.dtype}")
    return TensorType(indices.shape + table.shape[1:], table.dtype)


def _check_rows(op, indices, rows):
    """An index outside [0, rows) is an error (numpy would wrap negative ones)."""
    outside = (indices < 0) | (indices >= rows)
    if outside.any():
        raise IndexError(f"{op}: index {int(indices[outside].flat[0])} is out of range for a "
                         f"table of {rows} rows (indices must be in [0, {rows}))")


def _gather_ref(table, indices):
    """table[indices]."""
    _check_rows("gather", indices, len(table))
    return np.take(table, indices, axis=0)


def _gather_grad(b, n, g):
    """The adjoint's rows added into a zero table at the indices."""
    table, indices = n.operands
    return [b.scatter_add(g, indices, rows=table.shape[0]), None]


def _gather_rows(types, result):
    """Result element (i..., j...) is table[indices[i...], j...]."""
    table, indices = types
    lead = indices.ndim
    return RowsAt(tuple(AxisIndex(((a, 1),)) for a in range(lead)),
                  tuple(AxisIndex(((lead + a, 1),)) for a in range(table.ndim - 1)))


register(OpDef("gather", 2, _gather_infer, _gather_ref, _gather_grad, kind="layout",
               doc="rows of `table` at integer `indices`: result shape indices.shape + "
                   "table.shape[1:] (an embedding lookup); indices must be in [0, rows)",
               rows_at=_gather_rows))


def _scatter_add_infer(types, rows):
    values, indices = types
    check(rows >= 0, f"rows {rows} must be >= 0")
    check(values.dtype != "bool", "the values must be numeric, got bool")
    check(is_integer(indices.dtype), f"indices must be integers, got {indices.dtype}")
    check(values.shape[:indices.ndim] == indices.shape,
          f"the values' leading axes {values.shape[:indices.ndim]} must be the indices' shape {indices.shape}")
    return TensorType((rows,) + values.shape[indices.ndim:], values.dtype)


def _scatter_add_ref(values, indices, rows):
    """A zero table with values' rows added in index order: row k into row indices.flat[k]
    (np.add.at adds one row after another, as the compiled kernel does)."""
    _check_rows("scatter_add", indices, rows)
    out = np.zeros((rows,) + values.shape[indices.ndim:], values.dtype)
    np.add.at(out, indices.reshape(-1), values.reshape((indices.size,) + out.shape[1:]))
    return out


def _scatter_add_grad(b, n, g):
    """Each value's adjoint is its row's: the adjoint gathered at the indices."""
    return [b.gather(g, n.operands[1]), None]


register(OpDef("scatter_add", 2, _scatter_add_infer, _scatter_add_ref, _scatter_add_grad, kind="layout",
               attrs={"rows": Attr("int")}, scatters=True,
               doc="a zero table of `rows` rows, `values`' rows added into it at integer `indices` "
                   "in index order (gather's adjoint); indices must be in [0, rows)"))
