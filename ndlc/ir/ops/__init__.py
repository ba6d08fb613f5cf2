"""Registers every op: importing this package fills the registry (ndlc.ir.registry)."""
from . import elementwise, layout, reduction, linalg, conv  # noqa: F401
