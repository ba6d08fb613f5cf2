"""The per-user cache of what is the same for every program on this machine: the host
description, the runner's and the imports' object code and the thread team's library
(runtime/host.py, native.py, pool.py). A cold NDLC_CACHE_DIR then does not compile them again
(~40 ms of CPU, ~30 ms of a cold MLP step's wall time, on the project's machines). It lives in
`$XDG_CACHE_HOME/ndlc/machine` (default `~/.cache/ndlc/machine`), whatever NDLC_CACHE_DIR says.
Its entries are keyed as the disk cache's are (their text, the host description, ndlc's and
llvmlite's versions) and checked the same way (runtime/cache.py: checksum and key; a library by
the hash that names it): a corrupt or foreign file is ignored and rebuilt, never loaded. An entry
found here is copied into the disk cache, where programs' entries refer to it; one written goes
to both, so that a machine folder that cannot be written costs only what the disk cache did."""
import functools
import logging
import os

from . import cache

log = logging.getLogger("ndlc.cache")


@functools.lru_cache(maxsize=None)
def versions() -> str:
    """The versions the native code depends on, part of its entries' keys: ndlc's and llvmlite's
    (its package is imported, not its binding)."""
    import llvmlite
    from ..version import __version__
    return f"ndlc {__version__} llvmlite {llvmlite.__version__}"


def machine_dir() -> str:
    """The folder of this user's per-machine entries."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ndlc", "machine")


def load(key, suffix=".obj"):
    """The entry stored under `key` (cache.load's answer): the disk cache's, else the machine
    folder's (copied into the disk cache), else None."""
    found = cache.load(key, suffix)
    if found is None:
        found = cache.load(key, suffix, machine_dir())
        if found is not None:
            log.debug("cache entry %s%s from the machine's folder %s", key[:16], suffix, machine_dir())
            cache.store(key, *found, suffix)
    return found


def store(key, obj: bytes, text: str, suffix=".obj"):
    """Store an entry in the disk cache and in the machine folder."""
    cache.store(key, obj, text, suffix)
    cache.store(key, obj, text, suffix, machine_dir())


def library_path(digest):
    """The path of the shared library named `digest`, intact, in the disk cache or else the
    machine folder; None where neither holds it."""
    return cache.library_path(digest) or cache.library_path(digest, machine_dir())


def keep_library(digest):
    """A copy in the machine folder of the disk cache's shared library named `digest`."""
    path = cache.library_path(digest)
    if path is not None:
        with open(path, "rb") as f:
            cache.store_library(f.read(), machine_dir())
