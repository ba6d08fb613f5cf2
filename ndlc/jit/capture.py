"""Capture of a step with persistent state: the tensors held by the modules and optimizers a
function uses (parameters, running statistics, optimizer slots) become `state` inputs of its
graph, and the values they hold when the function returns become the state updates. An optimizer's
numbers (lr, ...) are runtime inputs instead, also where one is a 0-d Tensor (read as its number).

The function runs once on symbolic tensors; every state tensor is rebound to a symbolic state
input for the duration and restored afterwards, so the user's objects are left as they were.
"""
import contextlib
import functools
import logging
import numbers
import time
import types
from dataclasses import dataclass, field

import numpy as np

from ..errors import TraceError
from ..ir.graph import Builder, Graph, Value
from ..ir.checks import maybe_verify
from ..ir.types import TensorType, numpy_dtype
from ..passes.autodiff import seconds_spent as autodiff_seconds
from ..frontend.nn.module import Module
from ..frontend.ops import invalid_index
from ..frontend.optim import Optimizer
from ..frontend.tensor import Tensor, data_of, symbolic
from .arguments import leaf_names, rebuilt, result_structure
from .reads import STATEFUL, referenced_leaves, referenced_objects, referenced_values
from ..frontend.trace import capture_constants, example_type, graph_name, parameter_names, tracing

log = logging.getLogger("ndlc.compile")  # NDLC_LOG=compile: each trace's time


@dataclass
class Slot:
    """A place that holds a state tensor: `container[key]` (an object's vars, a dict or a list)."""
    path: str
    container: object
    key: object

    def get(self):
        return self.container[self.key]

    def set(self, value):
        if isinstance(self.container, tuple):
            raise TraceError(f"{self.path} was replaced while tracing, but it lives in a tuple")
        self.container[self.key] = value


def walk_state(roots: dict) -> list:
    """(value, path, container, key) for every Tensor, Module, Optimizer, dict, list and tuple
    reached from `roots` through Modules, Optimizers and containers, each object once (a Tensor
    at every place that holds it). Modules come first, so a parameter is named by its place in
    the model."""
    rank = {Module: 0, Optimizer: 1}
    roots = dict(sorted(roots.items(), key=lambda kv: next(
        (r for kind, r in rank.items() if isinstance(kv[1], kind)), 2)))
    found, seen = [], set()
    stack = [(obj, name, roots, name) for name, obj in reversed(roots.items())]
    while stack:
        value, path, container, key = stack.pop()
        if isinstance(value, Tensor):
            found.append((value, path, container, key))
            continue
        if id(value) in seen or not isinstance(value, STATEFUL + (dict, list, tuple)):
            continue
        seen.add(id(value))
        found.append((value, path, container, key))
        items = vars(value) if isinstance(value, STATEFUL) else value
        pairs = items.items() if isinstance(items, dict) else enumerate(items)
        if isinstance(value, Optimizer):  # its numbers (a 0-d Tensor lr too) are no state
            pairs = [(k, item) for k, item in pairs if k not in value.hyperparameters or not is_number(number_of(item))]
        stack += [(item, f"{path}.{k}", items, k) for k, item in reversed(list(pairs))]
    return found


def find_slots(roots: dict) -> list:
    """Every Slot under `roots` (walk_state's Tensors)."""
    return [Slot(path, container, key) for value, path, container, key in walk_state(roots)
            if isinstance(value, Tensor)]


@dataclass
class Hyperparameter:
    """A number an optimizer holds (`owner.name`: lr, momentum, ...) that a compiled step reads
    as a 0-d runtime input of type `dtype`, so a new value does not recompile."""
    path: str
    owner: object
    name: str
    dtype: str

    def value(self):
        """What the attribute holds (the call entry's, a number; a 0-d Tensor's is number_of's)."""
        return getattr(self.owner, self.name, None)

    def array(self):
        return np.asarray(number_of(self.value()), numpy_dtype(self.dtype))


def number_of(value):
    """A setting as the number it stands for: a concrete 0-d real Tensor or numpy array (eager
    needle computes `lr * u` with either as with its number) as that number, anything else as it is."""
    if isinstance(value, Tensor) and value.shape == () and data_of(value._value) is not None:
        value = value.numpy()
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iuf":
        return value[()]
    return value


@dataclass
class FunctionNumber:
    """A float the step reads from its globals (`holder` is their dict) or its closure (`holder`
    is the cell), read as a 0-d float32 runtime input like a Hyperparameter."""
    path: str
    holder: object
    dtype: str = "f32"

    def value(self):
        if isinstance(self.holder, dict):
            return self.holder.get(self.path)
        return self.holder.cell_contents

    def array(self):
        return np.asarray(self.value(), numpy_dtype(self.dtype))


def find_function_numbers(fn) -> list:
    """A FunctionNumber for each float among the globals and closure cells `fn` reads, and a
    Hyperparameter for each float attribute it reads of a plain object it holds (`self.scale`):
    the referenced_leaves that is_runtime_number picks (not defaults; ints and bools stay compiled
    in: shapes, flags)."""
    target = getattr(fn, "__func__", fn)
    code = getattr(target, "__code__", None)
    if code is None:
        return []
    cells = dict(zip(code.co_freevars, target.__closure__ or ()))
    values, found = referenced_values(fn), []
    for path, value in referenced_leaves(fn).items():
        if not is_runtime_number(path, value):
            continue
        if "." in path:
            holder, name = path.rsplit(".", 1)
            found.append(Hyperparameter(path, values[holder], name, "f32"))
        else:
            found.append(FunctionNumber(path, cells.get(path, target.__globals__)))
    return found


def is_runtime_number(path, value):
    """Whether a value the step reads (referenced_leaves' `path`) is a runtime input: a float, not
    a default argument."""
    return _is_float(value) and not path.startswith("default")


def _is_float(value):
    return isinstance(value, (float, np.floating))


def with_inputs(fn, numbers, scalars):
    """`fn` reading each FunctionNumber's symbolic input instead of its float: a copy of the
    function with new closure cells and a copy of its globals (the user's stay untouched)."""
    target = getattr(fn, "__func__", fn)
    glob = dict(target.__globals__)
    glob.update({n.path: s for n, s in zip(numbers, scalars) if isinstance(n.holder, dict)})
    cells = {id(n.holder): s for n, s in zip(numbers, scalars) if not isinstance(n.holder, dict)}
    closure = tuple(types.CellType(cells[id(c)]) if id(c) in cells else c for c in target.__closure__ or ())
    copy = types.FunctionType(target.__code__, glob, target.__name__, target.__defaults__, closure or None)
    copy.__kwdefaults__ = target.__kwdefaults__
    return types.MethodType(copy, fn.__self__) if hasattr(fn, "__func__") else copy


def find_hyperparameters(roots: dict) -> list:
    """The Hyperparameters of the Optimizers under `roots` whose value is a real number now;
    float64 where all the optimizer's parameters are, else float32 (the parameters' precision)."""
    found = []
    for value, path, _, _ in walk_state(roots):
        if isinstance(value, Optimizer):
            dtype = "f64" if value.params and all(p._value.dtype == "f64" for p in value.params) else "f32"
            found += [Hyperparameter(f"{path}.{name}", value, name, dtype) for name in value.hyperparameters
                      if is_number(number_of(getattr(value, name, None)))]
    return found


def is_number(value):
    """A real Python or numpy number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


@dataclass
class CapturedStep:
    """A step's graph and the tensors its state inputs stand for, in input order; `forward` is
    the graph of what the step computed before it called backward() (None if it did not). Inputs:
    the batch, then one per hyperparameter, then the state."""
    graph: Graph
    state: list = field(default_factory=list)   # Tensor objects, one per state input
    num_inputs: int = 0                         # batch and hyperparameter inputs come first
    forward: Graph = None
    returns_sequence: bool = False              # fn returned a tuple/list rather than a Tensor
    results: tuple = None                       # its structure (arguments.structure_of), the top a tuple
    exchanges: list = field(default_factory=list)  # trace.Exchange: where the step is cut, in order
    hyperparameters: list = field(default_factory=list)  # Hyperparameter or FunctionNumber, one per runtime number
    index_bounds: list = field(default_factory=list)  # (input position, n, error class, what)
    computed_bounds: list = field(default_factory=list)  # (n, error class, what), one count output each
    gradients: list = field(default_factory=list)  # the state tensors whose .grad the step set
    seconds: dict = field(default_factory=dict)  # 'trace' (backward() left out) and 'autodiff' times

    @functools.cached_property
    def state_inputs(self):
        return self.graph.inputs[self.num_inputs:self.num_inputs + len(self.state)]

    def changed_state(self):
        """Why the program no longer fits its state: the first state tensor whose type changed
        since the capture (`.data` assignment replaces the shape too), or None."""
        for t, value in zip(self.state, self.state_inputs):
            if t._value.type is not value.type and t._value.type != value.type:
                return f"{value.name} became {t._value.type} (compiled for {value.type})"
        return None

    def state_arrays(self):
        """The state tensors' current data, as the program's state arguments."""
        return [t.numpy() for t in self.state]

    def check_indices(self, batch):
        """Raise as eager execution would where a batch input that must index [0, n) (labels,
        gather indices) holds a value outside it; compiled, it would select nothing."""
        for position, n, error, what in self.index_bounds:
            bad = invalid_index(batch[position], n)
            if bad is not None:
                raise error(f"{self.graph.name}: input {position} ({self.graph.inputs[position].name}) "
                            f"holds {bad[0]}, {bad[1]} for its {what}")

    def result(self, outputs):
        """The step's result from its output Tensors: one, or tuples (and lists) of them as it returned."""
        return rebuilt(self.results, iter(outputs))

    @property
    def flat_results(self) -> bool:
        """Whether the step returned one Tensor or a tuple or list of Tensors (no nesting)."""
        return self.results is None or not any(self.results[1])

    @property
    def returned(self) -> int:
        """How many of the graph's outputs are the step's results (the counts of computed_bounds follow)."""
        return len(self.graph.outputs) - len(self.computed_bounds)

    def check_computed(self, results):
        """Raise as eager execution would where an index computed inside the step was outside its
        bounds: `results` (the program's, arrays or Tensors) hold a count of them for each."""
        for i, (n, error, what) in enumerate(self.computed_bounds):
            count = results[self.returned + i]
            count = int(count.numpy() if isinstance(count, Tensor) else count)
            if count:
                raise error(f"{self.graph.name}: {count} of the indices it computed for its {what} "
                            f"are outside [0, {n}) or not integers (the step's state is left as it was)")

    def inputs(self, batch):
        """The program's arguments but the state for one run on `batch`: it and the
        hyperparameters' current values (reading no state tensor, so none is fetched)."""
        return list(batch) + [h.array() for h in self.hyperparameters]

    def arguments(self, batch):
        """The program's arguments for one run on `batch`: its inputs, then the state."""
        return self.inputs(batch) + self.state_arrays()

    def write_back(self, new_state: dict, current=None):
        """Store each state input's new value (input Value -> array) into its tensor, in place
        where the tensor's storage allows it, so views of it (`.data`) see the update. A value
        that is the tensor's own array (`current`: the state arrays the run was given, read
        again if None) was written there by the program already."""
        current = self.state_arrays() if current is None else current
        for t, value, array in zip(self.state, self.state_inputs, current):
            new = new_state.get(value)
            if new is None or new is array:  # not updated, or written in place
                continue
            if array.flags.writeable and array.flags.c_contiguous:
                np.copyto(array, new)
            else:
                t._bind(Tensor.make_const(np.array(new))._value, t.requires_grad)

    def drop_gradients(self):
        """After a run, no gradient on the tensors whose .grad the step set: the program keeps
        none (they feed the updates inside it), and one left by an earlier eager step is stale."""
        for t in self.gradients:
            t.grad = None

    def run(self, execute, *batch):
        """One step: `execute(arrays) -> (outputs, {state input: new array})` runs the graph."""
        outputs, new_state = execute(self.arguments(batch))
        self.write_back(new_state)
        return outputs


def capture(fn, examples, roots=None, name=None, hyperparameters=True, numbers=True, structure=None) -> CapturedStep:
    """Trace `fn(*examples)` with the state it reaches (or that `roots` holds) as state inputs
    and, with `hyperparameters`, its optimizers' numbers (find_hyperparameters), with `numbers`
    the floats of its own globals and closure (find_function_numbers), as runtime inputs.
    `structure` (arguments.structure_of, one per argument): `examples` are the leaves of tuples
    and lists `fn` is given as such."""
    start, differentiating = time.perf_counter(), autodiff_seconds()
    roots = referenced_objects(fn) if roots is None else roots
    slots = find_slots(roots)
    holders = [slot.get() for slot in slots]
    tensors = list({id(t): t for t in holders}.values())
    names = parameter_names(fn, len(examples) if structure is None else len(structure))
    if structure is not None:
        names = [leaf for n, part in zip(names, structure) for leaf in leaf_names(n, part)]
    batch = [symbolic(example_type(e), name=n) for e, n in zip(examples, names)]
    runtime = find_hyperparameters(roots) if hyperparameters else []
    own = find_function_numbers(fn) if numbers else []
    scalars = [symbolic(TensorType((), h.dtype), name=h.path) for h in runtime + own]
    attributes = [(h, s) for h, s in zip(runtime + own, scalars) if isinstance(h, Hyperparameter)]
    cells = [(h, s) for h, s in zip(own, scalars[len(runtime):]) if isinstance(h, FunctionNumber)]
    traced = with_inputs(fn, *zip(*cells)) if cells else fn
    with _bound_to_state(slots, holders, tensors) as state_values, \
            _bound_to_inputs(*zip(*attributes)) if attributes else contextlib.nullcontext(), \
            tracing(tensors) as context:
        result = traced(*(batch if structure is None else rebuilt((tuple, structure), iter(batch))))
        outputs = []
        results = result_structure(result, outputs)
        gradients = [t for t in tensors if t.grad is not None]  # _bound_to_state cleared them all
        finals = [(slot, holder, slot.get()) for slot, holder in zip(slots, holders)]
        finals = [(slot, holder, now._value if isinstance(now, Tensor) else now) for slot, holder, now in finals]
    updates = _updates(finals, state_values)
    batch += scalars
    inputs = [b._value for b in batch] + [state_values[id(t)] for t in tensors]
    if context.seed is not None:  # the program's random seed is state too, drawn from numpy's
        tensors.append(Tensor.make_const(np.int64(np.random.randint(0, 2**62))))
    inputs += context.inputs()
    name = graph_name(name or fn)
    forward = None
    if context.backward_roots:
        forward = Graph.from_outputs(context.backward_roots, inputs, name=name)
        capture_constants(forward, len(inputs))
    sent = [v for e in context.exchanges for v in e.sent]  # what only an exchange reads
    graph = Graph.from_outputs([t._value for t in outputs] + list(updates.values()) + sent, inputs, name=name)
    graph.outputs = [t._value for t in outputs]
    graph.updates = updates
    context.finish(graph)
    computed = _computed_bounds(graph, context.index_bounds, batch)
    capture_constants(graph, len(inputs))
    differentiating = autodiff_seconds() - differentiating
    seconds = {"trace": time.perf_counter() - start - differentiating, "autodiff": differentiating}
    log.info("@%s: traced in %.3f s (%d nodes): trace %.3f, autodiff %.3f", name, sum(seconds.values()),
             len(graph.nodes), seconds["trace"], seconds["autodiff"])
    return CapturedStep(maybe_verify(graph, "capture"), tensors, len(batch), forward,
                        isinstance(result, (tuple, list)), results and (tuple, results[1]), context.exchanges,
                        hyperparameters=runtime + own,
                        index_bounds=_input_bounds(context.index_bounds, batch), computed_bounds=computed,
                        seconds=seconds, gradients=gradients)


def _input_bounds(bounds, batch):
    """(input position, n, error, what) for each index bound (TraceContext.bound) on a batch input."""
    positions = {id(t._value): i for i, t in enumerate(batch)}
    return [(positions[id(v)], n, error, what) for v, n, error, what in bounds if id(v) in positions]


def _computed_bounds(graph, bounds, batch) -> list:
    """For each index bound on a value the step computes (a gather's indices, labels), a count
    of its elements outside [0, n) or fractional appended to `graph.outputs`, and every state
    update kept at its old value unless all counts are 0: compiled, such an index would select a
    zero row, and the caller (check_computed) raises where eager execution does. The bounds'
    (n, error, what), in output order."""
    inputs, computed = {id(t._value) for t in batch}, {id(node.result) for node in graph.nodes}
    bounds = [(v, n, error, what) for v, n, error, what in bounds
              if id(v) in computed and id(v) not in inputs and v.type.size and v.dtype != "bool"]
    if not bounds:
        return []
    b = Builder(graph, loc="index bounds")
    counts = []
    for v, n, _, _ in bounds:
        low, high = b.constant_like(v, 0), b.constant_like(v, n)
        inside = b.multiply(b.cast(b.greater_equal(v, low), dtype="i64"), b.cast(b.less(v, high), dtype="i64"))
        if v.dtype.startswith("f"):  # an index inside the bounds must also be an integer
            held = b.where(b.cast(inside, dtype="bool"), v, low)  # no NaN, Inf or huge value cast
            whole = b.cast(b.equal(b.cast(b.cast(held, dtype="i64"), dtype=v.dtype), held), dtype="i64")
            inside = b.multiply(inside, whole)
        outside = b.add_scalar(b.negate(inside), scalar=1.0)
        counts.append(b.summation(outside, axes=tuple(range(v.ndim))))
    total = counts[0]
    for count in counts[1:]:
        total = b.add(total, count)
    ok = b.equal(total, b.constant_like(total, 0))
    for state, new in graph.updates.items():
        kept = ok if new.shape == () else b.broadcast_to(ok, shape=new.shape)
        graph.updates[state] = b.where(kept, new, state)
    graph.outputs = graph.outputs + counts
    return [(n, error, what) for _, n, error, what in bounds]


@contextlib.contextmanager
def _bound_to_inputs(runtime, scalars):
    """Each Hyperparameter's attribute holds its symbolic input meanwhile; put back afterwards,
    also where a setattr fails (a frozen dataclass) after others were bound."""
    saved = []
    try:
        for h, scalar in zip(runtime, scalars):
            value = getattr(h.owner, h.name)
            setattr(h.owner, h.name, scalar)
            saved.append((h, value))
        yield
    finally:
        for h, value in saved:
            setattr(h.owner, h.name, value)


@contextlib.contextmanager
def _bound_to_state(slots, holders, tensors):
    """Rebind each state tensor to a symbolic state input (yielding id(tensor) -> input Value);
    afterwards, put back every slot's tensor and every tensor's data and grad."""
    paths = {}
    for slot, t in zip(slots, holders):
        paths.setdefault(id(t), slot.path)
    saved = [(t, t._value, t.grad, t.requires_grad) for t in tensors]
    state_values = {}
    for t in tensors:
        state_values[id(t)] = Value(t._value.type, name=paths[id(t)].replace("self.", ""), kind="state")
        t._bind(state_values[id(t)], t.requires_grad)
        t.grad = None
    try:
        yield state_values
    finally:
        for slot, holder in zip(slots, holders):
            if slot.get() is not holder:
                slot.set(holder)
        for t, value, grad, requires_grad in saved:
            t._bind(value, requires_grad)
            t.grad = grad


def _updates(finals, state_values):
    """State input -> its new value, from (slot, tensor before, value after) triples."""
    updates = {}
    for slot, holder, new in finals:
        if not isinstance(new, Value):
            raise TraceError(f"{slot.path} held a Tensor before the step and a "
                             f"{type(new).__name__} after it")
        state = state_values[id(holder)]
        if new is not state and updates.setdefault(state, new) is not new:
            raise TraceError(f"{slot.path} is updated to two different values in one step")
    return updates
