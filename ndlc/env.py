"""ndlc's on/off environment variables (NDLC_VERIFY, NDLC_PROFILE, NDLC_CHECK, NDLC_BLAS), read
one way: unset or empty is the default; 0, false, no, off are off; 1, true, yes, on are on. Any
other value is refused with an error naming the variable instead of being guessed at."""
import os

from .ir.errors import NdlcError

OFF = ("0", "false", "no", "off")
ON = ("1", "true", "yes", "on")


class SettingError(NdlcError, ValueError):
    """An NDLC_* environment variable holds a value ndlc does not understand."""


def flag(name, default=False) -> bool:
    """Whether the on/off variable `name` is on (`default` when unset or empty)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if text.lower() in OFF + ON:
        return text.lower() in ON
    raise SettingError(f"{name}={text!r} is neither on ({', '.join(ON)}) nor off ({', '.join(OFF)})")
