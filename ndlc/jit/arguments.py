"""The arguments of a compiled call, taken as Python and eager needle take them: bound to the step's
parameters by position or by name (a missing or extra one is the TypeError Python raises), and each
converted to what `ndl.Tensor(...)` would hold (floats as float32, ...), so that compiled and eager
runs of one step compute in the same dtypes. A tuple or list holding tensors or arrays (an LSTM's
`(h0, c0)`) stays one: its leaves are the program's inputs, its structure part of the key."""
import inspect

import numpy as np

from ..errors import NdlcError, ShapeError, TraceError
from ..ir.types import TensorType
from ..frontend.tensor import Tensor

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class Parameters:
    """The parameters of the function a compiled step traces (`fn`, named `name` in errors); a
    trace passes its tensors positionally, so `bind` puts keyword arguments in their places."""

    def __init__(self, fn, name):
        self.name = name
        try:
            self.signature = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin or C callable: positional arguments only
            self.signature = None
        params = list(self.signature.parameters.values()) if self.signature else []
        varargs = bool(params) and params[-1].kind == inspect.Parameter.VAR_POSITIONAL
        required = params[:-1] if varargs else params
        # a signature of required positional parameters only (and perhaps *args): a call giving
        # that many by position (or more, into *args) binds as it is (Signature.bind costs about
        # 7 us of a step's call); `plain` is that count, `more` whether *args takes the rest
        plain = all(p.kind in POSITIONAL and p.default is p.empty for p in required)
        self.plain, self.more = (len(required) if plain else None), varargs

    def bind(self, args, kwargs) -> list:
        """The arguments in parameter order (a skipped defaulted parameter before one given by name
        takes its default), or Python's TypeError for a missing, extra or repeated argument."""
        if not kwargs and self.plain is not None and (len(args) == self.plain or (self.more and len(args) > self.plain)):
            return list(args)
        if self.signature is None:
            if kwargs:
                raise TypeError(f"{self.name}() got keyword arguments {sorted(kwargs)}, but its "
                                "signature cannot be read to place them: pass them by position")
            return list(args)
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self.name}() {e}") from None
        ordered, skipped = [], []
        for p in self.signature.parameters.values():
            if p.kind in POSITIONAL and p.name in bound.arguments:
                ordered += skipped + [bound.arguments[p.name]]
                skipped = []
            elif p.kind in POSITIONAL:
                skipped.append(p.default)
            elif p.kind == p.VAR_POSITIONAL:
                ordered += list(bound.arguments.get(p.name, ()))
            elif p.name in bound.arguments:
                raise TypeError(f"{self.name}() was given {p.name}=..., a keyword-only argument: a compiled "
                                "step passes its tensors by position (make it a positional parameter)")
        return ordered

    def arrays(self, args, kwargs):
        """The bound arguments as the program's input arrays (as_input, the leaves of structured
        ones in order) and their structure (structure_of: None where no argument has one)."""
        values = self.bind(args, kwargs)
        if not any(map(is_structured, values)):
            return [as_input(value, self.name, i) for i, value in enumerate(values)], None
        leaves = []
        structure = tuple([structure_of(value, leaves) for value in values])
        return [as_input(value, self.name, i) for i, value in enumerate(leaves)], structure


def is_structured(value) -> bool:
    """A tuple or list holding a Tensor or numpy array at some depth: eager needle passes it to
    the step as it is (not as one stacked tensor), so a compiled call keeps it."""
    return isinstance(value, (tuple, list)) and any(
        isinstance(item, (Tensor, np.ndarray)) or is_structured(item) for item in value)


def structure_of(value, leaves: list, inside=False):
    """`value`'s structure, a hashable key: None for a leaf (appended to `leaves`), else (its
    type, its items' structures). Within a structured argument (`inside`) every tuple and list
    is one, also an empty one; its other items are leaves, converted as arguments are."""
    if not (is_structured(value) or inside and isinstance(value, (tuple, list))):
        leaves.append(value)
        return None
    return type(value), tuple([structure_of(item, leaves, True) for item in value])


def rebuilt(structure, leaves):
    """The value of `structure` with its leaves taken in order from the iterator `leaves`."""
    if structure is None:
        return next(leaves)
    kind, items = structure
    parts = [rebuilt(item, leaves) for item in items]
    return kind(*parts) if hasattr(kind, "_fields") else kind(parts)  # a namedtuple takes its fields


def leaf_names(name, structure) -> list:
    """Input names for the leaves of an argument `name` of `structure`: name_0_1 for item 1 of item 0."""
    if structure is None:
        return [name]
    return [leaf for i, part in enumerate(structure[1]) for leaf in leaf_names(f"{name}_{i}", part)]


def result_structure(result, outputs: list):
    """The structure of the step's result (as structure_of's), its Tensors appended to
    `outputs`, or a TraceError naming the first that is not one."""
    if isinstance(result, Tensor):
        outputs.append(result)
        return None
    if isinstance(result, (tuple, list)):
        return type(result), tuple(result_structure(item, outputs) for item in result)
    raise TraceError(f"traced function returned {type(result).__name__} as output {len(outputs)}; "
                     "only Tensors (or tuples and lists of them, nested) can be outputs")


def as_input(value, name, index) -> np.ndarray:
    """What `ndl.Tensor(value)` would hold, copied only where converted: a Tensor's own data; other
    data as numpy reads it, with floats (float16, float64, Python floats) as float32, needle's
    default, and integers and booleans as they are."""
    if isinstance(value, Tensor):
        return value.numpy()
    try:
        array = np.asarray(value)
    except ValueError as e:  # a ragged list
        raise ShapeError(f"{name}: input {index}: {e}") from None
    if array.dtype.kind == "f" and array.dtype != np.float32:
        array = array.astype(np.float32)
    elif not array.dtype.isnative:  # big-endian integers (read from a file): the same values
        array = array.astype(array.dtype.newbyteorder("="))
    try:
        TensorType.of(array)
    except NdlcError as e:
        raise ShapeError(f"{name}: input {index}: {e}") from None
    return array
