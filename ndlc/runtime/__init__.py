"""Running compiled programs: buffers, executors and persistent state."""
from .native import BackendUnavailable, NativeModule, host_target
from .program import Program, native_calls

__all__ = ["BackendUnavailable", "NativeModule", "host_target", "Program", "native_calls"]
