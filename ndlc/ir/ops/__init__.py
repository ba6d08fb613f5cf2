"""Registers every op: importing this package fills the registry (ndlc.ir.registry)."""
from . import conv, elementwise, gather, layout, linalg, planes, pooling, random, reduction, scan, windows  # noqa: F401
