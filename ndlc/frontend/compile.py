"""`ndlc.compile`: a needle program compiled to native code.

`compile(fn)` captures `fn` (with the parameters, running statistics and optimizer state of the
modules and optimizers it uses as persistent state: frontend/capture.py), lowers it with the
pipeline and runs it natively, one specialisation per list of input types and train/eval modes.
`compile(module)` does the same for `module(*inputs)`. After a call, the state tensors hold the
new values (the runtime writes them into the tensors' own storage).
"""
import logging
import os
import threading

import numpy as np

from ..ir.errors import NdlcError, ShapeError
from ..ir.types import TensorType
from ..pipeline import compile_graph as _compile_graph
from ..runtime.check import CheckError
from .capture import STATEFUL, capture, referenced_numbers, referenced_objects
from .exchange import SplitSpecialisation
from .nn.module import Module
from .tensor import Tensor
from .trace import graph_name

log = logging.getLogger("ndlc.compile")
DEVICES = ("cpu",)
MANY = 8  # specialisations of one compiled function after which it warns of a recompile storm


def compile(obj, device="cpu", state=None, check=None):
    """A callable running `obj` (a Module, or a function of Tensors) natively on `device`.
    `state`: the Modules, Optimizers and Tensors whose tensors the function reads and updates,
    when they cannot be found through its closure, globals and bound object. `check` (default:
    NDLC_CHECK=1): every call also compares each kernel with the interpreter and raises CheckError
    naming the first that computes a wrong value (slow: a debugging mode)."""
    check = os.environ.get("NDLC_CHECK", "") not in ("", "0") if check is None else check
    name = device.name if hasattr(device, "name") else str(device)
    if name not in DEVICES:
        raise NdlcError(f"device {name!r} is not available to ndlc.compile (available: "
                        f"{', '.join(DEVICES)}; the CUDA backend is not built yet)")
    if isinstance(obj, Module):
        return CompiledModule(obj, check)
    if not callable(obj):
        raise NdlcError(f"ndlc.compile takes a Module or a function, not {type(obj).__name__}")
    roots = None if state is None else {f"{type(s).__name__.lower()}{i}": s for i, s in enumerate(state)}
    return CompiledFunction(obj, roots, check=check)


def compile_graph(graph, forward=None):
    """A graph lowered and compiled for the host CPU, ready to `run`; its last outputs are the
    new values of its state inputs, in `graph.updates` order. NDLC_PROFILE=1 adds per-kernel
    timing (`Program.profile()`)."""
    profile = os.environ.get("NDLC_PROFILE", "") not in ("", "0")
    return _compile_graph(graph, forward, profile)


class Specialisation:
    """One compiled program of a captured step, and how to run it against the step's state."""

    def __init__(self, captured, check=False):
        self.captured, self.check = captured, check
        self.program = compile_graph(captured.graph, captured.forward)
        self.num_outputs = len(captured.graph.outputs)

    def run(self, arrays):
        if self.check:
            divergence = self.program.check(*arrays, *[a.copy() for a in self.captured.state_arrays()])
            if divergence is not None:
                raise CheckError(f"{self.program.kernels.name}: {divergence}")
        results = self.program.run(*arrays, *self.captured.state_arrays(), update_state=True)
        outputs, new_state = results[:self.num_outputs], results[self.num_outputs:]
        self.captured.write_back(dict(zip(self.captured.graph.updates, new_state)))
        return [Tensor.make_const(out) for out in outputs]


class CompiledFunction:
    """The compiled form of `fn`; state is what `fn` reaches (or `roots` names)."""

    def __init__(self, fn, roots=None, name=None, check=False):
        self.fn, self.check = fn, check
        self.lock = threading.RLock()
        self.roots = referenced_objects(fn) if roots is None else roots
        self.name = graph_name(name or fn)
        self.stateful = _stateful(self.roots)
        self.specialisations = {}
        self.signature = None
        self.last = None

    def __call__(self, *args):
        """Run (tracing and compiling first where needed). Calls from several threads take turns:
        a call reads and updates the step's state as one transaction, in some serial order."""
        with self.lock:
            return self._call(args)

    def _call(self, args):
        arrays = [_as_array(a, self.name, i) for i, a in enumerate(args)]
        types = tuple(TensorType.of(a) for a in arrays)
        self._check_signature(types)
        key = (types, self._settings())
        stale = key in self.specialisations and self.specialisations[key].captured.changed_state()
        if key not in self.specialisations or stale:
            if self.specialisations:
                log.info("%s: compiling a new specialisation for (%s)%s", self.name,
                         ", ".join(map(str, types)), f" after {stale}" if stale else self._changed(key))
            captured = capture(self.fn, types, self.roots, self.name)
            self.specialisations[key] = (Specialisation(captured, self.check) if captured.exchange is None
                                         else SplitSpecialisation(captured, self.check, compile_graph))
            if len(self.specialisations) == MANY:
                log.warning("%s has been compiled %d times: input shapes or Python values of its "
                            "modules and optimizers keep changing (each is compiled into the "
                            "program); keep changing numbers out of them, or pass them as tensors",
                            self.name, MANY)
        self.last = self.specialisations[key]
        outputs = self.last.run(arrays)
        return tuple(outputs) if self.last.captured.returns_sequence else outputs[0]

    def _settings(self):
        """The plain Python values the step reads (its own globals and closure, and the train/eval
        flags, learning rates, momenta, eps, p, ... of its modules and optimizers): a trace bakes
        them in, so a change recompiles."""
        own = tuple((-1, name, value) for name, value in referenced_numbers(self.fn).items())
        return own + tuple((i, name, value) for i, obj in enumerate(self.stateful)
                           for name, value in vars(obj).items() if isinstance(value, (bool, int, float, str)))

    def _changed(self, key):
        """' after <attribute> changed' when `key` differs from the last run's only in settings."""
        if self.last is None:
            return ""
        last_types, last = next(k for k, v in self.specialisations.items() if v is self.last)
        if last_types != key[0]:
            return ""
        names = [f"{type(self.stateful[i]).__name__}.{name}" if i >= 0 else name
                 for (i, name, value), (_, _, old) in zip(key[1], last) if value != old]
        return f" after {', '.join(names)} changed" if names else ""

    def ir(self, stage="planned") -> str:
        """The text of `stage` (one of ndlc.pipeline.STAGES: traced ... planned, llvm, llvm_opt, asm)
        for the most recently run specialisation."""
        if self.last is None:
            raise NdlcError(f"{self.name} has not been compiled yet: call it first")
        return self.last.program.ir(stage)

    def profile(self, top=None) -> str:
        """Per-kernel times of the most recently run specialisation (compile with NDLC_PROFILE=1)."""
        if self.last is None:
            raise NdlcError(f"{self.name} has not been compiled yet: call it first")
        return self.last.program.profile(top)

    @property
    def native_calls(self):
        return sum(s.program.calls for s in self.specialisations.values())

    def _check_signature(self, types):
        """A new shape is a new specialisation; a new number of inputs, rank or dtype is refused."""
        signature = tuple((t.ndim, t.dtype) for t in types)
        if self.signature is None:
            self.signature = signature
            return
        if len(signature) != len(self.signature):
            raise ShapeError(f"{self.name} was compiled for {len(self.signature)} inputs, got {len(signature)}")
        for i, ((ndim, dtype), (want_ndim, want_dtype)) in enumerate(zip(signature, self.signature)):
            if (ndim, dtype) != (want_ndim, want_dtype):
                raise ShapeError(f"{self.name}: input {i} has type {types[i]}, but it was compiled for "
                                 f"rank-{want_ndim} {want_dtype} tensors (a new shape compiles a new "
                                 "specialisation; a new rank or dtype needs its own ndlc.compile)")


class CompiledModule(CompiledFunction):
    """`module(*inputs)` compiled; train() and eval() each get their own specialisation."""

    def __init__(self, module, check=False):
        self.module = module
        super().__init__(lambda *inputs: module(*inputs), roots={"model": module},
                         name=type(module).__name__, check=check)

    def train(self):
        self.module.train()
        return self

    def eval(self):
        self.module.eval()
        return self

    def parameters(self):
        return self.module.parameters()

    def state_dict(self):
        return self.module.state_dict()


def _stateful(roots):
    """Every Module and Optimizer reachable from `roots`, in a fixed order."""
    found, stack, seen = [], list(roots.values())[::-1], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, STATEFUL):
            found.append(obj)
            stack.extend(list(vars(obj).values())[::-1])
        elif isinstance(obj, (list, tuple)):
            stack.extend(list(obj)[::-1])
        elif isinstance(obj, dict):
            stack.extend(list(obj.values())[::-1])
    return found


def _as_array(value, name, index):
    array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
    try:
        TensorType.of(array)
    except NdlcError as e:
        raise ShapeError(f"{name}: input {index}: {e}") from None
    return array
