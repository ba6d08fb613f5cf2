"""needle-compatible user API: Tensor, ops, and tracing into the graph IR."""
from . import data, init, nn, ops, optim
from .tensor import Device, Tensor, cpu, cuda, default_device
from .trace import trace

__all__ = ["data", "init", "nn", "ops", "optim", "Device", "Tensor", "cpu", "cuda", "default_device", "trace"]
