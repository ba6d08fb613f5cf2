"""ndlc: a deep-learning compiler for needle-style programs. `import ndlc as ndl`."""
from . import data, init, ir, nn, ops, optim, passes
from .frontend import Device, Tensor, cpu, cuda, default_device, trace
from .frontend.checkpoint import load, save
from .frontend.compile import compile
from .frontend.compile_ir import compile_ir
from .frontend.ops import *  # noqa: F401,F403  (every op as ndl.<op>, as in needle)
from .ir.errors import CheckpointError, NdlcError, ShapeError, StateDictError, TraceError
from .env import SettingError
from .runtime.check import CheckError
from .runtime.program import BoundsError
from .logconfig import configure as _configure_logging

__version__ = "0.1.0"
_configure_logging()
