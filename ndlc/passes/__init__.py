"""Graph-to-graph passes, one per file."""
from .autodiff import append_gradients, autodiff
from .simplify import dce, simplify

__all__ = ["append_gradients", "autodiff", "dce", "simplify"]
