"""Guards of a compiled specialisation: what its trace read that a later call could change.

A trace bakes in the objects it found (the modules, optimizers and tensors the step reaches, every
container on the way: `model.modules`, `opt.params`, `opt.u`, and the lengths of the lists and
dicts among them, and the other attributes of those modules and optimizers), the numpy arrays it
read from the step's globals and closure (as constants), the numbers and arrays read by the
functions it calls from its module and by the methods of the user's own module classes, and the
numbers it reads: as runtime inputs (they must stay numbers) or compiled in (they must keep their
values). `Guards.failure()` says which of those changed since the trace, so the caller recompiles
instead of running a stale program (as torch.compile's guards do). Other Python numbers are
guarded by the compiled function's key (compile.py `_settings`), state tensors' types by
`CapturedStep.changed_state`.
"""
import numpy as np

from ..errors import TraceError
from .capture import (STATEFUL, called_functions, globals_read, is_number, referenced_leaves, referenced_objects,
                      walk_state)
from ..frontend.tensor import Tensor

WATCHED_ELSEWHERE = STATEFUL + (Tensor, dict, list, tuple, bool, int, float, str, np.number)  # walked or keyed
ARRAY_LIMIT = 1 << 24  # bytes of one captured array: larger ones are refused (copied in on every trace)


class Guards:
    """What a trace of `fn` read: `roots` (None when the caller named them: fixed), the object
    graph under them, the captured arrays (name -> (array, copy)), the numbers it reads as runtime
    inputs (`runtime`: that they are still numbers) and those compiled in (`compiled`: their values);
    each number a capture.Hyperparameter or FunctionNumber."""

    def __init__(self, fn, roots, runtime, compiled, fixed):
        self.fn = fn
        self.roots = None if fixed else dict(roots)
        walked = walk_state(roots)
        self.edges = [(path, container, key, value) for value, path, container, key in walked]
        self.edges += [(f"{path}.{name}", vars(obj), name, value) for obj, path, _, _ in walked
                       if isinstance(obj, STATEFUL) for name, value in vars(obj).items()
                       if not isinstance(value, WATCHED_ELSEWHERE)]  # a module's function, activation, ...
        self.sizes = [(path, value, len(value)) for value, path, _, _ in walked if isinstance(value, (list, dict))]
        self.arrays = {name: (array, array.copy()) for name, array in captured_arrays(fn).items()}
        self.runtime = list(runtime)
        self.compiled = [(h, h.value()) for h in compiled]
        self.globals = [(module, name, value.copy() if isinstance(value, np.ndarray) else value)
                        for module, name, value in globals_read(called_functions(fn, [o for o, *_ in walked]))
                        if isinstance(value, np.ndarray) or _plain_number(value)]

    def failure(self):
        """Why the trace no longer holds (a sentence), or None; a TraceError when an optimizer's
        number is no longer a number (no trace could read it as one)."""
        if self.roots is not None:
            now = referenced_objects(self.fn)
            for name, obj in self.roots.items():
                if now.get(name) is not obj:
                    return f"{name} {_replaced(now.get(name), obj)}"
            for name in now.keys() - self.roots.keys():
                return f"{name} ({type(now[name]).__name__}) is new"
        for path, container, key, value in self.edges:
            try:
                current = container[key]
            except (KeyError, IndexError):
                return f"{path} was removed"
            if current is not value:
                return f"{path} {_replaced(current, value)}"
        for path, container, size in self.sizes:
            if len(container) != size:
                return f"{path} changed length from {size} to {len(container)}"
        values = referenced_leaves(self.fn) if self.arrays else {}
        for name, (array, copy) in self.arrays.items():
            current = values.get(name)
            if not isinstance(current, np.ndarray):
                return f"{name} {_replaced(current, array)}"
            if not _same(current, copy):  # a new binding with the old values still fits
                return (f"the array {name} was modified (the trace copied it in as a constant)"
                        if current is array else f"{name} was replaced by an array of other values")
        for h in self.runtime:
            if not is_number(h.value()):
                raise TraceError(f"{h.path} is now {h.value()!r}: the compiled step reads it as a number "
                                 "(a runtime input of its program), as it was when traced")
        for h, value in self.compiled:
            if h.value() != value:
                return f"{h.path} changed from {value!r} to {h.value()!r} (compiled in)"
        for module, name, value in self.globals:
            if not _unchanged(module.get(name), value):
                return f"{name}, a global of {module.get('__name__', 'a module')} read by code the step runs, changed (compiled in)"
        return None


def captured_arrays(fn) -> dict:
    """name -> each numpy array among the step's globals, closure, defaults and the attributes it
    reads of plain objects (referenced_leaves; a trace copies the ones it reads into the program).
    One larger than ARRAY_LIMIT is refused: checking it on every call would cost as much as
    passing it."""
    arrays = {name: value for name, value in referenced_leaves(fn).items()
              if isinstance(value, np.ndarray) and value.dtype.kind in "biuf"}
    for name, array in arrays.items():
        if array.nbytes > ARRAY_LIMIT:
            raise TraceError(f"{getattr(fn, '__name__', 'the step')} reads the numpy array {name} "
                             f"({array.nbytes >> 20} MB) from its globals or closure: a compiled step "
                             "would copy it in as a constant and compare it on every call; pass it "
                             "as an input, or hold it in a Tensor attribute of a module")
    return arrays


def _plain_number(value):
    return isinstance(value, (bool, int, float, str, np.number))


def _unchanged(now, then):
    """A number equal to, or an array with the bytes of, what the trace saw."""
    if isinstance(then, np.ndarray):
        return isinstance(now, np.ndarray) and _same(now, then)
    return type(now) is type(then) and now == then


def _same(a, b):
    """Equal shape, dtype and bytes (NaNs included)."""
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(
        np.ascontiguousarray(a).reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def _replaced(now, then):
    """How an object the trace read was replaced: '... by another Linear', '... by None'."""
    if now is None:
        return "was removed (it is None now)"
    kind = "another" if type(now) is type(then) else "a"
    return f"was replaced by {kind} {type(now).__name__} object"
