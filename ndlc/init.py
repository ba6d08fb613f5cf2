"""`import ndlc.init` (needle's `needle.init`): the initialisers, re-exported from ndlc/frontend/init."""
from .frontend.init import *  # noqa: F401,F403
from .frontend.init import __all__  # noqa: F401
