"""The columns of the kernel table: each framework, how a case builds its callable in it, and why
it cannot run here (not installed, or broken)."""
import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass
class Contender:
    """A column of the table: how a case builds its callable, and why it cannot run here (or None);
    `lingers`: its thread pool keeps running once started, so it is timed in the last round only."""
    name: str
    build: Callable
    missing: Callable = lambda: None
    lingers: bool = False


def why_missing(module):
    """None if `module` imports, else why not."""
    try:
        importlib.import_module(module)
    except Exception as e:  # a broken install (jaxlib mismatch) counts as missing too
        return f"{module} not installed" if isinstance(e, ImportError) else f"{module}: {short_reason(e)}"
    return None


CONTENDERS = [
    Contender("ndlc", lambda case, a, device: case.ndlc(a, device)),
    Contender("numpy", lambda case, a, device: case.numpy(a)),
    Contender("PyTorch", lambda case, a, device: case.torch(a), lambda: why_missing("torch")),
    Contender("torch.compile", lambda case, a, device: case.torch_compile(a), lambda: why_missing("torch")),
    Contender("JAX", lambda case, a, device: case.jax(a), lambda: why_missing("jax"), lingers=True),
]


def short_reason(error):
    """An exception in one short line, for a table cell (no '|')."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = (f"{type(error).__name__}: {text}" if text else type(error).__name__).replace("|", "/")
    return text if len(text) <= 70 else text[:67] + "..."
