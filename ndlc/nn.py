"""`import ndlc.nn as nn` (needle's `import needle.nn as nn`): Module, Parameter and the layers,
re-exported from ndlc/frontend/nn, so `ndl.nn`, `ndlc.nn` and `from ndlc.nn import Linear` agree."""
from .frontend.nn import *  # noqa: F401,F403
from .frontend.nn import __all__  # noqa: F401
