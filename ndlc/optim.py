"""`import ndlc.optim` (needle's `needle.optim`): SGD and Adam, re-exported from ndlc/frontend/optim."""
from .frontend.optim import *  # noqa: F401,F403
from .frontend.optim import __all__  # noqa: F401
