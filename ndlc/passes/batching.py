"""Batching: a node that computes one step's value, made to compute every step's at once from its
operands stacked along a new leading axis of T steps (JAX's vmap over axis 0), where that is a
matter of the node's attributes; passes/scan_hoist.py moves such nodes out of loops."""
from dataclasses import replace

from ..errors import NdlcError
from ..ir.registry import ROW_MAJOR, AxisIndex, get_op
from ..ir.types import TensorType

# attributes that name axes, positions or a shape, rewritten for an operand with a leading step axis
_SHIFTED = {"axis": lambda a, T: a + 1, "axes": lambda a, T: tuple(x + 1 for x in a), "index": lambda i, T: i,
            "shape": lambda s, T: (T,) + tuple(s), "widths": lambda w, T: ((0, 0),) + tuple(w),
            "start": lambda s, T: (0,) + tuple(s), "stop": lambda s, T: (T,) + tuple(s)}


def batched_attrs(node, T):
    """`node`'s attributes for its operands stacked over T steps (an elementwise op's name no axes)."""
    if get_op(node.op).kind == "elementwise":
        return dict(node.attrs)
    return {k: _SHIFTED[k](v, T) for k, v in node.attrs.items()}


def batchable(node, T, stacked):
    """Whether `node` with its operands stacked over T steps (`stacked`: which are; the others are
    broadcast over the steps) computes each step's value at that step's index: an elementwise op,
    or a view or reduction of one stacked operand whose attributes this module rewrites and whose
    index map (loop nest) over the stacked operand is the step's with the step axis in front."""
    opdef = get_op(node.op)
    elementwise = opdef.kind == "elementwise"
    if not elementwise and (any(k not in _SHIFTED for k in node.attrs) or stacked != [True]):
        return False
    types = [TensorType((T,) + v.shape, v.dtype) for v in node.operands]
    attrs = batched_attrs(node, T)
    try:
        result = opdef.infer_type(types, opdef.check_attrs(attrs))
    except NdlcError:  # the shape rule refuses it: not batchable this way
        return False
    return result == TensorType((T,) + node.result.shape, node.result.dtype) and (
        elementwise or _maps_step_by_step(opdef, node, types[0], result, attrs))


def _maps_step_by_step(opdef, node, stacked, result, attrs):
    """Whether the op on the stacked operand reads, at each step, what it reads of one step."""
    (operand,) = node.operands
    if opdef.index_map is not None:
        step = opdef.index_map([operand.type], node.result.type, **node.attrs)
        batched = opdef.index_map([stacked], result, **attrs)
        if step == ROW_MAJOR or batched == ROW_MAJOR:  # a reshape: row-major order, steps outermost
            return step == batched
    elif opdef.loop_nest is not None:
        step = opdef.loop_nest([operand.type], node.result.type, **node.attrs).maps[0]
        batched = opdef.loop_nest([stacked], result, **attrs).maps[0]
    else:
        return False
    shifted = tuple(replace(a, terms=tuple((axis + 1, coef) for axis, coef in a.terms)) for a in step)
    return tuple(batched) == (AxisIndex(((0, 1),)),) + shifted
