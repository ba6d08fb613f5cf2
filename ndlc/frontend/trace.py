"""`trace(fn, *examples)`: the Graph of a Python function of Tensors, run on symbolic tensors."""
import contextlib
import inspect
import re
from dataclasses import dataclass

import numpy as np

from ..errors import TraceError
from ..ir.graph import Builder, Graph, Value
from ..ir.types import TensorType
from ..ir.checks import maybe_verify
from ..passes.autodiff import append_gradients
from .context import ACTIVE
from .tensor import Tensor, apply, data_of, symbolic


class TraceContext:
    """What a running trace adds beyond the user's inputs: the random seed, a state input that
    every random op reads (each in its own stream) and that the program advances by one."""

    def __init__(self, state=()):
        self.seed = None
        self.streams = 0
        self.backward_roots = []  # values backward() was called on: the forward pass's ends
        self.state = {id(t) for t in state}  # tensors whose new values the program returns
        self.exchanges = []  # Exchange objects, in order: where the compiled step is cut
        self.index_bounds = []  # (value, n, error class, what): integers that must lie in [0, n)

    def bound(self, value, n, error, what):
        """`value` must lie in [0, n) at run time (labels of a one-hot, indices of a gather): the
        compiled step checks it where it is an input, as eager execution does (raising `error`)."""
        self.index_bounds.append((value, n, error, what))

    def exchanged(self, tensors, hook, differentiable=True) -> list:
        """Symbolic stand-ins for `tensors` after `hook` transforms them at run time (an
        all-reduce): the compiled step is cut there (passes/split.py, jit/exchange.py). If
        `hook.adjoint` is a hook, the exchange is differentiable: backward() sends the stand-ins'
        adjoints through it and goes on from `tensors` (an all-reduce sum's adjoint is one too)."""
        k = len(self.exchanges) + 1
        differentiable = differentiable and getattr(hook, "adjoint", None) is not None
        received = [Tensor._wrap(Value(t._value.type, name=f"exchange{k}.{i}"), differentiable and t.requires_grad)
                    for i, t in enumerate(tensors)]
        self.exchanges.append(Exchange([t._value for t in tensors], received, hook, differentiable))
        return received

    def differentiable_sent(self):
        """What the exchanges not yet differentiated sent: backward() reaches through them too."""
        return [v for e in self.exchanges if e.differentiable for v in e.sent]

    def backward_through_exchanges(self, graph, targets, grads):
        """`grads` (of the values `targets`) completed through this trace's differentiable
        exchanges, latest first: each sends its stand-ins' adjoints through `hook.adjoint` and
        adds the gradient of <sent, received adjoint> (appended to `graph`) to every target's."""
        grads = dict(zip(targets, grads))
        b = Builder(graph)
        for exchange in [e for e in self.exchanges if e.differentiable][::-1]:
            exchange.differentiable = False
            pairs = [(s, grads.get(r._value)) for s, r in zip(exchange.sent, exchange.received)]
            pairs = [(s, a) for s, a in pairs if a is not None]
            if not pairs:
                continue
            back = self.exchanged([Tensor._wrap(a) for _, a in pairs], exchange.hook.adjoint, differentiable=False)
            graph.inputs += [r._value for r in back]
            terms = [b.summation(b.multiply(s, r._value), axes=tuple(range(s.ndim))) for (s, _), r in zip(pairs, back)]
            total = terms[0]
            for term in terms[1:]:
                total = b.add(total, term)
            for target, g in zip(targets, append_gradients(graph, total, targets)):
                if g is not None:
                    grads[target] = g if grads.get(target) is None else b.add(grads[target], g)
        return [grads.get(t) for t in targets]

    def uniform(self, shape, dtype) -> Tensor:
        """U[0, 1) numbers for a random draw made while tracing."""
        if self.seed is None:
            self.seed = Value(TensorType((), "i64"), name="rng", kind="state")
        stream, self.streams = self.streams, self.streams + 1
        seed = Tensor._wrap(self.seed)
        return apply("random_uniform", seed, shape=tuple(shape), dtype=dtype, stream=stream)

    def inputs(self):
        """The inputs this trace added: the seed, if a random op used it, then the exchanged
        values' stand-ins."""
        return ([] if self.seed is None else [self.seed]) + [r._value for e in self.exchanges for r in e.received]

    def finish(self, graph):
        """Advance the seed by one per run of `graph` (which has it among its inputs)."""
        if self.seed is not None:
            graph.updates[self.seed] = Builder(graph, loc="random seed").add_scalar(self.seed, scalar=1.0)


@dataclass
class Exchange:
    """Values a trace sends to `hook` and the stand-ins (Tensors) it receives back; while
    `differentiable`, backward() has yet to carry adjoints through it."""
    sent: list
    received: list
    hook: object
    differentiable: bool


@contextlib.contextmanager
def tracing(state=()):
    context = TraceContext(state)
    ACTIVE.append(context)
    try:
        yield context
    finally:
        ACTIVE.pop()


def example_type(example) -> TensorType:
    """The type an example argument stands for: a TensorType, a Tensor or array-like data."""
    if isinstance(example, TensorType):
        return example
    if isinstance(example, Tensor):
        return example._value.type
    return TensorType.of(np.asarray(example))


def parameter_names(fn, count):
    """Names for a function's first `count` positional inputs (arg<i> where it has none)."""
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
    names = parameter_names(fn, len(examples))
    args = [symbolic(example_type(e), name=n,
                     requires_grad=isinstance(e, Tensor) and e.requires_grad)
            for e, n in zip(examples, names)]
    with tracing() as context:
        outputs = output_tensors(fn(*args))
    name = graph_name(name or fn)
    inputs = [a._value for a in args] + context.inputs()
    graph = Graph.from_outputs([t._value for t in outputs], inputs, name=name)
    context.finish(graph)
    capture_constants(graph, len(inputs))
    return maybe_verify(graph, "trace")


def output_tensors(result):
    """A traced function's result as a list of Tensors, or a TraceError saying what it was."""
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    for i, out in enumerate(outputs):
        if not isinstance(out, Tensor):
            raise TraceError(f"traced function returned {type(out).__name__} as output {i}; "
                             "only Tensors (or a tuple/list of them) can be outputs")
    return outputs


def graph_name(fn_or_name):
    """A graph name (an identifier) from a function's name or a given string."""
    name = fn_or_name if isinstance(fn_or_name, str) else getattr(fn_or_name, "__name__", "traced")
    return re.sub(r"\W", "_", name).strip("_") or "traced"


def capture_constants(graph, known):
    """Make each leaf after the first `known` inputs a const holding its eager data."""
    for v in graph.inputs[known:]:
        data = data_of(v)
        if data is None:
            raise TraceError(f"@{graph.name} uses a symbolic tensor {v.type} that is not one of its "
                             "inputs (a tensor from another trace?)")
        v.kind = "const"
        graph.constants[v] = data
