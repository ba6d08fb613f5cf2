"""needle's Tensor on top of the graph IR.

Every op on Tensors becomes an IR node (through the registry, so shape errors name the user's
source line). When all operands hold data the node is evaluated at once with the reference
interpreter (eager mode); otherwise the result is symbolic (tracing). `backward()` cuts a graph
from the recorded nodes and runs the autodiff pass, so eager and compiled gradients are one
mechanism, and gradients are Tensors that record too.
"""
import functools
import os
import sys
import weakref
from weakref import ref

import numpy as np

from ..backend_ndarray import BackendDevice as Device, NDArray, cpu, cuda, device_named
from ..errors import NdlcError, TraceError
from ..ir.graph import Builder, Graph, Value
from ..ir.interpreter import evaluate_node
from ..ir.registry import get_op
from ..ir.types import TensorType, dtype_name, is_float, numpy_dtype
from ..ir.checks import maybe_verify
from ..passes.autodiff import append_gradients
from .context import active_context

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Data of eager values: {weak reference to the Value: its array}, and the Tensor that wraps each
# value (needle's .grad on every node): {weak reference to the Value: weak reference to the Tensor}.
# Plain dicts whose keys' callback is the dict's own `pop`, so that a value's entries go when it
# dies, as in a WeakKeyDictionary, without a Python frame on either side: a compiled call wraps
# each output in a new Tensor, and the weakref module's dictionaries were a third of a small call.
# A look-up keys by `ref(value)` (equal to the stored key while the value lives); nothing iterates
# them, and nothing deletes from them but the callbacks.
_DATA: "dict[weakref.ref, np.ndarray]" = {}
# Values whose current data lives in a compiled GPU program's memory: Value -> (owner, fetch), where
# fetch() copies it into the Value's host array; reading the tensor on the host fetches it first.
_RESIDENT: "weakref.WeakKeyDictionary[Value, tuple]" = weakref.WeakKeyDictionary()
_ever_resident = False  # whether any value was marked resident: until then a read looks up nothing
_TENSORS: "dict[weakref.ref, weakref.ref]" = {}
_CPU = cpu()  # the device of tensors made by ops and compiled calls (devices compare by name)
_DATA_POP, _TENSORS_POP = _DATA.pop, _TENSORS.pop  # the records' callbacks, bound once
_new = object.__new__


def _set_data(value: Value, data):
    """`value`'s eager data is `data` (an existing entry keeps its key, so its one callback)."""
    _DATA[ref(value, _DATA_POP)] = data


def _tensor(cls, value: Value, requires_grad: bool):
    """A new `cls` standing for `value`, recorded as its Tensor (`Tensor._bind`'s record, in
    this one frame: every op's result and every compiled call's output is made here)."""
    tensor = _new(cls)
    tensor.device, tensor.grad, tensor._value, tensor.requires_grad = _CPU, None, value, requires_grad
    _TENSORS[ref(value, _TENSORS_POP)] = ref(tensor)
    return tensor


def leaf(cls, data: np.ndarray, type_: TensorType, requires_grad: bool):
    """A new leaf `cls` holding the ndarray `data` of type `type_` as is (`Tensor.make_const`
    without its conversions, which a compiled call's entry calls for each output): `Value(type_)`
    and `_tensor` written out, one frame where they made three (0.1 us of a tiny call's 2)."""
    value = _new(Value)
    value.type, value.node, value.name, value.kind = type_, None, None, "input"
    _DATA[ref(value, _DATA_POP)] = data
    tensor = _new(cls)
    tensor.device, tensor.grad, tensor._value, tensor.requires_grad = _CPU, None, value, requires_grad
    _TENSORS[ref(value, _TENSORS_POP)] = ref(tensor)
    return tensor


def _tensor_wrapping(value: Value):
    """The live Tensor last bound to `value`, or None."""
    tensor = _TENSORS.get(ref(value))
    return None if tensor is None else tensor()


def default_device():
    """Where Tensors are made unless told: the host CPU (needle's NDArray default, `nd.default_device()`,
    is its numpy device)."""
    return cpu()


def as_device(device) -> Device:
    """A Tensor's device from a device, its name, or None (the default)."""
    return default_device() if device is None else device_named(device)


def user_location() -> str:
    """'file:line' of the innermost frame outside the ndlc package: the user's source line."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return ""
    return f"{_display_path(frame.f_code.co_filename)}:{frame.f_lineno}"


@functools.lru_cache(maxsize=256)
def _display_path(path):
    """`path` relative to the working directory when it is below it (cached: called per op)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _as_array(array, dtype):
    """A private numpy copy for a new Tensor: floats default to float32 (needle's), ints keep theirs."""
    if dtype is not None:
        return np.array(array, dtype=numpy_dtype(dtype))
    data = np.array(array)  # a copy: compiled steps update tensors in place, never user arrays
    if data.dtype.kind == "f":
        data = data.astype(np.float32, copy=False)
    elif not data.dtype.isnative:  # big-endian integers (read from a file): the same values
        data = data.astype(data.dtype.newbyteorder("="))
    dtype_name(data.dtype)  # refuse unsupported dtypes here, not deep inside an op
    return data


class Tensor:
    """A needle Tensor: `Tensor(array, device=None, dtype=None, requires_grad=True)`. Its operators
    (+, @, <, ...) and op methods (sum, reshape, exp, ...) are bound by frontend/ops.py."""

    __array_ufunc__ = None  # numpy defers to our reflected operators: ndarray @ Tensor is a Tensor

    def __init__(self, array, *, device=None, dtype=None, requires_grad=True):
        if isinstance(array, Tensor):
            array = array.numpy()
        if isinstance(array, NDArray) and device is None:
            device = array.device
        data = _as_array(array, dtype)
        self.grad = None
        self._bind(Value(TensorType.of(data)), requires_grad)
        _set_data(self._value, data)
        self.device = as_device(device)

    def _bind(self, value, requires_grad):
        """This tensor stands for `value` (its .grad, set by backward, stays)."""
        self._value = value
        self.requires_grad = bool(requires_grad)
        _TENSORS[ref(value, _TENSORS_POP)] = ref(self)

    @classmethod
    def _wrap(cls, value, requires_grad=False):
        return _tensor(cls, value, bool(requires_grad))

    @classmethod
    def make_const(cls, data, requires_grad=False, type_=None):
        """A leaf Tensor holding `data` as is (no dtype defaulting): a value, its data and its
        Tensor recorded, what every eager op and .numpy() reads. `type_`: data's TensorType where
        the caller knows it (a compiled call's outputs), not worked out again from the array."""
        if type(data) is not np.ndarray:
            data = np.asarray(data)
        return leaf(cls, data, TensorType.of(data) if type_ is None else type_, bool(requires_grad))

    # ---- data -----------------------------------------------------------------------------
    @property
    def is_symbolic(self) -> bool:
        return ref(self._value) not in _DATA

    def numpy(self) -> np.ndarray:
        if _ever_resident:  # a GPU program may hold the current value
            fetch_resident(self._value)
        data = _DATA.get(ref(self._value))  # one dictionary look-up: a compiled call reads every state tensor
        if data is None:
            raise TraceError(f"cannot read the value of a symbolic {self._value.type} tensor while "
                             f"tracing (at {user_location()}): a traced function must not depend on "
                             "tensor values (no .numpy(), float(), bool() or `if` on a tensor)")
        return data

    @property
    def cached_data(self) -> NDArray:
        """The data as needle's NDArray, sharing this tensor's memory: writing through it changes
        the tensor (needle's numerical-gradient checks perturb inputs this way)."""
        data = self.numpy()
        if not (data.flags.c_contiguous and data.flags.writeable):
            data = np.array(data, order="C")  # an equal, private, writeable copy becomes the data
            _set_data(self._value, data)
        return NDArray.from_storage(data, device=self.device)

    def realize_cached_data(self) -> NDArray:
        return self.cached_data

    @property
    def data(self):
        """The same values without history (needle's `.data`)."""
        return self.detach()

    @data.setter
    def data(self, value):
        """Replace the values, and the shape with them (needle's); the dtype must stay."""
        if not isinstance(value, Tensor):
            value = Tensor(value, dtype=self.dtype)
        if value.dtype != self.dtype:
            raise NdlcError(f"cannot assign {value._value.type} data to a {self._value.type} tensor: "
                            f"the dtype must stay {self.dtype} (cast the value first)")
        context = active_context()
        if context is not None and id(self) not in context.state:
            raise TraceError(f"a {self._value.type} tensor that is not the traced program's state is "
                             f"assigned at {user_location()}: its update would be lost. Compile with "
                             "ndl.compile(fn, state=[model, optimizer, ...]) naming what it updates")
        if context is not None and value.shape != self.shape:
            raise TraceError(f"a traced step assigns {value._value.type} data to its "
                             f"{self._value.type} state at {user_location()}: a compiled program's "
                             "state keeps its shape (assign the new shape outside the step)")
        detached = value.detach()
        self._bind(detached._value, self.requires_grad)

    def detach(self) -> "Tensor":
        if self.is_symbolic:
            return apply("stop_gradient", self)._with_grad(False)
        return Tensor.make_const(self.numpy())

    def _with_grad(self, requires_grad):
        self.requires_grad = requires_grad
        return self

    @property
    def shape(self):
        return self._value.shape

    @property
    def dtype(self) -> str:
        return self._value.type.np_dtype.name

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return self._value.type.size

    @property
    def op(self):
        """The op that produced this tensor, as needle sees it (None for a leaf)."""
        node = self._value.node
        return None if node is None else TensorOp(node)

    @property
    def inputs(self):
        node = self._value.node
        if node is None:
            return []
        return [t if (t := _tensor_wrapping(v)) is not None else Tensor._wrap(v) for v in node.operands]

    def is_leaf(self):
        return self._value.node is None

    def __repr__(self):
        if self.is_symbolic:
            return f"ndlc.Tensor(<symbolic {self._value.type}>)"
        return f"ndlc.Tensor({self.numpy()!r})"

    def __str__(self):
        return repr(self) if self.is_symbolic else str(self.numpy())

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def _scalar(self, kind):
        if self.is_symbolic:
            self.numpy()
        return kind(self.numpy())

    def __bool__(self):
        return self._scalar(bool)

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __array__(self, dtype=None, copy=None):
        data = self.numpy()
        return data.astype(dtype) if dtype is not None else data

    # ---- autodiff ---------------------------------------------------------------------------
    def backward(self, out_grad=None):
        """Set `.grad` of every live Tensor that requires grad and that this one depends on."""
        if not is_float(self._value.dtype):
            raise NdlcError(f"backward() of a {self.dtype} tensor: only float tensors have gradients")
        seed = None
        if out_grad is not None:
            out_grad = out_grad if isinstance(out_grad, Tensor) else Tensor(out_grad, dtype=self.dtype)
            seed = out_grad._value
        context = active_context()
        if context is not None:
            context.backward_roots.append(self._value)
        sent = context.differentiable_sent() if context is not None else []  # SyncBatchNorm's statistics
        graph = Graph.from_outputs([self._value] + ([seed] if seed is not None else []) + sent, name="backward")
        targets = [t for v in _dag_values(graph) if (t := _tensor_wrapping(v)) is not None and t.requires_grad]
        start = len(graph.nodes)
        grads = append_gradients(graph, self._value, [t._value for t in targets], seed)
        if sent:
            grads = context.backward_through_exchanges(graph, [t._value for t in targets], grads)
        graph.outputs += [g for g in grads if g is not None]
        maybe_verify(graph, "backward")
        _evaluate_new_nodes(graph.nodes[start:])
        for tensor, g in zip(targets, grads):
            if g is not None:
                tensor.grad = Tensor._wrap(g, requires_grad=True)

    __hash__ = object.__hash__

    @property
    def T(self):
        return self.transpose()


class TensorTuple(tuple):
    """needle's tuple of Tensors: what `split` returns, a plain tuple to everything else."""

    def tuple(self) -> tuple:
        return tuple(self)


class TensorOp:
    """needle's `tensor.op`: the IR node that made a tensor (its fields read through), and
    `gradient_as_tuple`, the op's registry gradient rule (the one autodiff uses) run eagerly."""

    def __init__(self, node):
        self.node = node

    def __getattr__(self, name):
        return getattr(self.node, name)

    def gradient_as_tuple(self, out_grad: "Tensor", node: "Tensor") -> tuple:
        """The partial adjoints of the node's operands for the adjoint `out_grad` of its result."""
        if node._value is not self.node.result:
            raise NdlcError(f"gradient_as_tuple: {node._value.type} tensor is not the result of this {self.node.op}")
        made = []
        opdef = get_op(self.node.op)
        if opdef.parts is not None:
            raise NdlcError(f"{self.node.op} has several results, each read by a part node: its gradient "
                            "rule takes their adjoints together; differentiate it with backward()")
        rule = opdef.grad
        if rule is None:
            raise NdlcError(f"{self.node.op} has no gradient rule")
        partials = rule(Builder(on_node=made.append, loc=user_location()), self.node, out_grad._value)
        _evaluate_new_nodes(made)
        return tuple(None if p is None else Tensor._wrap(p, requires_grad=True) for p in partials)


def _dag_values(graph):
    yield from graph.inputs
    for node in graph.nodes:
        yield node.result


def _evaluate_new_nodes(nodes):
    """Evaluate, in order, each node whose operands all hold data; the rest stay symbolic."""
    for node in nodes:
        if all(ref(v) in _DATA for v in node.operands):
            _set_data(node.result, evaluate_node(node, [data_of(v) for v in node.operands]))


def apply(op, *tensors, **attrs) -> Tensor:
    """Record op(tensors, attrs) as an IR node; evaluate it now if every operand holds data."""
    result = Builder(loc=user_location()).emit(op, *(t._value for t in tensors), **attrs)
    _evaluate_new_nodes([result.node])
    tensor = Tensor._wrap(result, requires_grad=any(t.requires_grad for t in tensors))
    if tensors:
        tensor.device = tensors[0].device  # a result lives where its operands do (needle's)
    return tensor


def tensor_of(value: Value) -> Tensor:
    """The live Tensor wrapping `value` (a parameter keeps receiving its .grad), or a new one."""
    tensor = _tensor_wrapping(value)
    return Tensor._wrap(value) if tensor is None else tensor


def symbolic(type_: TensorType, name=None, requires_grad=False) -> Tensor:
    """A Tensor without data standing for a graph input while tracing."""
    return Tensor._wrap(Value(type_, name=name), requires_grad)


def data_of(value: Value):
    """The eager data of `value`, or None if it is symbolic."""
    fetch_resident(value)
    return _DATA.get(ref(value))


def mark_resident(value: Value, owner, fetch):
    """`value`'s current data is in `owner`'s device memory; fetch(value) brings it to the host
    array. Neither the owner (held weakly) nor fetch may reach `value`, or the entry would keep
    its own key, and with it the device program, alive for ever."""
    global _ever_resident
    _RESIDENT[value] = (weakref.ref(owner), fetch)
    _ever_resident = True


def resident_in(value: Value):
    """The live owner whose device memory holds `value`'s current data, or None."""
    entry = _RESIDENT.get(value)
    return entry[0]() if entry else None


def store_data(value: Value, array):
    """`value`'s host data set to `array`: copied into its array where that is writeable (views
    of it see the change), else replacing it."""
    current = _DATA.get(ref(value))
    if current is not None and current.flags.writeable and current.flags.c_contiguous and current.shape == array.shape:
        np.copyto(current, array)
    else:
        _set_data(value, array)


def fetch_resident(value: Value):
    """Bring `value`'s data to the host if a device program holds its current value."""
    entry = _RESIDENT.pop(value, None)
    if entry is not None:
        entry[1](value)

