"""Guards of a compiled specialisation: what its trace read that a later call could change.

A trace bakes in the objects it found (the modules, optimizers and tensors the step reaches, every
container on the way: `model.modules`, `opt.params`, `opt.u`, and the lengths of the lists and
dicts among them, and the other attributes of those modules and optimizers), the numpy arrays it
read from the step's globals and closure (as constants; one the step only tests with `is None` is
held by identity instead), the `requires_grad` flag of every tensor it reached (it decides which
gradients the step computes and so which parameters an optimizer updates), the numbers and arrays
read by the functions it calls from its module and by the methods of the user's own module
classes, the functions all of those call by a global name (the same objects; the builtins they call
not shadowed by a new global), the numbers, arrays and functions they read as attributes of a
module (`config.scale`), and the numbers it reads: as runtime inputs (they must stay numbers) or
compiled in (they must keep their values). `Guards.failure()` says which of those changed since the trace, so the
caller recompiles instead of running a stale program (as torch.compile's guards do). Other Python
numbers are guarded by the compiled function's key (compile.py `_settings`), state tensors' types
by `CapturedStep.changed_state`.
"""
import dis
import types
from operator import is_

import numpy as np

from ..errors import TraceError
from .capture import is_number, number_of, walk_state
from .reads import (ARRAY_LIMIT, CONTAINER_LIMIT, STATEFUL, bindings_read, called_functions, globals_read,
                    referenced_leaves, referenced_objects)
from ..frontend.tensor import Tensor

WATCHED_ELSEWHERE = STATEFUL + (Tensor, dict, list, tuple, bool, int, float, str, np.number)  # walked or keyed
# Instructions that read a name, by the kind of name they read (referenced_leaves' names), and those
# that, right after such a read, test only what it is: `x is None`, `x is not None`, `if x is None:`.
NAME_READS = {"cell": ("LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_GLOBAL", "LOAD_NAME"),
              "attribute": ("LOAD_ATTR", "LOAD_METHOD"), "default": ("LOAD_FAST",)}
NONE_TESTS = ("POP_JUMP_FORWARD_IF_NONE", "POP_JUMP_FORWARD_IF_NOT_NONE", "POP_JUMP_BACKWARD_IF_NONE",
              "POP_JUMP_BACKWARD_IF_NOT_NONE", "POP_JUMP_IF_NONE", "POP_JUMP_IF_NOT_NONE")


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
        self.flags = [(path, value, value.requires_grad) for value, path, _, _ in walked if isinstance(value, Tensor)]
        self.arrays = {name: (array, array.copy()) for name, array in captured_arrays(fn).items()}
        self.identities = identity_tested_arrays(fn)
        # the lists, tuples and dicts the step reaches, and those under its modules holding plain values
        self.leaf_containers = {name: _Watched(value) for name, value in referenced_leaves(fn).items()
                                if isinstance(value, (list, tuple, dict))}
        self.containers = [(path, _Watched(value)) for value, path, _, _ in walked
                           if isinstance(value, (list, dict)) and _holds_plain(value)]
        self.runtime = list(runtime)
        self.compiled = [(h, number_of(h.value())) for h in compiled]
        called = called_functions(fn, [o for o, *_ in walked])
        self.globals = [(module, name, value.copy() if isinstance(value, np.ndarray) else value)
                        for module, name, value in globals_read(called)
                        if isinstance(value, np.ndarray) or _plain_number(value)]
        target = getattr(fn, "__func__", fn)
        own = [target] if isinstance(target, types.FunctionType) else []
        self.globals += bindings_read(own + called)

    def failure(self, values=None):
        """Why the trace no longer holds (a sentence), or None; a TraceError when an optimizer's
        number is no longer a number (no trace could read it as one). `values`: what the step
        reaches now (reads.referenced_values), read here if None."""
        if self.roots is not None:
            now = referenced_objects(self.fn, values)
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
        for path, tensor, requires_grad in self.flags:
            if tensor.requires_grad != requires_grad:
                return (f"{path}.requires_grad changed from {requires_grad} to {tensor.requires_grad} (it decides "
                        "which gradients the step computes)")
        values = referenced_leaves(self.fn, values) if self.arrays or self.identities or self.leaf_containers else {}
        changed = self.containers_changed(values)
        if changed:
            return changed
        for name, array in self.identities.items():
            if values.get(name) is not array:
                return f"{name} {_replaced(values.get(name), array)}; the step tests it with `is None`"
        for name, (array, copy) in self.arrays.items():
            current = values.get(name)
            if not isinstance(current, np.ndarray):
                return f"{name} {_replaced(current, array)}"
            if not same_bytes(current, copy):  # a new binding with the old values still fits
                return (f"the array {name} was modified (the trace copied it in as a constant)"
                        if current is array else f"{name} was replaced by an array of other values")
        for h in self.runtime:
            if not is_number(number_of(h.value())):
                raise TraceError(f"{h.path} is now {h.value()!r}: the compiled step reads it as a number "
                                 "(a runtime input of its program), as it was when traced")
        for h, value in self.compiled:
            if number_of(h.value()) != value:
                return f"{h.path} changed from {value!r} to {h.value()!r} (compiled in)"
        for module, name, value in self.globals:
            if not unchanged(module.get(name), value):
                return (f"{name}, a global of {module.get('__name__', 'a module')} read by code the step runs, "
                        "changed (compiled in)")
        return None


    def containers_changed(self, leaves):
        """How a list, tuple or dict the trace read items of changed, or None: one the step reaches
        (`leaves`: name -> what is bound there now, referenced_leaves), or one under its modules
        holding numbers (compiled in)."""
        for name, watched in self.leaf_containers.items():
            if not watched.unchanged(leaves.get(name)):
                return f"{name} changed (a list, tuple or dict whose items the trace read)"
        return next((f"{path} changed (its numbers were compiled in)" for path, watched in self.containers
                     if not watched.unchanged(watched.obj)), None)


class _Same:
    """An object a snapshot holds by identity: equal only to a _Same of the same object."""
    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Same) and other.obj is self.obj


def snapshot(value, depth=3):
    """What a trace can read of `value`: a list's, tuple's or dict's type and items (of at most
    CONTAINER_LIMIT, `depth` deep), numbers and strings by value, other objects by identity."""
    if isinstance(value, (list, tuple, dict)) and len(value) <= CONTAINER_LIMIT and depth:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return type(value), tuple((k, snapshot(v, depth - 1)) for k, v in items)
    if value is None or _plain_number(value):
        return type(value), value
    return _Same(value)


def still(value, then, depth=3) -> bool:
    """Whether `snapshot(value) == then`, walked without building a snapshot (building one cost
    ~20 us a call for a few items): `_Watched`'s answer where its quick check by identity fails."""
    if isinstance(then, _Same):
        return value is then.obj and not (isinstance(value, (list, tuple, dict)) and depth
                                          and len(value) <= CONTAINER_LIMIT)
    kind, held = then
    if type(value) is not kind:
        return False
    if not issubclass(kind, (list, tuple, dict)):
        return value is held or value == held
    if len(value) != len(held):
        return False
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return all(key == was and still(item, snap, depth - 1) for (key, item), (was, snap) in zip(items, held))


class _Watched:
    """A container a trace read (`obj`), its snapshot, and the lists and dicts within it with the
    items each held (`_parts`): a call whose containers hold the same objects is told so by
    identity at C speed (3-4 nodes walked by `still` cost ~6 us a call); any other is judged by
    the snapshot, numbers by value."""
    __slots__ = ("obj", "then", "parts")

    def __init__(self, obj):
        self.obj, self.then, self.parts = obj, snapshot(obj), _parts(obj)

    def unchanged(self, value) -> bool:
        if value is self.obj and same_parts(self.parts):
            return True
        if not still(value, self.then):
            return False
        self.obj, self.parts = value, _parts(value)  # the same reading by other objects: quick again
        return True


def _parts(value, depth=3, found=None) -> list:
    """(container, its keys, its items) for each list and dict within `value` as `snapshot` walks
    it; (container, None, None) for one over CONTAINER_LIMIT, held by identity while it stays so."""
    found = [] if found is None else found
    if isinstance(value, (list, tuple, dict)) and depth:
        if len(value) > CONTAINER_LIMIT:
            found.append((value, None, None))
            return found
        items = list(value.values()) if isinstance(value, dict) else list(value)
        if not isinstance(value, tuple):
            found.append((value, list(value) if isinstance(value, dict) else None, items))
        for item in items:
            _parts(item, depth - 1, found)
    return found


def same_parts(parts) -> bool:
    """Whether every container of `_parts` holds the same keys and items (by identity) as then."""
    for container, keys, items in parts:
        if items is None:
            if len(container) <= CONTAINER_LIMIT:
                return False
        elif len(container) != len(items):
            return False
        elif keys is None:
            if not all(map(is_, container, items)):
                return False
        elif not (all(map(is_, container, keys)) and all(map(is_, container.values(), items))):
            return False
    return True


def _holds_plain(container):
    items = container.values() if isinstance(container, dict) else container
    return len(container) <= CONTAINER_LIMIT and any(v is None or _plain_number(v) for v in items)


def captured_arrays(fn) -> dict:
    """name -> each numpy array among the step's globals, closure, defaults and the attributes it
    reads of plain objects (referenced_leaves; a trace copies the ones it reads into the program),
    but those it only tests with `is None`. One larger than ARRAY_LIMIT is refused: checking it on
    every call would cost as much as passing it."""
    arrays = {name: value for name, value in referenced_leaves(fn).items()
              if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and not only_tested_for_none(fn, name)}
    for name, array in arrays.items():
        if array.nbytes > ARRAY_LIMIT:
            raise TraceError(f"{getattr(fn, '__name__', 'the step')} reads the numpy array {name} "
                             f"({array.nbytes >> 20} MB) from its globals or closure: a compiled step "
                             "would copy it in as a constant and compare it on every call; pass it "
                             "as an input, or hold it in a Tensor attribute of a module")
    return arrays


def identity_tested_arrays(fn) -> dict:
    """name -> each numpy array the step reads only to test `is None` (a trace reads its identity,
    not its data, so a guard holds the object instead of a copy)."""
    return {name: value for name, value in referenced_leaves(fn).items()
            if isinstance(value, np.ndarray) and only_tested_for_none(fn, name)}


def only_tested_for_none(fn, name) -> bool:
    """Whether `fn`'s code (nested code included) reads `name` (a referenced_leaves name: a global or
    closure cell, 'default<i>', 'object.attribute') and each read is an `is None` or `is not None`
    test. A read the bytecode does not show plainly counts as a read of the data."""
    target = getattr(fn, "__func__", fn)
    code = getattr(target, "__code__", None)
    if code is None:
        return False
    if name.startswith("default"):
        kind, argval = "default", code.co_varnames[code.co_argcount - len(target.__defaults__) + int(name[7:])]
    else:
        kind, argval = ("attribute", name.rsplit(".", 1)[1]) if "." in name else ("cell", name)
    reads, pending = 0, [code]
    while pending:
        current = pending.pop()
        pending += [c for c in current.co_consts if isinstance(c, types.CodeType) and kind != "default"]
        instructions = list(dis.get_instructions(current))
        for i, instruction in enumerate(instructions):
            if instruction.opname not in NAME_READS[kind] or instruction.argval != argval:
                continue
            reads += 1
            if not _tests_none(instructions, i):
                return False
    return reads > 0


def _tests_none(instructions, i):
    """Whether the value instructions[i] reads is only compared with None by identity."""
    after = instructions[i + 1:i + 3]
    if after and after[0].opname in NONE_TESTS:
        return True
    if i and _is_none(instructions[i - 1]) and after and after[0].opname == "IS_OP":
        return True
    return len(after) == 2 and _is_none(after[0]) and after[1].opname == "IS_OP"


def _is_none(instruction):
    return instruction.opname == "LOAD_CONST" and instruction.argval is None


def _plain_number(value):
    return isinstance(value, (bool, int, float, str, np.number))


def unchanged(now, then):
    """The same object as, a number equal to, or an array with the bytes of, what the trace saw."""
    if isinstance(then, np.ndarray):
        return isinstance(now, np.ndarray) and same_bytes(now, then)
    return now is then or (type(now) is type(then) and now == then)


def same_bytes(a, b):
    """Equal shape, dtype and bytes (NaNs included)."""
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(
        np.ascontiguousarray(a).reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def _replaced(now, then):
    """How an object the trace read was replaced: '... by another Linear', '... by None'."""
    if now is None:
        return "was removed (it is None now)"
    kind = "another" if type(now) is type(then) else "a"
    return f"was replaced by {kind} {type(now).__name__} object"
