"""The error types every layer raises: each names what was wrong and where it came from."""


class NdlcError(Exception):
    """Base class of every error ndlc raises on purpose."""


class ShapeError(NdlcError, ValueError):
    """An op was given operands or attributes its shape/dtype rule rejects."""


class UnknownOpError(NdlcError, KeyError):
    """An op name that the registry does not know."""

    def __str__(self):
        return self.args[0] if self.args else ""


class AttrError(NdlcError, ValueError):
    """An attribute is missing, unknown, or of the wrong kind."""


class IRParseError(NdlcError, ValueError):
    """Malformed IR text; the message names line and column."""

    def __init__(self, message, line, column, text_line=""):
        self.line, self.column = line, column
        where = f"line {line}, column {column}: {message}"
        if text_line:
            where += f"\n  {text_line}\n  {' ' * (column - 1)}^"
        super().__init__(where)


class VerifyError(NdlcError, ValueError):
    """A graph breaks an IR invariant (SSA, types, attributes)."""


class UnsupportedError(NdlcError):
    """A backend or pass cannot lower a node or primitive; the message names which."""


class TraceError(NdlcError, RuntimeError):
    """Something a traced function did cannot be captured in a static graph."""


class CheckpointError(NdlcError, ValueError):
    """A checkpoint file that cannot be written or read back (truncated, corrupt, another format
    version, an object of a kind it cannot hold); the message names the file."""


class StateDictError(NdlcError, KeyError, ValueError):
    """A state dict whose keys or shapes do not fit the module or optimizer it is loaded into."""

    def __str__(self):
        return self.args[0] if self.args else ""
