"""Backends only: scheduled, planned Kernel IR -> LLVM IR for the host CPU (llvm.py: loop nests,
threads and the entry point; llvm_scalar.py: scalar expressions; mathlib.py: exp, log, tanh, ...)."""
