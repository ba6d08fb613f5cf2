"""`ndlc.compile(fn)`: a pure function of tensors compiled to native code, one specialisation per
list of input types (traced, lowered and compiled on its first call, then cached in memory)."""
import functools
import logging

import numpy as np

from ..codegen.pipeline import lower
from ..ir.errors import NdlcError
from ..ir.types import TensorType
from ..runtime import Program, host_target
from .tensor import Tensor
from .trace import trace

log = logging.getLogger("ndlc.compile")
DEVICES = ("cpu",)


def compile(fn, device="cpu"):
    """A callable running `fn` natively on `device`; it returns ndlc Tensors as `fn` does."""
    name = device.name if hasattr(device, "name") else str(device)
    if name not in DEVICES:
        raise NdlcError(f"device {name!r} is not supported by ndlc.compile (supported: {', '.join(DEVICES)})")
    return CompiledFunction(fn)


def compile_graph(graph) -> Program:
    """A graph lowered and compiled for the host CPU, ready to `run`."""
    lowered = lower(graph, *host_target())
    return Program(lowered.kernels, lowered.llvm_ir, lowered.entry, lowered.stages)


class CompiledFunction:
    """The compiled form of `fn`; `programs` maps input types to compiled specialisations."""

    def __init__(self, fn):
        self.fn = fn
        self.programs = {}
        self.last = None

    def __call__(self, *args):
        arrays = [a.numpy() if isinstance(a, Tensor) else np.asarray(a) for a in args]
        key = tuple(TensorType.of(a) for a in arrays)
        if key not in self.programs:
            if self.programs:
                log.info("%s: compiling a new specialisation for (%s)", self._name(),
                         ", ".join(map(str, key)))
            self.programs[key] = self._compile(key)
        self.last, (program, single) = self.programs[key], self.programs[key]
        outputs = [Tensor.make_const(out) for out in program.run(*arrays)]
        return outputs[0] if single else tuple(outputs)

    def ir(self, stage="kernels") -> str:
        """The text of `stage` for the most recently run specialisation."""
        if self.last is None:
            raise NdlcError(f"{self._name()} has not been compiled yet: call it first")
        return self.last[0].ir(stage)

    def _compile(self, types):
        returned = {}

        @functools.wraps(self.fn)
        def recording(*tensors):
            result = self.fn(*tensors)
            returned["single"] = not isinstance(result, (tuple, list))
            return result
        graph = trace(recording, *types)
        return compile_graph(graph), returned["single"]

    def _name(self):
        return getattr(self.fn, "__name__", "compiled")
