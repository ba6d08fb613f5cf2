"""Fusion of a `scatter_add` node (gather's adjoint) into a Scatter kernel (ir/kernel.py): its
values and indices read whole from their buffers (stored first where computed or a strided view), its
result's buffer zeroed, then added into row by row in index order, so that its sums do not
depend on the thread count."""
import math

from ..ir.indexing import contiguous
from ..ir.kernel import BufferKind, Kernel, Scatter


def scatter_definition(lowering, node):
    """The definition of `node`'s result (a load of its buffer), the Scatter kernel computing it
    appended to `lowering`'s kernels (passes/fusion.py `_Lowering`)."""
    placed = []  # (buffer, element offset) of the values and the indices
    for v in node.operands:
        d = lowering.defs[v]
        load = d.payload if lowering._is_load(d) else None
        if load is None or load.indirect or load.access.step != 1 or load.access.guards \
                or load.access.form.coeffs != contiguous(v.shape).form.coeffs:
            d = lowering._store(v, f"read whole by {node.op}")
        placed.append((d.payload.buffer, d.payload.access.form.const))
    fused = lowering._operand_members(node) + (lowering._describe(node),)
    d = lowering._bind_buffer(node.result, BufferKind.TEMP)
    table = node.result.type
    width = math.prod(table.shape[1:])
    (values, v), (indices, i) = placed
    scatter = Scatter(values, indices, lowering.stored[node.result], node.operands[1].type.size, table.shape[0],
                      width, table.dtype, node.operands[1].dtype,
                      f"{node.op} adds rows into it in index order (a kernel of its own)", at=(v, i, 0))
    lowering.kernels.append(Kernel(f"k{len(lowering.kernels)}", (width,), 1, [], [], fused, scatter=scatter))
    return d
