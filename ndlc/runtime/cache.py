"""The on-disk cache of native code: one file per compiled module, keyed by its LLVM IR, the host
CPU (name and features) and the ndlc and llvmlite versions (`<key>.obj`); of compiled programs,
keyed by their traced graph (runtime/program_cache.py: `<key>.program`); and of the shared
libraries linked from a program's objects (runtime/shared.py: `<hash>.so`), named by the hash of
their bytes. Each entry file carries a checksum and the key it was stored under; a corrupt,
truncated or unreadable entry, or one stored under another key (a valid entry copied over this
one), is logged, ignored and rebuilt, never trusted. A library is as the dynamic loader reads it,
so its name is its checksum: one whose bytes no longer hash to its name is not loaded."""
import hashlib
import json
import logging
import os
import tempfile

log = logging.getLogger("ndlc.cache")
MAGIC = b"NDLCOBJ1"
LIBRARY = ".so"  # a shared library's suffix


def cache_dir() -> str:
    return os.environ.get("NDLC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ndlc")


def cache_key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _path(key, suffix, root=None):
    return os.path.join(root or cache_dir(), key[:2], key + suffix)


def load(key, suffix=".obj", root=None):
    """(object code, optimised IR text) stored under `key` in the cache directory `root` (default:
    cache_dir()), or None (missing or not intact); `suffix` names the kind of entry (what its
    bytes and text are)."""
    path = _path(key, suffix, root)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        _warn_once(path, e, "cannot read cache entry %s (%s); recompiling")
        return None
    try:
        if blob[:len(MAGIC)] != MAGIC:
            raise ValueError("not an ndlc cache file")
        checksum, body = blob[len(MAGIC):len(MAGIC) + 32], blob[len(MAGIC) + 32:]
        if hashlib.sha256(body).digest() != checksum:
            raise ValueError("checksum mismatch (truncated or corrupt)")
        header, _, rest = body.partition(b"\n")
        sizes = json.loads(header)
        obj, ir = rest[:sizes["object"]], rest[sizes["object"]:]
        if len(obj) != sizes["object"] or len(ir) != sizes["ir"]:
            raise ValueError("sizes do not match the header")
        text = ir.decode()
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        log.warning("ignoring corrupt cache entry %s: %s; recompiling", path, e)
        return None
    if "key" not in sizes:
        log.info("ignoring cache entry %s: written by an older ndlc, without its key; recompiling", path)
        return None
    if sizes["key"] != key:
        log.warning("ignoring cache entry %s: it was stored under another key (%s), so it holds another "
                    "program (copied over this one?); recompiling", path, str(sizes["key"])[:16])
        return None
    return obj, text


def store(key, obj: bytes, ir: str, suffix=".obj", root=None):
    """Write an entry atomically (a reader sees the old file or the whole new one), in the cache
    directory `root` (default: cache_dir())."""
    ir_bytes = ir.encode()
    body = json.dumps({"key": key, "object": len(obj), "ir": len(ir_bytes)}).encode() + b"\n" + obj + ir_bytes
    _write(_path(key, suffix, root), MAGIC + hashlib.sha256(body).digest() + body)


def store_library(data: bytes, root=None) -> str | None:
    """Write shared library `data` under the hash of its bytes, which names it, in the cache
    directory `root` (default: cache_dir()); that hash, or None where it cannot be written (logged)."""
    digest = hashlib.sha256(data).hexdigest()
    return digest if _write(_path(digest, LIBRARY, root), data) else None


def library_path(digest, root=None):
    """The path of the shared library named `digest` in the cache directory `root` (default:
    cache_dir()), or None where it is gone or its bytes no longer hash to its name (logged)."""
    path = _path(digest, LIBRARY, root)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        log.info("the shared library %s is no longer cached", path)
        return None
    except OSError as e:
        _warn_once(path, e, "cannot read the shared library %s (%s)")
        return None
    if hashlib.sha256(data).hexdigest() != digest:
        log.warning("ignoring the shared library %s: its bytes do not hash to its name (truncated or corrupt)", path)
        return None
    return path


_WARNED = set()  # (cache directory, errno, what failed) already warned about


def _warn_once(path, error, message):
    """Warn about `error` reading or writing (`message`) the entry `path` once per cache directory,
    error and kind of access (a cache directory that is a file, or read-only, fails every entry
    the same way: a warning each flooded stderr); later ones are logged at INFO (NDLC_LOG=cache)."""
    key = (os.path.dirname(os.path.dirname(path)), error.errno, message)
    if key in _WARNED:
        log.info(message, path, error)
        return
    _WARNED.add(key)
    log.warning(message + "; further such failures in %s are logged with NDLC_LOG=cache", path, error, key[0])


def _write(path, data) -> bool:
    """Write `data` to `path` atomically (a reader sees the old file or the whole new one);
    whether it was written (a failure is logged)."""
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        _warn_once(path, e, "cannot write cache entry %s (%s); continuing without it")
        if tmp is not None and os.path.exists(tmp):  # a full disk's partial file, not left behind
            os.unlink(tmp)
        return False
    return True
