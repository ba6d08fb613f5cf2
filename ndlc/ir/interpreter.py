"""The reference interpreter: runs any graph with the registry's numpy references. It is the
oracle every other stage is tested against."""
import numpy as np

from .errors import NdlcError, ShapeError
from .registry import get_op
from .types import TensorType, dtype_name


def evaluate_node(node, arrays):
    """Run one node's numpy reference; the result must have the node's type exactly."""
    opdef = get_op(node.op)
    with np.errstate(all="ignore"):
        out = np.asarray(opdef.reference(*arrays, **node.attrs))
    expected = node.result.type
    if out.dtype != expected.np_dtype:
        out = out.astype(expected.np_dtype)
    if out.shape != expected.shape:
        raise NdlcError(f"internal error: {node.op}'s reference gave shape {out.shape}, "
                        f"its shape rule {expected.shape}")
    return out


def check_argument(value, array, what) -> np.ndarray:
    """`array` as numpy with `value`'s exact type, or a ShapeError naming the input `what`."""
    array = np.asarray(array)
    try:
        got = TensorType(array.shape, dtype_name(array.dtype))
    except NdlcError as e:
        raise ShapeError(f"{what}: {e}") from None
    if got != value.type:
        raise ShapeError(f"{what} has type {got}, expected {value.type}")
    return array


def run(graph, args, env=None) -> dict:
    """Evaluate every node; `args` feed the non-const inputs in order. Returns value -> array."""
    env = dict(env or {})
    feeds = [v for v in graph.inputs if v.kind != "const"]
    if len(args) != len(feeds):
        raise ShapeError(f"@{graph.name} takes {len(feeds)} inputs, got {len(args)}")
    for i, (v, a) in enumerate(zip(feeds, args)):
        env[v] = check_argument(v, a, f"@{graph.name} input {i} ({v.name or v.kind})")
    for v in graph.inputs:
        if v.kind == "const":
            if v not in graph.constants:
                raise NdlcError(f"@{graph.name}: const input {v.name or ''} has no data")
            env[v] = graph.constants[v]
    for node in graph.nodes:
        if node.result not in env:
            env[node.result] = evaluate_node(node, [env[v] for v in node.operands])
    return env


def interpret(graph, *args):
    """Outputs of `graph` on numpy `args` (state updates are in `run`'s environment)."""
    env = run(graph, args)
    return [env[v] for v in graph.outputs]
