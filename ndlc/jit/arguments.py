"""The arguments of a compiled call, taken as Python and eager needle take them: bound to the step's
parameters by position or by name (a missing or extra one is the TypeError Python raises), and each
converted to what `ndl.Tensor(...)` would hold (floats as float32, ...), so that compiled and eager
runs of one step compute in the same dtypes."""
import inspect

import numpy as np

from ..errors import NdlcError, ShapeError
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

    def arrays(self, args, kwargs) -> list:
        """The bound arguments as the program's input arrays (as_input)."""
        return [as_input(value, self.name, i) for i, value in enumerate(self.bind(args, kwargs))]


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
