"""`import ndlc.ops` (needle's `needle.ops`): every registry op as a function of Tensors and
Python numbers, re-exported from ndlc/frontend/ops."""
from .frontend.ops import *  # noqa: F401,F403
from .frontend.ops import __all__  # noqa: F401
