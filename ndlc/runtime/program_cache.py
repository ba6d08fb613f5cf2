"""The program cache: a compiled CPU program kept on disk under its graph, so that another process
compiling the same step (a warm start) skips the passes, as XLA's persistent compilation cache does
under an HLO fingerprint. The key is the graph's text and its constants' data, what else changes
what the passes make (profiling, the thread budget, BLAS), the host (native.host_description), the
numpy version (constants are folded with it) and a fingerprint of ndlc's own sources, so that any
change to the compiler is a miss. The entry holds the planned Kernel IR (read back by
parse_kernels), the constants' data, the runner's plan and the disk-cache keys of the native
objects it links; the key is bound into it (cache.py). An entry that does not read back (corrupt,
stored under another key, its objects gone) is logged and the program compiled again: never
trusted. NDLC_PROGRAM_CACHE=0 turns it off."""
import functools
import hashlib
import json
import logging
import os

import numpy as np

from ..env import flag
from ..errors import NdlcError
from ..ir.checks import verification_enabled
from ..ir.kernel import ENTRY, BufferKind
from ..ir.kernel_parser import parse_kernels
from ..ir.types import numpy_dtype
from . import cache
from .native import NativeModule, host_description

log = logging.getLogger("ndlc.cache")
SUFFIX = ".program"


def enabled() -> bool:
    """Whether compilations read and write the program cache (NDLC_PROGRAM_CACHE, default on)."""
    return flag("NDLC_PROGRAM_CACHE", default=True)


def program_key(graph, graph_text, profile, blas, threads) -> str:
    """The cache key of compiling `graph` (whose text is `graph_text`) for the host CPU, with
    profiling or not, matmuls calling BLAS or not, for a budget of `threads` threads."""
    digest = hashlib.sha256()
    for value in graph.inputs:
        if value in graph.constants:
            data = np.ascontiguousarray(graph.constants[value])
            digest.update(f"{value.name} {data.dtype} {data.shape}".encode())
            digest.update(data.tobytes())
    options = f"profile {profile} blas {blas} threads {threads}"
    return cache.cache_key("program", graph_text, digest.hexdigest(), options, *host_description(),
                           f"numpy {np.__version__}", _sources())  # numpy folds constants (simplify)


def save(key, kernels, native):
    """Store the planned program `kernels` (a kernel.Program) and its NativeModule under `key`."""
    names = [name for name, buffer in kernels.buffers.items() if buffer.kind == BufferKind.CONST]
    data = [np.ascontiguousarray(kernels.constants[name], numpy_dtype(kernels.buffers[name].dtype)).tobytes()
            for name in names]
    manifest = {"plan": native.plan.tolist(), "calls": native.calls, "objects": native.keys, "constants": names}
    cache.store(key, json.dumps(manifest).encode() + b"\n" + b"".join(data), str(kernels), SUFFIX)


def load(key):
    """(the planned program with its constants, the manifest of its native code) stored under
    `key`, or None (no entry, or one that does not read back: logged)."""
    found = cache.load(key, SUFFIX)
    if found is None:
        return None
    payload, text = found
    try:
        header, _, data = payload.partition(b"\n")
        manifest = json.loads(header)
        kernels = parse_kernels(text, verify=verification_enabled())  # the checksum and key vouch for it
        kernels.constants = _constants(kernels, manifest["constants"], data)
        if not isinstance(manifest["plan"], list) or not isinstance(manifest["calls"], list):
            raise ValueError("its plan or calls are not lists")
    except (NdlcError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring program cache entry %s: %s; compiling again", key[:16], e)
        return None
    return kernels, manifest


def restore(manifest):
    """The NativeModule the manifest records, linked from the disk cache; None where an object
    is gone (then the program is compiled again, reusing the kernels still cached)."""
    try:
        native = NativeModule.restore(manifest["objects"], manifest["plan"], manifest["calls"], ENTRY)
    except NdlcError as e:
        log.warning("a program cache entry's native code does not link: %s; compiling again", e)
        return None
    if native is None:
        log.info("a program cache entry's native code is no longer cached; compiling again")
    return native


def _constants(kernels, names, data) -> dict:
    """Constant buffer -> its array, cut from `data` in the order of `names`."""
    wanted = [name for name, buffer in kernels.buffers.items() if buffer.kind == BufferKind.CONST]
    if names != wanted:
        raise ValueError(f"it holds data for constants {names}, its program has {wanted}")
    constants, start = {}, 0
    for name in names:
        buffer = kernels.buffers[name]
        dtype = np.dtype(numpy_dtype(buffer.dtype))
        size = int(np.prod(buffer.shape, dtype=np.int64)) * dtype.itemsize
        if start + size > len(data):
            raise ValueError(f"its data ends inside constant %{name}")
        constants[name] = np.frombuffer(data, dtype, count=size // dtype.itemsize, offset=start).reshape(buffer.shape)
        start += size
    if start != len(data):
        raise ValueError(f"{len(data) - start} bytes of data after its constants")
    return constants


@functools.lru_cache(maxsize=None)
def _sources() -> str:
    """A hash of every source file of the ndlc package: any change to the compiler is a new key."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(root)
                   for name in names if name.endswith(".py"))
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()
