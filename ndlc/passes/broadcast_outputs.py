"""broadcast outputs: a program output that is a broadcast of a smaller value is returned as that
value, which the runtime hands out as a read-only broadcast view (numpy's
`broadcast_to`, strides of 0; runtime/program.py `Program.views`).

The gradient of a sum is its upstream gradient broadcast over the summed axes: `x.sum((2,))` over
[256, 257, 63] has a [256, 257] adjoint, which a kernel would write 63 times over into 16 MB that
hold nothing more. PyTorch's autograd returns such a gradient as an expanded view of the small
one, writing nothing. Here the broadcast's operand (its keepdims shape, [256, 257, 1]) becomes the
output in its place, and the broadcast, if nothing else reads it, goes with dead code. State
updates are never views (a state's array is written in place); an output that is also a state's
new value stays whole. Runs on the CPU's decomposed graph (jit/pipeline.py), after every rewrite
that could still see through the broadcast.
"""
import math

from ..ir.graph import Graph
from .simplify import dce


def broadcast_outputs(graph: Graph) -> Graph:
    """`graph` with each plain output that broadcasts a smaller value (a whole multiple of its size
    fewer elements) replaced by that value; returns `graph` itself where none does."""
    kept = set(graph.updates.values())
    outputs = [_operand(value) if value not in kept else value for value in graph.outputs]
    if outputs == graph.outputs:
        return graph
    result = graph.copy()
    result.outputs = outputs
    return dce(result)


def _operand(value):
    """The value `value` broadcasts, where it is a broadcast_to of a smaller one; else `value`."""
    node = value.node
    if node is None or node.op != "broadcast_to":
        return value
    operand = node.operands[0]
    if math.prod(operand.shape) >= math.prod(value.shape):
        return value
    return operand
