"""Integer-indexed ops: `arange` (0, 1, ..., size-1) and `gather` (rows of a table picked by
integer indices: an embedding lookup).

Gather declares which rows it reads (`RowsAt`): backends load each row indirectly, at its
index's value (an index outside the table reads a zero row). Its gradient, the scatter-add of the
adjoint into a zero table, is the transposed product of the one-hot matrix of the indices (the
indices compared with an arange) and the adjoint, so gradients stay IR of existing ops."""
import math

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


def _gather_ref(table, indices):
    """table[indices]; an index outside [0, rows) is an error (numpy would wrap negative ones)."""
    outside = (indices < 0) | (indices >= len(table))
    if outside.any():
        raise IndexError(f"gather: index {int(indices[outside].flat[0])} is out of range for a "
                         f"table of {len(table)} rows (indices must be in [0, {len(table)}))")
    return np.take(table, indices, axis=0)


def _one_hot_rows(b, indices, rows, dtype):
    """The (count, rows) matrix whose row k is one-hot at indices.flat[k]: the indices, as a column,
    compared with arange(rows) as a row. An index outside [0, rows) gives a zero row."""
    count = indices.type.size
    column = b.reshape(indices, shape=(count, 1))
    if column.dtype != "i64":
        column = b.cast(column, dtype="i64")
    positions = b.reshape(b.arange(size=rows), shape=(1, rows))
    hit = b.equal(b.broadcast_to(column, shape=(count, rows)), b.broadcast_to(positions, shape=(count, rows)))
    return b.cast(hit, dtype=dtype)


def _table_matrix_shape(table):
    """The table as a matrix: its rows by the product of its other axes."""
    return table.shape[0], math.prod(table.shape[1:])


def _gather_grad(b, n, g):
    """The adjoint scattered (added) into a zero table: (g^T @ one_hot(indices))^T, so that the
    one-hot matrix, computed, is stored as it is computed, and BLAS reads the adjoint transposed."""
    table, indices = n.operands
    rows, width = _table_matrix_shape(table)
    hot = _one_hot_rows(b, indices, rows, g.dtype)
    flat = b.reshape(g, shape=(indices.type.size, width))
    product = b.matmul(b.transpose(flat, axes=(0, 1)), hot)
    return [b.reshape(b.transpose(product, axes=(0, 1)), shape=table.shape), None]


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
