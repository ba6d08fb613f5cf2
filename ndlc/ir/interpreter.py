"""The reference interpreter: runs any graph with the registry's numpy references. It is the
oracle every other stage is tested against."""
import numpy as np

from ..errors import NdlcError, ShapeError, VerifyError
from .registry import get_op
from .types import TensorType, dtype_name
from .verifier import verify


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
            try:
                env[node.result] = evaluate_node(node, [env[v] for v in node.operands])
            except NdlcError:
                raise
            except Exception as e:  # a graph that never went through the verifier: say what is wrong
                _explain_invalid(graph, e)
                raise
    return env


def _explain_invalid(graph, error):
    """Raise VerifyError when `graph` breaks an IR invariant (the likely cause of `error`)."""
    try:
        verify(graph)
    except VerifyError as e:
        raise VerifyError(f"@{graph.name} cannot be interpreted, it is not a valid graph "
                          f"({type(error).__name__} while evaluating it): {e}") from None


def interpret(graph, *args):
    """Outputs of `graph` on numpy `args` (state updates are in `run`'s environment)."""
    env = run(graph, args)
    return [env[v] for v in graph.outputs]
