"""What a disk cache folder holds once the program cache's pending entries are written (they are
written when their shared library is linked: runtime/program_cache.py, `finish`)."""
from ndlc.runtime import program_cache


def stored(folder, pattern) -> list:
    """The files under `folder` matching `pattern`, the entries still being linked written first."""
    program_cache.finish()
    return list(folder.rglob(pattern))
