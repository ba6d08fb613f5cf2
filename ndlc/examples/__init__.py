"""Runnable needle-style programs (`python -m ndlc.examples.<name>`)."""
