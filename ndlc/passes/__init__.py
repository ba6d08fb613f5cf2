"""Graph-to-graph passes, one per file."""
from .autodiff import append_gradients, autodiff

__all__ = ["append_gradients", "autodiff"]
