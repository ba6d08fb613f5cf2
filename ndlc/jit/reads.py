"""What a step's code reads besides its arguments: its bound object, closure cells, defaults, the
globals its code names (and those of the module functions it calls), and the modules, optimizers,
tensors and numbers among them. Capture finds the state there; guards watch it between calls."""
import builtins
import dis
import functools
import types

import numpy as np

from ..frontend.nn.module import Module
from ..frontend.optim import Optimizer
from ..frontend.tensor import Tensor

STATEFUL = (Module, Optimizer)
SETTINGS = (bool, int, float, str)  # the types of the plain values a trace bakes in
ARRAY_LIMIT = 1 << 24  # bytes of one captured array: larger ones are refused (copied in on every trace)


def referenced_values(fn) -> dict:
    """name -> each value `fn` can reach: its bound object, closure cells, defaults and the
    globals its code (and nested code) names."""
    if isinstance(fn, STATEFUL):
        return {type(fn).__name__.lower(): fn}
    found = {"self": fn.__self__} if hasattr(fn, "__self__") else {}
    target = getattr(fn, "__func__", fn)
    code = getattr(target, "__code__", None)
    if code is None:
        return found
    for name, cell in zip(code.co_freevars, target.__closure__ or ()):
        found[name] = cell.cell_contents
    for i, value in enumerate(target.__defaults__ or ()):
        found[f"default{i}"] = value
    module = target.__globals__
    for name in ordered_names(code):
        if name in module:
            found.setdefault(name, module[name])
    return found


def globals_read(functions) -> list:
    """(globals dict, name, value) for each global that `functions`, and the functions of their
    modules that they call (transitively), read: what a trace bakes in without the step's own
    code naming it (a helper's constant, a global a module's forward reads)."""
    found = []
    for function in functions_run(functions):
        module = function.__globals__
        found += [(module, name, module[name]) for name in sorted(global_names(function.__code__) & module.keys())
                  if not _same_module_function(module[name], module)]
    return found


def functions_run(functions) -> list:
    """`functions` and the functions of their modules they call by name, transitively, each once."""
    pending, seen, found = list(functions), set(), []
    while pending:
        function = pending.pop()
        if function.__code__ in seen:
            continue
        seen.add(function.__code__)
        found.append(function)
        module = function.__globals__
        pending += [v for name in sorted(global_names(function.__code__) & module.keys())
                    if _same_module_function(v := module[name], module)]
    return found


def _same_module_function(value, module):
    return isinstance(value, types.FunctionType) and value.__globals__ is module


def bindings_read(functions) -> list:
    """(dict, name, value) for what a trace of `functions` (functions_run) reads by name beyond
    numbers and arrays of their globals: each function it calls by a global name (the same object;
    rebinding a helper changes the trace), each builtin it calls that no global shadows (None:
    absent), and each number, string, small array or function it reads as an attribute of a module
    among its globals (`config.scale`, `mylib.helper`): the trace baked each in."""
    found, builtin = [], vars(builtins)
    for function in functions_run(functions):
        module = function.__globals__
        for name, attribute in global_loads(function.__code__):
            value = module.get(name)
            if attribute is None and isinstance(value, types.FunctionType):
                found.append((module, name, value))
            elif attribute is None and value is None and callable(builtin.get(name)):
                found.append((module, name, None))
            elif attribute is not None and isinstance(value, types.ModuleType):
                read = vars(value).get(attribute)
                if isinstance(read, SETTINGS + (types.FunctionType,)) or (
                        isinstance(read, np.ndarray) and read.nbytes <= ARRAY_LIMIT):
                    found.append((vars(value), attribute, read.copy() if isinstance(read, np.ndarray) else read))
    return list({(id(d), name): (d, name, value) for d, name, value in found}.values())


@functools.lru_cache(maxsize=1024)
def global_loads(code) -> tuple:
    """(name, attribute) for each global `code` and the code nested in it load, `attribute` the one
    read of it right after (`config.scale`), or None."""
    found, pending = [], [code]
    while pending:
        current = pending.pop()
        pending += [c for c in current.co_consts if isinstance(c, types.CodeType)]
        instructions = list(dis.get_instructions(current))
        for instruction, after in zip(instructions, instructions[1:] + [None]):
            if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                attribute = after.argval if after is not None and after.opname in ("LOAD_ATTR", "LOAD_METHOD") else None
                found.append((instruction.argval, attribute))
    return tuple(dict.fromkeys(found))


def called_functions(fn, objects) -> list:
    """The functions a trace of `fn` runs besides `fn`: those of its module it names, and the
    methods of the user's classes (not ndlc's) among `objects` (its modules and optimizers)."""
    target = getattr(fn, "__func__", fn)
    module = getattr(target, "__globals__", None)
    found = [v for v in referenced_values(fn).values() if isinstance(v, types.FunctionType) and v.__globals__ is module]
    classes = {klass for obj in objects for klass in type(obj).__mro__
               if klass is not object and not klass.__module__.startswith("ndlc.")}
    return found + [v for klass in classes for v in vars(klass).values() if isinstance(v, types.FunctionType)]


def referenced_objects(fn, values=None) -> dict:
    """name -> Module, Optimizer or Tensor that `fn` can reach (`values`: referenced_values(fn),
    read now if None); for a plain object among those (a trainer holding `self.model`), those
    among its attributes."""
    kept = {}
    for name, value in (referenced_values(fn) if values is None else values).items():
        if isinstance(value, STATEFUL + (Tensor,)) or holds_state(value):
            kept[name] = value
        elif is_plain_object(value):
            kept.update({f"{name}.{k}": v for k, v in vars(value).items()
                         if isinstance(v, STATEFUL + (Tensor,))})
    return kept


CONTAINER_LIMIT = 256  # items of a list, tuple or dict looked into (a dataset's list is not state)


def holds_state(value, depth=3) -> bool:
    """Whether `value` is a list, tuple or dict (of at most CONTAINER_LIMIT items, `depth` deep)
    holding a Module, Optimizer or Tensor: `layers[0](x)` and `weights["w"]` read state through it,
    which a trace must not bake in as constants."""
    if not isinstance(value, (list, tuple, dict)) or len(value) > CONTAINER_LIMIT or not depth:
        return False
    items = value.values() if isinstance(value, dict) else value
    return any(isinstance(v, STATEFUL + (Tensor,)) or holds_state(v, depth - 1) for v in items)


def referenced_leaves(fn, values=None) -> dict:
    """referenced_values (`values`, read now if None), and for a plain object among them (a
    trainer's `self`) each attribute whose name `fn`'s code mentions, as 'name.attribute' (what
    `self.scale` reads)."""
    values = referenced_values(fn) if values is None else values
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    names = global_names(code) if code is not None else frozenset()
    leaves = dict(values)
    for name, value in values.items():
        if is_plain_object(value) and not isinstance(value, STATEFUL + (Tensor,)):
            leaves.update({f"{name}.{k}": v for k, v in vars(value).items() if k in names})
    return leaves


def referenced_numbers(fn, values=None) -> dict:
    """name -> the Python numbers, booleans and strings `fn` reads (referenced_leaves): a trace
    bakes them in, or reads its floats as runtime inputs (find_function_numbers)."""
    return {name: value for name, value in referenced_leaves(fn, values).items()
            if isinstance(value, (bool, int, float, str))}


def is_plain_object(value):
    """An instance of a user class (not a module, class, function or builtin value)."""
    return hasattr(value, "__dict__") and not isinstance(
        value, (types.ModuleType, type, types.FunctionType, types.MethodType, types.BuiltinFunctionType))


@functools.lru_cache(maxsize=1024)
def ordered_names(code) -> tuple:
    """The names `code` and the code nested in it read, each once, in the order the capture
    meets them (its runtime numbers become inputs in this order); remembered per code object,
    as every call of a compiled function asks."""
    names, pending = {}, [code]
    while pending:
        current = pending.pop()
        names.update(dict.fromkeys(current.co_names))
        pending += [c for c in current.co_consts if isinstance(c, types.CodeType)]
    return tuple(names)


@functools.lru_cache(maxsize=1024)
def global_names(code) -> frozenset:
    """The global (and attribute) names `code` and the code nested in it read; asked on every
    call of a compiled function, so remembered per code object."""
    names, pending = set(), [code]
    while pending:
        current = pending.pop()
        names.update(current.co_names)
        pending += [c for c in current.co_consts if isinstance(c, types.CodeType)]
    return frozenset(names)
