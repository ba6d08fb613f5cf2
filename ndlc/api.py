"""The names `import ndlc as ndl` gives: needle's API (Tensor, ops, nn, init, optim, data, its
backend_ndarray and devices), the compiler's entry points (compile, compile_ir), checkpoints and
the errors a user catches."""
from . import autograd, backend_ndarray, data, init, ir, nn, ops, optim, passes
from .backend_ndarray import NDArray, all_devices, cpu_numpy
from .env import SettingError
from .errors import CheckpointError, NdlcError, ShapeError, StateDictError, TraceError
from .frontend import Device, Tensor, cpu, cuda, default_device, trace
from .frontend.checkpoint import load, save
from .frontend.tensor import TensorTuple
from .frontend.ops import *  # noqa: F401,F403  (every op as ndl.<op>, as in needle)
from .frontend.ops import __all__ as _op_names
from .jit.compile import compile
from .jit.compile_ir import compile_ir
from .runtime.check import CheckError
from .runtime.program import BoundsError

__all__ = ["autograd", "backend_ndarray", "NDArray", "all_devices", "cpu_numpy", "data", "init", "ir", "nn", "ops", "optim", "passes", "SettingError", "CheckpointError",
           "NdlcError", "ShapeError", "StateDictError", "TraceError", "Device", "Tensor", "TensorTuple", "cpu", "cuda",
           "default_device", "trace", "load", "save", "compile", "compile_ir", "CheckError",
           "BoundsError", *_op_names]
