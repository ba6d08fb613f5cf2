"""The call entry of a compiled function: for the specialisation it ran last, one Python function
generated from that specialisation (as collections.namedtuple generates its methods) that checks
exactly what a later call could have changed and then runs the program with its arguments found
without look-ups. A call whose arguments, reached objects, settings, guarded numbers and arrays or
state types differ in any way gets MISS and takes the full path (compile.py), which decides,
recompiling where needed: the entry only ever says "nothing changed", with checks as strict as the
full path's or stricter (an object replaced by an equal one is a miss here, a run there).

What the full path reads on every call, and what the entry checks instead:
- the arguments (arguments.py): as many positional Tensors or arrays, each of the same shape and
  dtype (the dtype object itself: needle's float conversion then changes nothing);
- what the step reaches (reads.referenced_values): each closure cell, default and global it names
  is the same object, but for its floats read as runtime inputs, which must stay floats; a plain
  object among them (a trainer's `self`) keeps its attributes, those the step names or that are
  modules, optimizers or tensors the same objects, the others none of those;
- every module's and optimizer's attributes (compile.py's settings, guards.py's edges): as many,
  plain values equal and of the same type, runtime numbers still numbers, the rest the same objects;
- the lists and dicts under them keep their lengths and items, the tensors their requires_grad;
- guards.py's captured arrays keep their bytes, the globals of the functions the step calls
  their values, the functions called by name and the module attributes read theirs (reads.bindings_read);
- each state tensor keeps its type (capture.py's changed_state); its current array is passed.
"""
import sys
import weakref
from operator import is_

import numpy as np

from ..frontend import tensor as tensor_module
from ..frontend.tensor import Tensor
from ..runtime import program as program_module
from ..runtime.generated import SourceWriter
from ..runtime.steady import Slow, result_names, write_steady
from .capture import Hyperparameter
from .guards import same_bytes, same_parts, unchanged
from .reads import CONTAINER_LIMIT, SETTINGS, STATEFUL, global_names, is_plain_object, ordered_names, referenced_leaves

MISS = object()  # returned by an entry whose specialisation does not fit the call
ABSENT = object()  # a global the step names that did not exist when the entry was made
FLOATS = frozenset({float, np.float32, np.float64})  # runtime floats (capture.is_runtime_number)
NUMBERS = frozenset({float, int, np.float32, np.float64, np.int32, np.int64})  # capture.is_number's common types
OBJECTS = STATEFUL + (Tensor,)  # what reads.referenced_objects collects
INLINE = 16  # items of a watched list or dict the entry compares one by one (more: guards.same_parts)


def build_entry(compiled, specialisation, count):
    """The entry function `entry(args, kwargs)` of `specialisation` (a CPU Specialisation the full
    path just ran, so everything it checks holds now) for calls with `count` positional arguments:
    the call's result, or MISS."""
    writer = _Writer()
    captured = specialisation.captured
    runtime = {(id(h.owner), h.name) for h in captured.hyperparameters if isinstance(h, Hyperparameter)}
    runtime_paths = {h.path for h in captured.hyperparameters}
    writer.line(f"if kwargs or len(args) != {count} or TENSORS._ever_resident:")
    writer.line("    return MISS")
    start = len(writer.lines)
    writer.line("if not LIVE: return MISS  # the compiled function has replaced this entry since it was read")
    writer.line("try:")
    writer.indent = 2
    batch = _arguments(writer, specialisation.program.input_types[:count])
    _reached(writer, compiled.fn, runtime_paths)
    dicts = _stateful(writer, compiled.attribute_settings, runtime)
    _guards(writer, specialisation.guards, dicts, referenced_leaves(compiled.fn))
    state = _state(writer, captured)
    writer.indent = 1
    writer.line("except Exception:  # what the step reaches no longer has the shape it had")
    writer.line("    return MISS")
    if captured.index_bounds:
        writer.line(f"{writer.const(captured)}.check_indices([{', '.join(batch)}])")
    numbers = []
    for h in captured.hyperparameters:  # each written into an array of its own, passed every call
        array = np.zeros((), specialisation.program.input_types[len(batch) + len(numbers)].np_dtype)
        numbers.append(writer.const(array))
        writer.line(f"{numbers[-1]}[()] = {writer.const(h)}.value()")
    _steady(writer, specialisation.program, batch + numbers + state, len(batch))
    results = result_names(specialisation.program)  # the names the run's results are in
    if captured.computed_bounds:
        writer.line(f"{writer.const(captured)}.check_computed([{', '.join(results)}])")
    _write_back(writer, captured, results[specialisation.num_outputs:], state)
    if captured.gradients:  # CapturedStep.drop_gradients
        writer.line(f"for t in {writer.const(captured.gradients)}: t.grad = None")
    types = [writer.const(value.type) for value in captured.graph.outputs[:captured.returned]]  # the step's results'
    wrapped = [f"LEAF(Tensor, {r}, {t}, False)" for r, t in zip(results, types)]
    sequence = "".join(w + ", " for w in wrapped)  # `()` for no outputs, `(x, )` for one
    writer.line(f"return ({sequence})" if captured.returns_sequence else f"return {wrapped[0]}")
    _locked(writer, start, compiled.lock)
    return writer.function(f"entry_{captured.graph.name}", "args, kwargs")


def retire(entry):
    """Make `entry` miss every call from now on: its compiled function has replaced it, and a call
    that read it before taking the lock must take the full path (entries hold no reference to
    their compiled function, so dropping one frees its programs without the cycle collector)."""
    entry.__globals__["LIVE"] = False


def _locked(writer, start, lock):
    """The lines from `start` on run holding `lock` (the compiled function's): an entry takes it
    itself, with its `acquire` and `release` bound once (0.1 us less than `with` in __call__)."""
    body = ["    " + line for line in writer.lines[start:]]
    writer.names["LIVE"] = True
    writer.lines[start:] = ([f"    {writer.const(lock.acquire)}()", "    try:"] + body +
                            ["    finally:", f"        {writer.const(lock.release)}()"])


class _Writer(SourceWriter):
    """The entry's source lines and the objects its names stand for."""

    def __init__(self):
        super().__init__({"MISS": MISS, "ABSENT": ABSENT, "TENSORS": tensor_module, "Tensor": Tensor,
                          "ndarray": np.ndarray, "ref": weakref.ref,
                          # a tensor's data: `DATA(ref(value))` (tensor.py's _DATA is keyed by weak
                          # references; ref(value) is the value's own, made once)
                          "DATA": tensor_module._DATA.get, "LEAF": tensor_module.leaf, "FLOATS": FLOATS,
                          "NUMBERS": NUMBERS, "OBJECTS": OBJECTS, "same": same_bytes, "unchanged": unchanged,
                          "same_parts": same_parts, "is_": is_})
        self.temporaries = 0

    def temporary(self) -> str:
        self.temporaries += 1
        return f"t{self.temporaries}"

    def miss_if(self, condition):
        self.line(f"if {condition}: return MISS")


def _steady(writer, program, inputs, checked):
    """The program's steady run written in (runtime/steady.py), its full run where that raises
    Slow: no lock taken, as the call holds the compiled function's, which is the program's
    (Specialisation), and the arguments' shapes and dtypes (the first `checked`) known."""
    writer.names.update(rc=sys.getrefcount, CALLS=program_module._native_calls, program=program, Slow=Slow)
    writer.line("try:")
    writer.indent = 2
    write_steady(writer, program, inputs, range(checked), program_module._native_calls)
    writer.indent = 1
    writer.line("except Slow:")
    arrays = "".join(a + ", " for a in inputs)
    writer.line(f"    [{', '.join(result_names(program))}] = program._run(({arrays}), True, {{}})")


def _arguments(writer, types) -> list:
    """Each argument as its array (a Tensor's own data, an array as it is) of the type it had."""
    names = []
    for i, t in enumerate(types):
        a = f"a{i}"
        writer.line(f"{a} = args[{i}]")
        writer.line(f"if isinstance({a}, Tensor): {a} = DATA(ref({a}._value))")
        writer.line(f"elif {a}.__class__ is not ndarray: return MISS")
        writer.miss_if(f"{a}.shape != {t.shape!r} or {a}.dtype is not {writer.const(t.np_dtype)}")
        names.append(a)
    return names


def _reached(writer, fn, runtime_paths):
    """What reads.referenced_values finds: the bound object, closure cells, defaults and the
    globals the step's code names, as they are now."""
    if isinstance(fn, STATEFUL):
        return
    target = getattr(fn, "__func__", fn)
    code = getattr(target, "__code__", None)
    names = global_names(code) if code is not None else frozenset()
    found = set()
    if hasattr(fn, "__self__"):
        found.add("self")
        _value(writer, "self", writer.const(fn.__self__), fn.__self__, runtime_paths, names, bound=True)
    if code is None:
        return
    for name, cell in zip(code.co_freevars, target.__closure__ or ()):
        found.add(name)
        _value(writer, name, f"{writer.const(cell)}.cell_contents", cell.cell_contents, runtime_paths, names)
    if target.__defaults__:
        defaults = target.__defaults__
        writer.miss_if(f"{writer.const(target)}.__defaults__ is not {writer.const(defaults)}")
        for i, value in enumerate(defaults):
            found.add(f"default{i}")
            _value(writer, f"default{i}", writer.const(value), value, runtime_paths, names, bound=True)
    module = writer.const(target.__globals__)
    for name in ordered_names(code):
        if name in found:
            continue
        value = target.__globals__.get(name, ABSENT)
        _value(writer, name, f"{module}.get({name!r}, ABSENT)", value, runtime_paths, names)


def _value(writer, path, expression, value, runtime_paths, names, bound=False):
    """Check one value the step reaches (`bound`: held by something that cannot change)."""
    if path in runtime_paths:
        writer.miss_if(f"({expression}).__class__ not in FLOATS")
        return
    if not bound:
        writer.miss_if(f"({expression}) is not {writer.const(value)}")
    if is_plain_object(value) and not isinstance(value, OBJECTS):
        _plain_object(writer, path, value, runtime_paths, names)


def _plain_object(writer, path, obj, runtime_paths, names):
    """A plain object's attributes as reads.referenced_leaves and referenced_objects see them."""
    d = writer.temporary()
    writer.line(f"{d} = {writer.const(obj)}.__dict__")
    writer.miss_if(f"len({d}) != {len(vars(obj))}")
    for key, value in vars(obj).items():
        item = f"{d}[{key!r}]"
        if f"{path}.{key}" in runtime_paths:
            writer.miss_if(f"{item}.__class__ not in FLOATS")
        elif key in names or isinstance(value, OBJECTS):
            writer.miss_if(f"{item} is not {writer.const(value)}")
        else:
            writer.miss_if(f"isinstance({item}, OBJECTS)")


def _stateful(writer, attribute_settings, runtime) -> set:
    """Every attribute of each module and optimizer: settings equal, runtime numbers numbers, the
    rest the same objects. The ids of their attribute dicts (whose items this has checked)."""
    dicts = set()
    for _, obj, numbers in attribute_settings:
        d = writer.temporary()
        dicts.add(id(vars(obj)))
        writer.line(f"{d} = {writer.const(obj)}.__dict__")
        writer.miss_if(f"len({d}) != {len(vars(obj))}")
        for key, value in vars(obj).items():
            item = f"{d}[{key!r}]"
            if key in numbers and (id(obj), key) in runtime:
                writer.miss_if(f"{item}.__class__ not in NUMBERS")
            elif isinstance(value, SETTINGS) and key not in numbers:
                t = writer.temporary()
                v = writer.const(value)  # the same object first: no type or value compared (a NaN is itself)
                writer.miss_if(f"({t} := {item}) is not {v} and ({t}.__class__ is not {writer.const(type(value))} "
                               f"or {t} != {v})")
            else:
                writer.miss_if(f"{item} is not {writer.const(value)}")
    return dicts


def _guards(writer, guards, dicts, leaves):
    """guards.Guards' containers, flags, captured arrays (`leaves`: what the step reaches now, whose
    identity the entry checked) and globals of the functions called (the modules' and optimizers'
    own attributes, `dicts`, checked already; tuples cannot change)."""
    for _, container, size in guards.sizes:
        writer.miss_if(f"len({writer.const(container)}) != {size}")
    for _, container, key, value in guards.edges:
        if id(container) not in dicts and not isinstance(container, tuple):
            writer.miss_if(f"{writer.const(container)}[{key!r}] is not {writer.const(value)}")
    seen = set()
    for _, tensor, _ in guards.flags:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            writer.miss_if(f"{writer.const(tensor)}.requires_grad is not {writer.const(tensor.requires_grad)}")
    for name, (_, copy) in guards.arrays.items():
        writer.miss_if(f"not same({writer.const(leaves[name])}, {writer.const(copy)})")
    for module, name, value in guards.globals:
        writer.miss_if(f"not unchanged({writer.const(module)}.get({name!r}), {writer.const(value)})")
    if guards.leaf_containers or guards.containers:  # their items (the objects bound are checked above)
        bound = {name: leaves.get(name) for name in guards.leaf_containers}
        watched = [w for name, w in guards.leaf_containers.items() if w.obj is bound[name]]
        full = f"{writer.const(guards)}.containers_changed({writer.const(bound)})"
        if len(watched) < len(guards.leaf_containers):  # one bound now is not the one watched
            writer.miss_if(full)
            return
        watched += [w for _, w in guards.containers]
        quick = " and ".join(_parts_held(writer, part) for w in watched for part in w.parts)
        if quick:  # else no list or dict within them: nothing can change
            writer.miss_if(f"not ({quick}) and {full}")


def _parts_held(writer, part) -> str:
    """guards.same_parts for one (container, keys, items) part, as an expression: the items of a
    list or dict of at most INLINE compared one by one (the loop over parts cost ~1.4 us a call).
    False where it does not hold is no miss: guards.containers_changed then judges in full."""
    container, keys, items = part
    c = writer.const(container)
    if items is None:
        return f"len({c}) > {CONTAINER_LIMIT}"
    if len(items) > INLINE or type(container) not in (list, dict):
        return f"same_parts(({writer.const(part)},))"
    if keys is None:
        return " and ".join([f"len({c}) == {len(items)}"] + [f"{c}[{i}] is {writer.const(item)}"
                                                              for i, item in enumerate(items)])
    return " and ".join([f"len({c}) == {len(items)}", f"all(map(is_, {c}, {writer.const(keys)}))"] +
                        [f"{c}[{writer.const(key)}] is {writer.const(item)}" for key, item in zip(keys, items)])


def _state(writer, captured) -> list:
    """Each state tensor's current array, its type checked (CapturedStep.changed_state)."""
    names = []
    for i, (t, value) in enumerate(zip(captured.state, captured.state_inputs)):
        v, s = writer.temporary(), f"s{i}"
        writer.line(f"{v} = {writer.const(t)}._value")
        writer.miss_if(f"{v}.type is not {writer.const(value.type)} and {v}.type != {writer.const(value.type)}")
        writer.line(f"{s} = DATA(ref({v}))")
        writer.miss_if(f"{s} is None")
        names.append(s)
    return names


def _write_back(writer, captured, updated, state):
    """The state updates not written in place (`updated`: the names of the new values, in the
    order of the graph's updates) stored into their tensors (CapturedStep.write_back)."""
    positions = {value: i for i, value in enumerate(captured.state_inputs)}
    moved = [f"{new} is not {state[positions[value]]}" for new, value in zip(updated, captured.graph.updates)]
    if moved:
        updates = writer.const(list(captured.graph.updates))
        writer.line(f"if {' or '.join(moved)}:")
        writer.line(f"    {writer.const(captured)}.write_back(dict(zip({updates}, [{', '.join(updated)}])), "
                    f"[{', '.join(state)}])")
