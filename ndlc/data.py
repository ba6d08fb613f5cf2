"""`import ndlc.data` (needle's `needle.data`): datasets, transforms, the DataLoader and the text
helpers, re-exported from ndlc/frontend/data."""
from .frontend.data import *  # noqa: F401,F403
from .frontend.data import __all__  # noqa: F401
