"""`trace(fn, *examples)`: the Graph of a Python function of Tensors, run on symbolic tensors."""
import inspect
import re

import numpy as np

from ..ir.errors import TraceError
from ..ir.graph import Graph
from ..ir.types import TensorType
from ..ir.verifier import maybe_verify
from .tensor import Tensor, data_of, symbolic


def example_type(example) -> TensorType:
    """The type an example argument stands for: a TensorType, a Tensor or array-like data."""
    if isinstance(example, TensorType):
        return example
    if isinstance(example, Tensor):
        return example._value.type
    return TensorType.of(np.asarray(example))


def _parameter_names(fn, count):
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"arg{i}" for i in range(count)]


def trace(fn, *examples, name=None) -> Graph:
    """Run `fn` on symbolic Tensors shaped like `examples` and return the graph it builds.

    Tensors the function captures (weights, constants) become `const` inputs whose data is in
    `graph.constants`."""
    names = _parameter_names(fn, len(examples))
    args = [symbolic(example_type(e), name=n,
                     requires_grad=isinstance(e, Tensor) and e.requires_grad)
            for e, n in zip(examples, names)]
    result = fn(*args)
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    for i, out in enumerate(outputs):
        if not isinstance(out, Tensor):
            raise TraceError(f"traced function returned {type(out).__name__} as output {i}; "
                             "only Tensors (or a tuple/list of them) can be outputs")
    name = name or re.sub(r"\W", "_", getattr(fn, "__name__", "traced")).strip("_") or "traced"
    graph = Graph.from_outputs([t._value for t in outputs], [a._value for a in args], name=name)
    for v in graph.inputs[len(args):]:
        data = data_of(v)
        if data is None:
            raise TraceError(f"@{name} uses a symbolic tensor {v.type} that is not one of its "
                             "inputs (a tensor from another trace?)")
        v.kind = "const"
        graph.constants[v] = data
    return maybe_verify(graph, "trace")
