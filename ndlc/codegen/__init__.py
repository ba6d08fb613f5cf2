"""Backends only: scheduled, planned Kernel IR -> LLVM IR for the host CPU (llvm.py)."""
