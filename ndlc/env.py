"""ndlc's on/off environment variables (NDLC_VERIFY, NDLC_PROFILE, NDLC_CHECK, NDLC_BLAS), read
one way: unset or empty is the default; 0, false, no, off are off; 1, true, yes, on are on. Any
other value is refused with an error naming the variable instead of being guessed at. An NDLC_*
variable that is none of KNOWN (a misspelling) is warned about once, with the closest name."""
import difflib
import functools
import logging
import os

from .errors import NdlcError

KNOWN = ("NDLC_BLAS", "NDLC_CACHE_DIR", "NDLC_CHECK", "NDLC_CUDA_DEVICE", "NDLC_CUDA_EMULATE", "NDLC_CUDA_FMA",
         "NDLC_CUDA_GRAPHS", "NDLC_DATA", "NDLC_DEBUG", "NDLC_DUMP", "NDLC_DUMP_DIR", "NDLC_LOG",
         "NDLC_PROFILE", "NDLC_TF32", "NDLC_THREADS", "NDLC_VERIFY")  # every variable ndlc reads: add new ones here
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


@functools.lru_cache(maxsize=None)
def warn_unknown_names():
    """Warn (once per process) about each NDLC_* variable set that ndlc does not read."""
    for name in sorted(n for n in os.environ if n.startswith("NDLC_") and n not in KNOWN):
        close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else f"; it reads {', '.join(KNOWN)}"
        logging.getLogger("ndlc").warning("%s is set, but ndlc reads no such variable%s", name, hint)
