"""The JIT behind `ndl.compile`: capture of a needle program into the graph IR (capture, guards),
the pipeline of passes down to native code, and the compiled functions that run it (compile,
compile_ir, split programs for exchanges, GPU-resident state)."""
from .compile import compile
from .compile_ir import compile_ir

__all__ = ["compile", "compile_ir"]
