"""needle-compatible user API: Tensor, ops, and tracing into the graph IR."""
from . import ops
from .tensor import Device, Tensor, cpu, default_device
from .trace import trace

__all__ = ["ops", "Device", "Tensor", "cpu", "default_device", "trace"]
