"""NDLC_LOG: which of ndlc's loggers print their decisions to stderr, comma-separated or 'all':
fusion (every kernel merged, and why each boundary is one), hoist (work moved out of scans' loops),
compile (specialisations, each stage's time), cache, native (LLVM compilations), libraries (BLAS
and the thread team found), pipeline, team (a program's thread team changing)."""
import logging
import os

LOGGERS = ("fusion", "hoist", "compile", "cache", "native", "libraries", "pipeline", "team")


def configure(value=None):
    """Send the named loggers' INFO messages to stderr; unknown names are warned about."""
    value = os.environ.get("NDLC_LOG", "") if value is None else value
    names = {n.strip() for n in value.split(",") if n.strip()}
    if "all" in names:
        names = set(LOGGERS)
    for unknown in sorted(names - set(LOGGERS)):
        logging.getLogger("ndlc").warning("NDLC_LOG names no logger %r (loggers: %s, all)", unknown, ", ".join(LOGGERS))
    for name in sorted(names & set(LOGGERS)):
        logger = logging.getLogger(f"ndlc.{name}")
        logger.setLevel(logging.INFO)
        if not any(getattr(h, "ndlc_log", False) for h in logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            handler.ndlc_log = True
            logger.addHandler(handler)
            logger.propagate = False
