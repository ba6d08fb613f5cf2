"""`ndl.save(obj, path)` / `ndl.load(path)`: checkpoints of tensors, arrays, numbers and strings,
nested in dicts, lists and tuples (state dicts of modules and optimizers, a training loop's RNG).

The file is numpy's `.npz`: one array per tensor plus a JSON header (`__ndlc__`) holding the format
version, the ndlc version and the nesting. Nothing is pickled, so loading never runs code. A save
writes a temporary file beside `path`, fsyncs it and renames it over `path`: a process killed
mid-save leaves the previous file whole."""
import json
import os
import tempfile
import tokenize
import zipfile
import zlib

import numpy as np

from ..errors import CheckpointError, NdlcError
from ..version import __version__
from .tensor import Tensor

FORMAT_VERSION = 1
HEADER = "__ndlc__"
# what zipfile raises on a corrupt member besides OSError: a bad zip, bad deflate data, and flags
# flipped to an unknown compression method (NotImplementedError) or to encrypted (RuntimeError)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)
# what numpy's .npy header parser lets out of a mangled header (ast.literal_eval; the tokenizer it
# rewrites an old header with), besides its ValueErrors
_HEADER_ERRORS = (SyntaxError, tokenize.TokenError)


class LoadedDict(dict):
    """A dict read from a checkpoint; `origin` (file and key) is named by load_state_dict's errors."""

    def __init__(self, items, origin):
        super().__init__(items)
        self.origin = origin


def save(obj, path):
    """Write `obj` to `path` atomically (the previous file stays whole until the new one is complete)."""
    path = os.fsdecode(path)  # str, bytes or os.PathLike: one kind of name in messages and joins
    arrays = {}
    structure = _encode(obj, arrays, "obj", path, ())
    header = {"format": FORMAT_VERSION, "ndlc": __version__, "structure": structure}
    arrays[HEADER] = np.array(json.dumps(header))
    _write_atomically(path, arrays)


def load(path):
    """The object `save` wrote to `path`: Tensors come back as Tensors (with their dtype and
    requires_grad), arrays as arrays, dicts as dicts (LoadedDict), lists and tuples as such."""
    path = os.fsdecode(path)  # str, bytes or os.PathLike: one kind of name in messages and joins
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path} is not an ndlc checkpoint (a single .npy array, not ndl.save's .npz)")
        with npz:
            if HEADER not in npz.files:
                raise CheckpointError(f"{path} is not an ndlc checkpoint (no {HEADER} header: not written by ndl.save)")
            arrays = {name: _member(npz, name) for name in npz.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a checkpoint file") from None
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, *_ZIP_ERRORS, *_HEADER_ERRORS) as e:
        raise CheckpointError(f"{path} is truncated or corrupt: {e}") from None
    try:
        header = arrays.pop(HEADER)
        if isinstance(header, Exception):
            raise ValueError(header)
        header = json.loads(str(header))
        version = header["format"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} has a corrupt {HEADER} header: {e}") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} is checkpoint format version {version} (written by ndlc "
                              f"{header.get('ndlc', '?')}); ndlc {__version__} reads version {FORMAT_VERSION}")
    return _decode(header.get("structure"), arrays, path, path)


def _member(npz, name):
    """Array `name` of the file, or the exception that reading it raised: an entry that cannot be
    read (truncated, or of Python objects) is reported by `_decode` under its key."""
    try:
        return npz[name]
    except (ValueError, *_HEADER_ERRORS) as e:  # numpy's: an array of Python objects, or a malformed .npy header
        return CheckpointError(f"cannot be read back ({e})")
    except (OSError, EOFError, *_ZIP_ERRORS) as e:
        return CheckpointError(f"is truncated or corrupt ({type(e).__name__}: {e})")


def _encode(obj, arrays, where, path, inside):
    """The JSON form of `obj`, its tensors and arrays moved into `arrays`; `where` names the
    position in the saved object for errors, `inside` the containers (ids, positions) it is in."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (Tensor, np.ndarray, np.generic)):
        array = obj.numpy() if isinstance(obj, Tensor) else np.asarray(obj)
        if array.dtype.hasobject:
            raise CheckpointError(f"cannot save {where} to {path}: an array of Python objects (it would need pickle)")
        key = f"a{len(arrays)}"
        arrays[key] = array
        if isinstance(obj, Tensor):
            return {"tensor": key, "requires_grad": obj.requires_grad}
        return {"array": key} if isinstance(obj, np.ndarray) else {"scalar": key}
    if isinstance(obj, (dict, list, tuple)):
        outer = next((at for container, at in inside if container == id(obj)), None)
        if outer is not None:
            raise CheckpointError(f"cannot save {where} to {path}: it is {outer} itself (the object "
                                  "contains itself; a checkpoint holds trees, not reference cycles)")
        inside = inside + ((id(obj), where),)
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise CheckpointError(f"cannot save {where} to {path}: dict key {k!r} is a "
                                      f"{type(k).__name__} (keys must be str or int)")
            items.append([k, _encode(v, arrays, f"{where}[{k!r}]", path, inside)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {kind: [_encode(v, arrays, f"{where}[{i}]", path, inside) for i, v in enumerate(obj)]}
    raise CheckpointError(f"cannot save {where} to {path}: a {type(obj).__name__} (a checkpoint holds "
                          "tensors, arrays, numbers, strings, None, and dicts, lists and tuples of them)")


def _decode(node, arrays, path, where):
    """The object the header's `node` describes at position `where` (the file's own name at the top)."""
    if not isinstance(node, dict):
        if isinstance(node, list):  # _encode writes every list as {"list": [...]}
            raise CheckpointError(f"{path} is corrupt: its header describes {where} as {node!r}")
        return node
    kind, body = _entry(node, path, where)
    if kind == "dict":
        return LoadedDict({k: _decode(v, arrays, path, f"{where}[{k!r}]") for k, v in body}, where)
    if kind in ("list", "tuple"):
        items = [_decode(v, arrays, path, f"{where}[{i}]") for i, v in enumerate(body)]
        return items if kind == "list" else tuple(items)
    if not isinstance(body, str) or body not in arrays:
        raise CheckpointError(f"{path} is corrupt: its header describes {where} as {node!r}, "
                              "which names no array of the file")
    array = arrays[body]
    if isinstance(array, Exception):
        raise CheckpointError(f"{where} {array}")
    if kind == "tensor":
        try:
            return Tensor.make_const(array, requires_grad=node.get("requires_grad", False))
        except NdlcError as e:
            raise CheckpointError(f"{where} is a tensor of dtype {array.dtype}, which an "
                                  f"ndlc Tensor cannot hold ({e})") from None
    return array if kind == "array" else array[()]


def _entry(node, path, where):
    """(kind, body) of a header node: one of the kinds `_encode` writes, or a CheckpointError."""
    entries = [(k, v) for k, v in node.items() if k != "requires_grad"]
    if len(entries) != 1:
        raise CheckpointError(f"{path} is corrupt: its header describes {where} as {node!r}")
    kind, body = entries[0]
    shapes = {"dict": list, "list": list, "tuple": list, "tensor": str, "array": str, "scalar": str}
    if kind not in shapes:
        raise CheckpointError(f"{path} is corrupt: {where} is of unknown kind {kind!r}")
    if not isinstance(body, shapes[kind]) or (kind == "dict" and not all(  # keys as _encode allows them
            isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))
            and not isinstance(item[0], bool) for item in body)):
        raise CheckpointError(f"{path} is corrupt: its header describes {where} as {node!r}")
    return kind, body


def _write_atomically(path, arrays):
    """np.savez to a temporary file in `path`'s folder, fsync, rename over `path`, fsync the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror} ({folder})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _file_mode(path))
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as e:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(e, OSError):  # a full disk, or `path` a folder: the old file stays whole
            raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}; any file there is "
                                  "left as it was") from None
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def _file_mode(path):
    """The permissions the file would get from open(): the old file's, else 0o666 less the umask
    (mkstemp's own 0o600 would hide a checkpoint from the rest of a team)."""
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
