"""ndlc: a deep-learning compiler for needle-style programs. `import ndlc as ndl`.

The public API (ndlc/api.py) loads on first use of one of its names, so that importing a layer
(`import ndlc.ir`) runs that layer and the ones below it, and nothing above."""
import importlib

from .logconfig import configure as _configure_logging
from .version import __version__

_configure_logging()


def __getattr__(name):
    api = importlib.import_module("ndlc.api")
    globals().update({n: getattr(api, n) for n in api.__all__})
    if name == "__all__":
        return list(api.__all__)
    if name in api.__all__:
        return globals()[name]
    raise AttributeError(f"module 'ndlc' has no attribute {name!r}")


def __dir__():
    api = importlib.import_module("ndlc.api")
    return sorted(set(globals()) | set(api.__all__))
