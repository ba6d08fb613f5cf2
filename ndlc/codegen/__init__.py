"""Code generation: Graph IR -> Kernel IR (loop nests) -> LLVM IR."""
from .kernel import Buffer, Kernel, Load, Program
from .lower import UnsupportedError, lower_to_kernels
from .pipeline import Lowered, lower

__all__ = ["Buffer", "Kernel", "Load", "Program", "UnsupportedError", "lower_to_kernels", "Lowered", "lower"]
