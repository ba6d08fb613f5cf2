"""A compiled program: its buffers, allocated once and reused, and one native call per run."""
import collections
import ctypes
import functools
import math
import sys
import threading

import numpy as np

from ..ir.dot import graph_dot
from ..errors import NdlcError, ShapeError
from ..ir.kernel import ENTRY, BufferKind
from ..ir.parser import parse
from ..ir.types import TensorType, numpy_dtype
from . import libraries, trampoline
from .check import check_program, kernel_sources
from .native import NativeModule
from .steady import build_steady
from .team import Team, most_threads

ALIGNMENT = 64
PAGE = 4096  # the span of the address bits a load is first matched against earlier stores by
_RESIDUES = np.arange(0, PAGE, ALIGNMENT, dtype=np.int64)  # the starts apart_empty chooses from


class BoundsError(NdlcError, IndexError):
    """Compiled with bounds checks (NDLC_DEBUG=1, debug=True), a kernel accessed memory outside a
    buffer: the message names the kernel, the buffer, the graph nodes and the user's lines."""


_native_calls = ctypes.c_int64(0)  # counted by the native call's trampoline, else by the run (steady.py too)


def native_calls() -> int:
    """How many native entry-point calls this process made (a test proves one per run)."""
    return _native_calls.value


def address(array: np.ndarray) -> int:
    """The address of a contiguous array's data: through a ctypes view of its buffer where it is
    writeable (0.3 us), else numpy's `ctypes.data` (1.7 us, and a step passes dozens of arrays)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError):  # read-only, or no bytes
        return array.ctypes.data


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ALIGNMENT-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def apart_empty(shape, dtype, beside) -> np.ndarray:
    """aligned_empty's array; one of a page or more starts as far as ALIGNMENT allows from the
    addresses `beside` (the arrays its kernels read and write) modulo PAGE: a load whose address
    matches an earlier store's in its low 12 bits waits for it (4K aliasing: LayerNorm 4096x1024,
    x at page+16, its output at page+64 1.0 ms, at page+2048 0.79 ms)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < PAGE or not beside:
        return aligned_empty(shape, dtype)
    apart = (_RESIDUES[:, None] - np.array(beside, np.int64)) % PAGE
    residue = int(_RESIDUES[np.minimum(apart, PAGE - apart).min(1).argmax()])
    raw = np.empty(nbytes + PAGE, np.uint8)
    start = (residue - raw.ctypes.data) % PAGE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


class Program:
    """Runs a kernel program: `run(*arrays)` -> list of output arrays; `ir(stage)` -> text.

    Temporaries and constants live in arrays allocated here once; inputs are passed by pointer
    (copied only when not C-contiguous), the last run's held so that the same array passed again
    keeps its pointer (a step's state, a batch reused; its shape and dtype checked again); outputs
    are arrays no one else holds, so results never alias a later run's: an output array of the
    last two runs that nothing references any more (the caller dropped it, and no view of it lives)
    is written again, since fresh large arrays cost page faults on every run (four 16 MB outputs:
    17 ms fresh, 6.5 ms reused), and a loop that holds the last result while it calls again
    (`loss = step(x, y)`) drops the one before; the exceptions are the new state values (the last
    `kernels.updates` outputs): with `update_state`, those the schedule allows
    (`kernels.in_place`) are written into the state input's own array, which is then the result;
    the others go to buffers reused across runs, which the caller stores into the state before
    the next run. `run(..., into={output: array})`
    has the kernels write those outputs straight into the caller's arrays (a distributed step's
    gradients into its flat all-reduce buffer), or copies them there when no kernel computes them.
    `steady(*arrays)` is `run(*arrays, update_state=True)` for a call that repeats the last, in
    code generated for the program (steady.py); a compiled call's entry has the same code written
    into it."""

    def __init__(self, kernels, llvm_program, stages, profile=False, source=None, debug=False, native=None,
                 shapes=None):
        """`native`: the NativeModule linked already, and `kernels` a program_cache.StoredProgram
        whose kernels are parsed only when read (a program from the program cache, whose BLAS
        calls were checked when it was compiled). `shapes`: the graph's output shapes, where an
        output the kernels compute smaller is returned as a read-only broadcast view of it
        (passes/broadcast_outputs.py; `views`)."""
        if native is None:
            libraries.check_gemms(kernels)
        count, calls_blas, team = (kernels.kernel_count, kernels.calls_blas, kernels.team) if native else \
            (len(kernels.kernels), any(k.gemm for k in kernels.kernels), most_threads(kernels))
        self.kernels = kernels
        self._source = source  # the graph the kernels were fused from, or a function making it
        self.stages = stages
        self.native = native or NativeModule(llvm_program, ENTRY)
        self.slots = {name: i for i, name in enumerate(kernels.buffers)}
        self.pointers = (ctypes.c_void_p * max(1, len(self.slots) + profile + debug))()
        self.violation = np.zeros(3, np.int64) if debug else None
        if debug:  # bounds checks record the first access out of bounds here (codegen/llvm.py)
            self.pointers[len(self.slots) + profile] = self.violation.ctypes.data
        self.stamps = np.zeros(count + 1, np.int64) if profile else None
        if profile:  # the code writes the cycle counter around each kernel here (codegen/llvm.py)
            self.pointers[len(self.slots)] = self.stamps.ctypes.data
            self.kernel_cycles = np.zeros(count, np.int64)
            self.native_seconds = 0.0
        split = len(kernels.outputs) - kernels.updates
        reused = [name for name in kernels.outputs[split:] if name not in kernels.outputs[:split]]
        owned = [name for name, buffer in kernels.buffers.items() if buffer.kind in (BufferKind.TEMP, BufferKind.CONST)]
        arrays = self._arena(kernels.buffers, owned + reused)
        self.storage = {name: arrays[name] for name in owned}
        for name in owned:
            if kernels.buffers[name].kind == BufferKind.CONST:
                self.storage[name][...] = kernels.constants[name]
        self.input_types = [TensorType(kernels.buffers[n].shape, kernels.buffers[n].dtype)
                            for n in kernels.inputs]
        # (name, pointer slot, shape, numpy dtype) of each input, in order
        self.input_slots = [(n, self.slots[n], t.shape, t.np_dtype) for n, t in zip(kernels.inputs, self.input_types)]
        # the array bound to each input by the last run, held so that its address stays valid:
        # the same object passed again (a state tensor's array, a batch reused) keeps its pointer
        self.bound = [None] * len(self.input_slots)
        self.input_addresses = {}  # input name -> the address of its bound array
        self.distinct_inputs = None  # whether no two bound inputs share an address (None: not known)
        # (update output, its state input's position and name) of each in-place update
        self.in_place = [(out, kernels.inputs.index(state), state) for out, state in kernels.in_place.items()]
        self.reused = {name: arrays[name] for name in reused}
        self.reused_addresses = {name: array.ctypes.data for name, array in self.reused.items()}
        self.distinct_outputs = len(set(kernels.outputs)) == len(kernels.outputs)
        # output position -> the shape it is returned in, a broadcast of what the kernels compute
        self.views = {i: tuple(shape) for i, (name, shape) in enumerate(zip(kernels.outputs[:split], shapes or ()))
                      if tuple(shape) != kernels.buffers[name].shape}
        self.table = ctypes.addressof(self.pointers)
        self.counted = ctypes.c_int64(0)  # the native calls of this program (`calls`)
        self.native_call = self.native.entry(self.table, [ctypes.addressof(c) for c in (self.counted, _native_calls)])
        self.counts_itself = trampoline.used(self.native_call)  # else a run adds to both counts
        # whether the table holds a steady run's pointers: the states', the reused outputs' and each
        # other output's newest spare array's (steady.py)
        self.steady_table = False
        # output name -> [(array, address)] of the last two runs' arrays for it, newest first (_unreferenced)
        self.spare = {name: [] for name in kernels.outputs}
        self.lock = threading.Lock()
        self.calls_blas = calls_blas
        self.team = Team(kernels.name, team)
        # run(*arrays, update_state=True) for a call that repeats the last: generated after the
        # first run (steady.py) unless profiling or bounds checks read the run's records
        self.steady = self._first_steady if self.stamps is None and self.violation is None else \
            functools.partial(self.run, update_state=True)

    def _arena(self, buffers, names) -> dict:
        """Buffer name -> its array, for `names`, carved at ALIGNMENT-byte boundaries from one
        allocation (faster to make than one each, and a large one is backed by huge pages where
        the kernel allows: a first run faults far fewer pages in); the temporaries' slots point
        into it."""
        dtypes = {dtype: np.dtype(numpy_dtype(dtype)) for dtype in {buffers[name].dtype for name in names}}
        offsets, end = [], 0
        for name in names:
            offsets.append(end)
            end += -(-math.prod(buffers[name].shape) * dtypes[buffers[name].dtype].itemsize // ALIGNMENT) * ALIGNMENT
        arena = aligned_empty((end,), np.uint8)
        base, arrays = arena.ctypes.data, {}
        for name, offset in zip(names, offsets):
            buffer = buffers[name]
            arrays[name] = np.ndarray(buffer.shape, dtypes[buffer.dtype], arena, offset)
            self.pointers[self.slots[name]] = base + offset
        return arrays

    @property
    def calls(self) -> int:
        """How many native calls ran this program."""
        return self.counted.value

    @property
    def source(self):
        """The graph the kernels were fused from (check mode interprets it); a program from the
        program cache (runtime/program_cache.py) makes it on first use."""
        if callable(self._source):
            self._source = self._source()
        return self._source

    def run(self, *arrays, update_state=False, into=None):
        """The outputs of one native call on `arrays` (see the class docstring). Calls from several
        threads take turns: the pointer table and the temporaries are the program's own."""
        with self.lock:
            return self._run(arrays, update_state, into or {})

    def _first_steady(self, *arrays):
        """The first steady run: the full run, after which each output has a spare array and
        the generated function takes over."""
        results = self.run(*arrays, update_state=True)
        self.steady = build_steady(self, _native_calls)
        return results

    def _run(self, arrays, update_state, into):
        self.steady_table = False
        if len(arrays) != len(self.input_slots):
            raise ShapeError(f"@{self.kernels.name} takes {len(self.kernels.inputs)} inputs, got {len(arrays)}")
        bound, pointers, slots = self.bound, self.pointers, self.slots
        for i, (array, held, (_, _, shape, dtype)) in enumerate(zip(arrays, bound, self.input_slots)):
            if array is not held or array.shape != shape or array.dtype is not dtype and array.dtype != dtype:
                self._bind(i, array)
        outputs, known = dict(self.reused), dict(self.reused_addresses)  # output name -> array, address
        if update_state and self.in_place:
            for out, i in self._state_arrays():
                outputs[out], known[out] = bound[i], self.input_addresses[self.input_slots[i][0]]
        if into:
            placed = self._placed(into)
            outputs.update(placed)
            known.update({name: address(array) for name, array in placed.items()})
        for name in self.kernels.outputs:
            if name not in outputs:
                outputs[name], known[name] = self._unreferenced(name, outputs)
            pointers[slots[name]] = known[name]
        if self.calls_blas:  # BLAS on its calling thread: the same sums at any budget
            seconds = libraries.single_threaded_blas(self.team.run, self.native_call)
        else:
            seconds = self.team.run(self.native_call)
        if self.stamps is not None:
            self.native_seconds += seconds
            self.kernel_cycles += np.diff(self.stamps)
        if self.violation is not None and self.violation[0]:
            raise BoundsError(self._violation())
        if not self.counts_itself:
            self.counted.value += 1
            _native_calls.value += 1
        for name, array in into.items():
            if outputs[name] is not array:
                np.copyto(array, outputs[name])
        if self.distinct_outputs:
            results = [outputs[name] for name in self.kernels.outputs]
        else:
            seen, results = set(), []
            for name in self.kernels.outputs:
                results.append(outputs[name].copy() if name in seen else outputs[name])
                seen.add(name)
        for i, shape in self.views.items():
            results[i] = np.broadcast_to(results[i], shape)
        return results

    def _violation(self) -> str:
        """What the bounds checks recorded (and cleared): the kernel, the access, the graph nodes
        the kernel fuses and the user's lines that made them, and the kernel's text."""
        number, code, index = (int(v) for v in self.violation)
        self.violation[:] = 0
        kernel = self.kernels.kernels[number - 1]
        access = kernel.loads[code] if code >= 0 else kernel.stores[-code - 1]
        buffer = access.buffer
        size = kernel.local.get(buffer) or int(np.prod(self.kernels.buffers[buffer].shape))
        lines = [f"@{self.kernels.name}: kernel {kernel.name} {'loads' if code >= 0 else 'stores'} %{buffer} at "
                 f"element {index}, outside its {size} elements (a compiler bug caught by NDLC_DEBUG's bounds "
                 f"checks; the access was redirected to element 0)", "it fuses: " + ", ".join(kernel.fused)]
        if self.source is not None:
            lines += [f"  {node} (at {loc})" for node, loc in kernel_sources(kernel, self.source)]
        return "\n".join(lines + [str(kernel)])

    def _unreferenced(self, name, outputs):
        """(array, address) for output `name`: the newest of the last two runs' arrays that only
        this program still references, else a new one (kept with the newest as the spare two),
        placed apart from the bound inputs and the `outputs` given their arrays already (apart_empty)."""
        spare = self.spare[name]
        for i, (array, at) in enumerate(spare):
            # the pair's, `array`'s and getrefcount's own; views of it hold its base (aligned_empty's)
            if sys.getrefcount(array) == 3 and sys.getrefcount(array.base) == 2:
                if i:
                    spare.reverse()
                return array, at
        buffer = self.kernels.buffers[name]
        beside = [address(a) for a in (*self.bound, *outputs.values()) if a.nbytes >= PAGE]
        array = apart_empty(buffer.shape, numpy_dtype(buffer.dtype), beside)
        spare[:] = [(array, address(array))] + spare[:1]
        return spare[0]

    def _placed(self, into):
        """Output -> the caller's array the kernels write it into, for the outputs of `into`
        that a kernel computes whole (the others, and the broadcasts of `views`, are copied there
        after the run)."""
        placed, views = {}, {self.kernels.outputs[i]: shape for i, shape in self.views.items()}
        for name, array in into.items():
            buffer = self.kernels.buffers.get(name)
            if name not in self.kernels.outputs:
                raise NdlcError(f"@{self.kernels.name} has no output {name!r} to place")
            expected = TensorType(views.get(name, buffer.shape), buffer.dtype)
            if (array.shape != expected.shape or array.dtype != expected.np_dtype
                    or not array.flags.c_contiguous or not array.flags.writeable):
                raise ShapeError(f"@{self.kernels.name}: output {name} needs a writeable C-contiguous "
                                 f"{expected}, got {array.dtype.name}{list(array.shape)}")
            if buffer.kind == BufferKind.OUTPUT and name not in views:
                placed[name] = array
        return placed

    def _bind(self, i, array):
        """Point input `i` at `array` (checked, made contiguous): kept as the input's bound array
        until another is passed."""
        name, slot, shape, dtype = self.input_slots[i]
        if type(array) is not np.ndarray:
            array = np.asarray(array)
        if array.shape != shape or array.dtype != dtype:
            raise ShapeError(f"@{self.kernels.name} input {i} ({name}) has type "
                             f"{array.dtype.name}{list(array.shape)}, expected {self.input_types[i]}")
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        self.bound[i] = array
        self.pointers[slot] = self.input_addresses[name] = address(array)
        self.distinct_inputs = None

    def _state_arrays(self) -> list:
        """(update output, state input position) for the in-place updates whose state array is
        writeable and shares its memory with no other input: the output is written there."""
        if self.distinct_inputs is None:  # inputs were rebound: the usual case is checked without counting
            self.distinct_inputs = len(set(self.input_addresses.values())) == len(self.input_addresses)
        shared = None if self.distinct_inputs else collections.Counter(self.input_addresses.values())
        return [(out, i) for out, i, state in self.in_place
                if (shared is None or shared[self.input_addresses[state]] == 1) and self.bound[i].flags.writeable]

    def check(self, *arrays):
        """The first kernel whose outputs on `arrays` differ from the interpreter's (check.py's
        Divergence, printable), or None."""
        if self.source is None:
            raise NdlcError(f"@{self.kernels.name} was compiled without its source graph: nothing to check against")
        return check_program(self, self.source, arrays)

    def profile(self, top=None) -> str:
        """Time per run of each kernel (from the cycle counter, scaled to the measured time of
        the native calls), largest first; the program must be compiled with profiling."""
        if self.stamps is None:
            raise NdlcError(f"@{self.kernels.name} was not compiled for profiling (set NDLC_PROFILE=1)")
        if not self.calls:
            raise NdlcError(f"@{self.kernels.name} has not run yet")
        total = max(int(self.kernel_cycles.sum()), 1)
        per_run = self.native_seconds / self.calls * 1e3
        lines = [f"@{self.kernels.name}: {per_run:.3f} ms per run over {self.calls} runs, "
                 f"{len(self.kernels.kernels)} kernels, {self.team}", "    ms/run  share  kernel"]
        order = np.argsort(-self.kernel_cycles, kind="stable")[:top]
        for i in order:
            kernel, share = self.kernels.kernels[i], self.kernel_cycles[i] / total
            what = "gemm " if kernel.gemm else ""
            lines.append(f"  {share * per_run:8.3f}  {share:5.1%}  {kernel.name} -> {', '.join('%' + o for o in kernel.outputs())} "
                         f"{list(kernel.extents)} {what}{', '.join(kernel.fused)}")
        return "\n".join(lines)

    def ir(self, stage: str, format="text") -> str:
        """The text of a compilation stage ('graph' is the graph as compiled; 'asm' is native).
        format="dot": Graphviz dot of a graph stage, or of a kernel stage's kernels as clusters
        around the graph nodes they fuse."""
        if stage == "asm" and format == "text":
            return self.native.assembly()
        return stage_ir(self.stages, stage, format, self.source, self.kernels, ("asm",))


def stage_ir(stages, stage, format, source, kernels, more=()) -> str:
    """A compilation stage of a program (either backend's) as text, or as Graphviz dot: a graph
    stage, or a kernel stage's kernels as clusters around the `source` graph nodes they fuse.
    `more`: stages the program makes on demand, named in the error for an unknown stage."""
    if format not in ("text", "dot"):
        raise NdlcError(f"no format {format!r} for compiled IR: text or dot")
    no_picture = KeyError(f"no picture of stage {stage!r}: format='dot' draws the graph stages and "
                          "the kernel stages (fused, scheduled, planned)")
    if stage not in stages:
        if stage in more:  # made on demand, as text only
            raise no_picture
        raise KeyError(f"no stage {stage!r}; stages: {', '.join(list(stages) + list(more))}")
    text = str(stages[stage])  # the 'llvm' stage is made on first use (codegen/llvm_program.py)
    if format == "text":
        return text
    if text.startswith("graph @"):
        return graph_dot(parse(text, verify=False))
    if text.startswith("program @") and source is not None:
        return graph_dot(source, kernels)
    raise no_picture
