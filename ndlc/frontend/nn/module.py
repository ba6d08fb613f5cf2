"""needle's Module and Parameter, plus state_dict/load_state_dict and the containers.

A module's tensors are whatever its attributes hold, looked up recursively through modules,
lists, tuples and dicts: Parameters are trained, other Tensors (running statistics) are state."""
import numpy as np

from ...errors import StateDictError
from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module trains (returned by `parameters()`)."""


def _walk(value, prefix=""):
    """(name, tensor) for every Tensor under `value`, and (name, module) for every Module."""
    if isinstance(value, Tensor):
        yield prefix, value
    elif isinstance(value, Module):
        yield prefix, value
        yield from _walk(vars(value), prefix)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _walk(item, f"{prefix}.{index}" if prefix else str(index))


def origin_of(state):
    """' (in <file>[<key>])' for a state dict read by ndl.load, else ''."""
    origin = getattr(state, "origin", None)
    return f" (in {origin})" if origin else ""


def load_tensor(tensor, value, key, owner, state, whose="model"):
    """Set `tensor` (in place: optimizers and compiled steps keep their references) to `value`,
    entry `key` of the state dict `state` loaded into `owner` (`whose` tensor it is, for the
    error); the shapes must be equal."""
    if value is None:  # np.array(None, float32) would be a silent NaN
        raise StateDictError(f"{owner}.load_state_dict: {key} is None in the state dict, the {whose}'s "
                             f"is a tensor of shape {tensor.shape}{origin_of(state)}")
    source = value.numpy() if isinstance(value, Tensor) else value
    if np.iscomplexobj(source) and not np.issubdtype(np.dtype(tensor.dtype), np.complexfloating):
        raise StateDictError(f"{owner}.load_state_dict: {key} is complex in the state dict, the {whose}'s "
                             f"is a tensor of {tensor.dtype} (the imaginary parts would be lost){origin_of(state)}")
    try:
        array = np.array(source, dtype=tensor.dtype)
    except (TypeError, ValueError) as e:
        raise StateDictError(f"{owner}.load_state_dict: {key} is a {type(value).__name__} in the state dict, "
                             f"not a tensor of {tensor.dtype} ({e}){origin_of(state)}") from None
    if array.shape != tensor.shape:
        raise StateDictError(f"{owner}.load_state_dict: {key} has shape {array.shape} in the state "
                             f"dict, the {whose}'s is {tensor.shape}{origin_of(state)}")
    tensor.data = Tensor.make_const(array)


def _unique(pairs, kind):
    """The `kind` objects among `pairs`, each once (a shared tensor counts once), in walk order."""
    seen, result = set(), []
    for name, obj in pairs:
        if isinstance(obj, kind) and id(obj) not in seen:
            seen.add(id(obj))
            result.append((name, obj))
    return result


def check_sizes(module: str, **sizes) -> None:
    """Refuse a layer size that is not a positive integer, naming the module and the argument: a
    float, text, None, 0 or a negative size failed deep inside init or numpy, or made an empty layer."""
    for name, value in sizes.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{module}: {name} must be a positive integer, got {value!r}")


def is_switch(value) -> bool:
    """True or False (0 and 1 too): text such as 'no' is true to Python and would turn a switch on."""
    return isinstance(value, (bool, np.bool_)) or isinstance(value, (int, np.integer)) and value in (0, 1)


def check_flags(module: str, **flags) -> None:
    """Refuse a switch that is not True or False (None, off as in PyTorch, passes), naming the
    module and the argument."""
    for name, value in flags.items():
        if value is not None and not is_switch(value):
            raise ValueError(f"{module}: {name} must be True or False, got {value!r}")


def check_setting(module: str, name: str, value, low, high, high_included=False) -> None:
    """Refuse a module's number setting outside [low, high) ([low, high] with `high_included`) or
    that is no number, naming the module and the setting. Checked where the module is made and
    again where forward reads it, so a value set later (`bn.eps = ...`) is refused too, eagerly and
    when a compiled step traces it, instead of giving NaN or failing inside an op."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not number or not low <= value <= high or (value == high and not high_included):
        interval = f"[{low}, {high}{']' if high_included else ')'}"
        raise ValueError(f"{module}: {name} must be in {interval}, got {value!r}")


class Module:
    """needle's Module: `__call__` runs `forward`; `training` switches train/eval behaviour."""

    training = True

    def __init__(self):
        self.training = True

    def parameters(self):
        """Every Parameter reachable from this module's attributes (shared ones once)."""
        return [p for _, p in _unique(_walk(vars(self)), Parameter)]

    def _children(self):
        return [m for _, m in _unique(_walk(vars(self)), Module)]

    def all_modules(self):
        """This module and every module inside it, each once (PyTorch's `modules()`; needle's
        Sequential keeps its layers in an attribute of that name)."""
        return [self] + self._children()

    def train(self):
        self.training = True
        for module in self._children():
            module.training = True
        return self

    def eval(self):
        self.training = False
        for module in self._children():
            module.training = False
        return self

    def __call__(self, *args, **kwargs):
        """forward, numpy arguments made Tensors first (as a compiled module's call converts them),
        so every layer takes arrays alike (Conv's and BatchNorm's forward call Tensor methods)."""
        args = [Tensor(a, requires_grad=False) if isinstance(a, np.ndarray) else a for a in args]
        return self.forward(*args, **kwargs)

    def state_dict(self):
        """name -> a copy of every Tensor this module holds: parameters and running statistics."""
        return {name: Tensor.make_const(t.numpy().copy()) for name, t in _unique(_walk(vars(self)), Tensor)}

    def load_state_dict(self, state):
        """Set every tensor from `state` (Tensors or arrays, e.g. `ndl.load(path)`), in place; the
        keys and shapes must match exactly (StateDictError names the difference and the file)."""
        if not isinstance(state, dict):
            raise StateDictError(f"{type(self).__name__}.load_state_dict: the state dict is a "
                                 f"{type(state).__name__}, not a dict of tensors")
        own = dict(_unique(_walk(vars(self)), Tensor))
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise StateDictError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                                 f"unexpected keys {extra}{origin_of(state)}")
        for name, tensor in own.items():
            load_tensor(tensor, state[name], repr(name), type(self).__name__, state)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Identity(Module):
    def forward(self, x):
        return x


class Sequential(Module):
    """Applies `modules` in order (kept in `.modules`, as in needle)."""

    def __init__(self, *modules):
        super().__init__()
        self.modules = modules

    def forward(self, x):
        for module in self.modules:
            x = module(x)
        return x

    def __repr__(self):
        return f"Sequential({', '.join(map(repr, self.modules))})"


class Residual(Module):
    """fn(x) + x."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x

    def __repr__(self):
        return f"Residual({self.fn!r})"
