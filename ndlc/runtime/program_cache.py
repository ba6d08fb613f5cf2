"""The program cache: a compiled CPU program kept on disk under its graph, so that another process
compiling the same step (a warm start) skips the passes, as XLA's persistent compilation cache does
under an HLO fingerprint. The key is the graph's text and its constants' data, what else changes
what the passes make (profiling, the thread budget, BLAS), the host (native.host_description), the
numpy version (constants are folded with it) and a fingerprint of ndlc's own sources, so that any
change to the compiler is a miss. The entry holds the program's layout (its buffers' names, dtypes,
shapes and kinds, its inputs, outputs and state updates: what the runtime allocates and binds), the
runner's plan, the disk-cache keys of the native objects it links and the name of the shared library
linked from them (runtime/shared.py), the constants' data and the planned Kernel IR text, parsed
only when something reads the kernels themselves (StoredProgram); the key is bound into it
(cache.py). An entry that does not read back (corrupt, stored under another key, a field out of
range, its objects gone) is logged and the program compiled again: never trusted.
NDLC_PROGRAM_CACHE=0 turns it off."""
import functools
import hashlib
import json
import logging
import math
import os
import threading

import numpy as np

from ..env import flag
from ..errors import NdlcError
from ..ir.checks import verification_enabled
from ..ir.kernel import ENTRY, Buffer, BufferKind
from ..ir import tiles
from ..ir.kernel_parser import parse_kernels
from ..ir.types import DTYPES, numpy_dtype
from . import cache, shared
from .native import NativeModule, host_description
from .team import most_threads

log = logging.getLogger("ndlc.cache")
SUFFIX = ".program"
_KINDS = {str(kind): kind for kind in BufferKind}


def enabled() -> bool:
    """Whether compilations read and write the program cache (NDLC_PROGRAM_CACHE, default on)."""
    return flag("NDLC_PROGRAM_CACHE", default=True)


def program_key(graph, graph_text, profile, blas, threads, blas_core) -> str:
    """The cache key of compiling `graph` (whose text is `graph_text`) for the host CPU, with
    profiling or not, matmuls calling BLAS (whose kernels are for `blas_core`) or not, for a budget
    of `threads` threads, register tiles of `tiles.registers()`."""
    digest = hashlib.sha256()
    for value in graph.inputs:
        if value in graph.constants:
            data = np.ascontiguousarray(graph.constants[value])
            digest.update(f"{value.name} {data.dtype} {data.shape}".encode())
            digest.update(data.tobytes())
    options = f"profile {profile} blas {blas} {blas_core} threads {threads} tile registers {tiles.registers()}"
    return cache.cache_key("program", graph_text, digest.hexdigest(), options, *host_description(),
                           f"numpy {np.__version__}", _sources())  # numpy folds constants (simplify)


def save(key, kernels, native):
    """Store the planned program `kernels` (a kernel.Program) and its NativeModule under `key`, in
    a thread of its own: the entry's text, the imports object and `ld` (runtime/shared.py) run
    while the program does its first step. The entry is written whole once its library is linked,
    in the cache folder of the time of the call; `finish` waits for it (a load of `key`, the exit)."""
    names = [name for name, buffer in kernels.buffers.items() if buffer.kind == BufferKind.CONST]
    data = [np.ascontiguousarray(kernels.constants[name], numpy_dtype(kernels.buffers[name].dtype)).tobytes()
            for name in names]
    layout = {"name": kernels.name, "inputs": kernels.inputs, "outputs": kernels.outputs,
              "updated": list(kernels.updated), "in_place": kernels.in_place,
              "buffers": [[b.name, b.dtype, list(b.shape), str(b.kind)] for b in kernels.buffers.values()],
              "kernels": len(kernels.kernels), "gemm": any(k.gemm for k in kernels.kernels),
              "team": most_threads(kernels)}
    manifest = {"plan": native.plan.tolist(), "calls": native.calls, "objects": native.keys,
                "constants": names, "layout": layout}
    writer = threading.Thread(target=_write, args=(key, kernels, native, manifest, b"".join(data), cache.cache_dir()),
                              name=f"ndlc-cache-{key[:8]}")  # not a daemon: the interpreter waits for it at exit
    _PENDING[key] = writer
    writer.start()


def _write(key, kernels, native, manifest, data, root):
    """Link the shared library of `native` and write the entry (`save`) in cache folder `root`."""
    try:
        text = str(kernels)
        manifest["library"] = shared.link(native.library_objects(), root)
        cache.store(key, json.dumps(manifest).encode() + b"\n" + data, text, SUFFIX, root)
    except Exception:  # a thread's error has no caller: the program is compiled again next time
        log.warning("cannot store program cache entry %s; compiling it again next time", key[:16], exc_info=True)


_PENDING = {}  # key -> the thread writing its entry


def finish(keys=None):
    """Wait for the entries of `keys` (all where None) to be written."""
    for key, writer in list(_PENDING.items()):
        if keys is None or key in keys or not writer.is_alive():
            writer.join()
            if _PENDING.get(key) is writer:
                del _PENDING[key]


def load(key):
    """(the planned program with its constants, a StoredProgram, and the manifest of its native
    code) stored under `key`, or None (no entry, or one that does not read back: logged). An entry
    still being written is waited for."""
    finish((key,))
    found = cache.load(key, SUFFIX)
    if found is None:
        return None
    payload, text = found
    try:
        header, _, data = payload.partition(b"\n")
        manifest = json.loads(header)
        if not isinstance(manifest, dict):
            raise ValueError("its manifest is not an object")
        kernels = StoredProgram(key, text, manifest["layout"])
        kernels.constants = _constants(kernels, manifest["constants"], data)
        _check_native(manifest, kernels.kernel_count, _sizes(kernels))
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring program cache entry %s: %s; compiling again", key[:16], e)
        return None
    return kernels, manifest


class StoredProgram:
    """A planned kernel.Program from the program cache: what the runtime reads to allocate and
    bind its buffers (name, buffers, inputs, outputs, updated, in_place, constants, and the
    kernels' count and whether one calls BLAS) comes from the entry's layout; the kernels are
    parsed from its Kernel IR text on first use (a stage's dot picture, check or profile mode),
    so a warm start parses none of it. `str()` is that text: the 'planned' stage."""

    def __init__(self, key, text, layout):
        self.key, self.text = key, text
        if not isinstance(layout, dict):
            raise ValueError("its layout is not an object")
        self.name = _typed(layout["name"], str, "name")
        self.buffers = {}
        for entry in _typed(layout["buffers"], list, "buffers"):
            name, dtype, shape, kind = _typed(entry, list, "a buffer")
            if not (isinstance(name, str) and dtype in DTYPES and _counts(shape) and kind in _KINDS) or name in self.buffers:
                raise ValueError(f"buffer {entry!r} is not a new name, a dtype, a shape and a kind")
            self.buffers[name] = Buffer(name, tuple(shape), dtype, _KINDS[kind])
        self.inputs, self.outputs = self._names(layout["inputs"], "inputs"), self._names(layout["outputs"], "outputs")
        self.updated = tuple(self._names(layout["updated"], "updated"))
        in_place = _typed(layout["in_place"], dict, "in_place")
        self.in_place = dict(zip(self._names(list(in_place), "in_place"), self._names(list(in_place.values()), "in_place")))
        if len(self.updated) > len(self.outputs) or not set(self.updated) <= set(self.inputs):
            raise ValueError("its updated states are not among its inputs and outputs")
        self.kernel_count = _typed(layout["kernels"], int, "kernels")
        self.calls_blas = _typed(layout["gemm"], bool, "gemm")
        self.team = _typed(layout["team"], int, "team")
        if self.team < 1:
            raise ValueError(f"its team of {self.team} threads is not a count")
        self.constants = {}

    def _names(self, names, what) -> list:
        if not isinstance(names, list) or not all(isinstance(n, str) and n in self.buffers for n in names):
            raise ValueError(f"its {what} are not names of its buffers")
        return names

    @property
    def updates(self) -> int:
        return len(self.updated)

    @functools.cached_property
    def parsed(self):
        """The kernel.Program of the entry's text, which must have the layout's buffers."""
        try:
            program = parse_kernels(self.text, verify=verification_enabled())
        except NdlcError as e:
            raise NdlcError(f"program cache entry {self.key[:16]} (in {cache.cache_dir()}): its Kernel IR does not "
                            f"parse, though its checksum holds: {e}; delete the entry") from e
        layout = (self.name, self.buffers, self.inputs, self.outputs, self.updated, self.in_place, self.kernel_count)
        if (program.name, program.buffers, program.inputs, program.outputs, program.updated, program.in_place,
                len(program.kernels)) != layout:
            raise NdlcError(f"program cache entry {self.key[:16]} (in {cache.cache_dir()}): its Kernel IR has "
                            "other buffers or kernels than its layout; delete the entry")
        program.constants = self.constants
        return program

    @property
    def kernels(self) -> list:
        return self.parsed.kernels

    def __str__(self):
        return self.text


def _typed(value, kind, what):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"its {what} is not a{'n' if kind is int else ''} {kind.__name__}")
    return value


def _counts(values) -> bool:
    """Whether `values` is a list of non-negative ints."""
    return isinstance(values, list) and all(type(v) is int for v in values) and min(values, default=0) >= 0


def _sizes(kernels) -> list:
    """Each buffer's size in bytes, in slot order."""
    itemsizes = {dtype: np.dtype(numpy_dtype(dtype)).itemsize for dtype in DTYPES}
    return [math.prod(b.shape) * itemsizes[b.dtype] for b in kernels.buffers.values()]


def _check_native(manifest, kernels, sizes):
    """Raise ValueError unless the manifest's plan makes `kernels` calls, one of each of its
    `calls`, with arguments that start inside the program's buffers (`sizes`: bytes per slot)."""
    plan, calls, slots = manifest["plan"], manifest["calls"], len(sizes)
    if not _counts(plan) or len(plan) < 3:
        raise ValueError("its plan is not a list of counts")
    if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls) or not plan[0] == len(calls) == kernels:
        raise ValueError("its calls are not the plan's")
    if plan[2] != slots or not all(isinstance(k, str) for k in _typed(manifest["objects"], list, "objects")):
        raise ValueError("its plan or objects do not fit its buffers")
    if not (manifest["library"] is None or isinstance(manifest["library"], str)):
        raise ValueError("its shared library is not named by a string")
    at = 3
    for _ in calls:
        count = plan[at] if at < len(plan) else -1
        pairs = plan[at + 1:at + 1 + 2 * count]
        if not 0 <= count <= plan[1] or len(pairs) != 2 * count:
            raise ValueError(f"its plan's call at {at} has {count} arguments, past the plan's end or its most")
        for slot, offset in zip(pairs[::2], pairs[1::2]):
            if slot >= slots or not (offset < sizes[slot] or offset == 0):
                raise ValueError(f"its plan's call at {at} reads buffer slot {slot} at byte {offset}, outside it")
        at += 1 + 2 * count
    if at != len(plan):
        raise ValueError(f"its plan has {len(plan) - at} numbers after its last call")


def restore(manifest):
    """The NativeModule the manifest records, loaded from the disk cache (its shared library, else
    its objects); None where neither is there (then the program is compiled again, reusing the
    kernels still cached)."""
    try:
        native = NativeModule.restore(manifest["objects"], manifest["plan"], manifest["calls"], ENTRY,
                                      manifest["library"])
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


def _sources() -> str:
    """A hash of every source file of the ndlc package: any edit to the compiler is a new key."""
    return tree_hash(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.lru_cache(maxsize=None)
def tree_hash(root) -> str:
    """A hash of the .py files under `root` by path, size and modification time, as Python's own
    bytecode cache checks a source: 1.3-2.5 ms for ndlc's, where reading them took 3-16 ms of a
    ~90 ms warm start (min-median of 30, load 5); walked with os.scandir and named relative by
    hand, 0.6 ms where os.walk and os.path.relpath took 1.5-1.8 (min of 20)."""
    lines = []

    def walk(folder, prefix):
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":  # compiled files, not sources
                        walk(entry.path, f"{prefix}{entry.name}/")
                elif entry.name.endswith(".py"):
                    stat = entry.stat()
                    lines.append(f"{prefix}{entry.name} {stat.st_size} {stat.st_mtime_ns}\n")
    walk(root, "")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()
