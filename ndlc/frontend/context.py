"""The stack of running traces: trace.py pushes a context while it traces a function, and
tensors and initialisers ask here whether they are being traced (eager when the stack is empty)."""

ACTIVE = []


def active_context():
    """The innermost running trace's context, or None in eager mode."""
    return ACTIVE[-1] if ACTIVE else None
