"""The compiler, top to bottom: a graph through every pass to native code, one stage a line.

    traced -> grad -> hoisted -> simplified -> decomposed -> fused -> scheduled -> planned -> llvm
           -> llvm_opt -> asm                                  (device "cpu")
                                                     planned -> cuda  (device "cuda")

Each stage's text is kept (`compiled.ir(stage)`) and, for the stages named in NDLC_DUMP
(comma-separated, or 'all'), written to NDLC_DUMP_DIR (default: the working directory) as
`<graph>.<n>.<stage>.txt`, n counting compilations in this process. Under NDLC_VERIFY=1 each
stage, graph or kernels, is verified and round-trips through its text form.
"""
import contextlib
import functools
import gc
import itertools
import logging
import os
import time

from ..ir.checks import maybe_verify, maybe_verify_kernels
from ..env import SettingError
from ..errors import UnsupportedError
from ..ir.printer import print_graph
from ..passes.broadcast_outputs import broadcast_outputs
from ..passes.canonical import merged_outer_loops
from ..passes.decompose import decompose
from ..passes.fusion import fuse
from ..passes.gemm_batch import folded_gemm_batches
from ..passes.memory import plan_memory
from ..passes.merge import merge_kernels
from ..passes.permuted_stores import fold_permuted_consumers
from ..passes.scan_hoist import hoist_scans
from ..passes.schedule import GpuTarget, schedule, schedule_gpu
from ..passes.simplify import simplify
from ..passes.scans import share_scans, with_bodies
from ..runtime import libraries, program_cache
from ..runtime.native import host_avx512, host_description, host_fma, host_target, prepare as prepare_llvm
from ..runtime.program import Program

log = logging.getLogger("ndlc.pipeline")
timing = logging.getLogger("ndlc.compile")  # NDLC_LOG=compile: each compilation's stage times
STAGES = ("traced", "grad", "hoisted", "simplified", "decomposed", "fused", "scheduled", "planned", "llvm",
          "llvm_opt", "asm", "cuda")
_COMPILATIONS = itertools.count()


def compile_graph(graph, forward=None, profile=False, device="cpu", gpu_target=None, debug=False, cached=True):
    """`graph` compiled for `device` ('cpu': the host, a runtime Program; 'cuda': a CudaProgram
    on the GPU or its host emulation), ready to `run`. `forward`: the step's graph before
    backward() added adjoints (then `graph` is the 'grad' stage). `profile`: the code records
    the cycle counter around each kernel (Program.profile; CPU only). `gpu_target`: the
    schedule's view of the GPU (default: the device's own). `debug`: bounds checks on every load
    and store (Program raises BoundsError naming the kernel; CPU only). `cached`: a CPU program
    compiled before may come from the program cache (runtime/program_cache.py)."""
    if device == "cuda":
        if debug:
            raise UnsupportedError("debug mode's bounds checks are compiled into CPU code only: "
                                   "compile with device='cpu' to use them")
        return _compile_cuda(graph, forward, gpu_target)
    with _older_objects_frozen():
        return _compile_cpu(graph, forward, profile, debug, cached)


@contextlib.contextmanager
def _older_objects_frozen():
    """Python's cyclic garbage collector leaves the objects older than this compilation alone
    meanwhile (gc.freeze; unfrozen after, into the oldest generation): a full collection walked
    every object of the process (numpy's, llvmlite's, the model's), 18-30 ms of a cold LeNet's or
    Transformer's compilation before its builders fork; the compilation's own objects are still
    collected, and a forked builder walks none of its parent's. Where objects are frozen already
    (by the caller, or a compilation this one runs in), nothing is frozen or unfrozen."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _compile_cpu(graph, forward, profile, debug, cached):
    """`compile_graph` for the CPU: from the program cache, else through every pass to a Program."""
    stages = Stages(graph.name)
    traced = _traced(stages, graph, forward)
    blas = libraries.blas_enabled()  # what the passes compile for, read once
    machine = blas, libraries.threads(), libraries.blas_core() if blas else ""
    key = _program_key(stages, traced, profile, machine, debug or not cached)
    restored = key and _restored(stages, traced, key, profile, machine)
    if restored:
        return restored
    prepare_llvm()  # LLVM loaded in a thread while the passes run
    source = _graph_passes(stages, traced, views=True)
    kernels = _cpu_kernels(stages, source, *machine)
    from ..codegen.llvm_program import lower_to_llvm  # after the passes: the thread has imported llvmlite
    stages.timed("import", None)  # the code generator, once per process (before the passes, it waited on
    # the thread's import of llvmlite.ir, which llvmlite's binding imports after loading LLVM's library)
    llvm_program = stages.text("llvm", lower_to_llvm(kernels, *host_target(), profile, debug, host_fma(), host_avx512()), "codegen")
    program = stages.timed("load", Program(kernels, llvm_program, stages.texts, profile, source=source, debug=debug,
                                           shapes=_shapes(traced)))
    stages.split("load", program.native.seconds)
    stages.text("llvm_opt", program.native.optimized_ir, "record")
    if stages.wants("asm"):
        stages.text("asm", program.native.assembly(), "record")
    if key:
        stages.timed("program cache", program_cache.save(key, kernels, program.native))
    program.stage_seconds = stages.seconds
    shares = " + ".join(f"{cpu:.3f}" for cpu in program.native.builder_cpu)  # LLVM's critical path, in CPU
    stages.log(f"{len(kernels.kernels)} kernels ({program.native.loader})", f"; builders' CPU s {shares}" * bool(shares))
    return program


def _cpu_kernels(stages, graph, blas, threads, blas_core):
    """The kernels of `graph` fused (matmuls calling BLAS where `blas`; epilogues reading a
    reduction in another axis order folded into its stores), gemm batches folded into rows and
    scheduled for `threads` threads (both where `blas_core`'s kernels keep their bits) and planned."""
    unmerged = stages.timed("fusion", fuse(graph, use_blas=blas, merge=False))
    kernels = stages.kernels("fused", fold_permuted_consumers(merge_kernels(unmerged)), "merge")
    kernels = folded_gemm_batches(merged_outer_loops(kernels), blas_core)
    kernels = stages.kernels("scheduled", schedule(kernels, threads, blas_core), "schedule")
    return stages.kernels("planned", plan_memory(kernels), "memory")


def _program_key(stages, graph, profile, machine, fresh):
    """The program cache's key for `graph`, or None where the cache is not used: turned off
    (NDLC_PROGRAM_CACHE=0), when every pass must run (`fresh`: debug and check modes, for
    chasing compiler bugs) or when NDLC_DUMP asks for stages to be written (the passes make them)."""
    if fresh or stages.wanted or not program_cache.enabled():
        return None
    text = stages.timed("record", str(stages.texts["grad" if "grad" in stages.texts else "traced"]))
    stages.timed("host", host_description())  # from the disk cache, else LLVM's binding imported and asked
    return stages.timed("program cache", program_cache.program_key(graph, text, profile, *machine))


def _restored(stages, graph, key, profile, machine):
    """The program stored under `key`, linked, or None: its passes' stages are made again on
    first use (`Recompute`), its planned and llvm_opt stages are the entry's own."""
    found = stages.timed("program cache", program_cache.load(key))
    native = found and stages.timed("load", program_cache.restore(found[1]))
    if not native:
        return None
    kernels = found[0]
    recompute = Recompute(graph, profile, machine)
    for stage in ("hoisted", "simplified", "decomposed", "fused", "scheduled"):
        stages.texts[stage] = LazyStage(recompute, stage)
    stages.texts["planned"] = kernels  # its text as stored: parsed only if its kernels are read
    stages.texts["llvm"] = LazyStage(recompute, "llvm")
    stages.texts["llvm_opt"] = OptimisedIR(native)
    program = stages.timed("load", Program(kernels, None, stages.texts, profile, source=recompute, native=native,
                                           shapes=_shapes(graph)))
    program.stage_seconds = stages.seconds
    stages.log(f"{kernels.kernel_count} kernels from the program cache ({native.loader})")
    return program


class Recompute:
    """The passes run again on first use, for a program from the program cache: the stages it
    skipped and, called, the graph its kernels were fused from (check mode reads it). `machine`:
    (BLAS, threads, BLAS's core) as the program was compiled for, whatever the settings are now."""

    def __init__(self, graph, profile, machine):
        self.graph, self.profile, self.machine = graph, profile, machine

    @functools.cached_property
    def stages(self):
        from ..codegen.llvm_program import lower_to_llvm
        stages = Stages(self.graph.name)
        stages.source = _graph_passes(stages, self.graph, views=True)
        kernels = _cpu_kernels(stages, stages.source, *self.machine)
        stages.text("llvm", lower_to_llvm(kernels, *host_target(), self.profile, fma=host_fma(),
                                           avx512=host_avx512()), "codegen")
        return stages

    def __call__(self):
        return self.stages.source


class LazyStage:
    """A stage's text that `Recompute` makes when it is first read."""

    def __init__(self, recompute, stage):
        self.recompute, self.stage = recompute, stage

    def __str__(self):
        return str(self.recompute.stages.texts[self.stage])


class OptimisedIR:
    """The llvm_opt stage of a program from the program cache: its objects' optimised IR, read
    from the disk cache when first asked for (a warm start loads a shared library, not the objects)."""

    def __init__(self, native):
        self.native = native

    def __str__(self):
        return self.native.optimized_ir


def _compile_cuda(graph, forward, gpu_target):
    from ..codegen.cuda import lower_to_cuda
    from ..runtime.cuda import CudaProgram, default_executor
    executor = default_executor()  # first, so a missing GPU or pycuda is reported before any work
    stages = Stages(graph.name)
    kernels = cuda_kernels(stages, graph, forward, gpu_target or executor_target(executor))
    module = lower_to_cuda(kernels)
    stages.text("cuda", module.source, "codegen")
    program = CudaProgram(kernels, module, stages.texts, source=stages.source, executor=executor)
    stages.timed("build", None)
    stages.log(f"{len(kernels.kernels)} CUDA kernels")
    return program


def cuda_kernels(stages, graph, forward, target):
    """The graph stages, then the kernels fused, scheduled for `target` (GpuTarget) and planned."""
    stages.source = _graph_stages(stages, graph, forward)
    unmerged = stages.timed("fusion", fuse(stages.source, use_blas=True, merge=False))
    kernels = stages.kernels("fused", merge_kernels(unmerged), "merge")
    kernels = stages.kernels("scheduled", schedule_gpu(kernels, target), "schedule")
    return stages.kernels("planned", plan_memory(kernels, row_local=False), "memory")


def executor_target(executor) -> GpuTarget:
    """The CUDA schedule's view of an executor's device: the host emulation runs small blocks."""
    gpu = getattr(executor, "gpu", None)
    if gpu is None:
        return GpuTarget(multiprocessors=2, block_threads=64, blocks_per_multiprocessor=2, chunk_elements=16)
    return GpuTarget(multiprocessors=gpu.multiprocessors)


def _graph_stages(stages, graph, forward):
    """The graph stages, traced (and grad) to decomposed: the graph the kernels are fused from."""
    return _graph_passes(stages, _traced(stages, graph, forward))


def _traced(stages, graph, forward):
    """The traced (and grad) stages recorded: `graph`, which the passes start from."""
    if forward is not None:
        stages.graph("traced", forward, "record")
        return stages.graph("grad", graph, "record")
    return stages.graph("traced", graph, "record")


def _shapes(graph) -> list:
    """The shapes of `graph`'s outputs: the program returns as broadcast views those it computes
    smaller (passes/broadcast_outputs.py)."""
    return [value.shape for value in graph.outputs]


def _graph_passes(stages, graph, views=False):
    """The hoisted, simplified and decomposed stages of `graph`: the graph the kernels are fused
    from. A scan's body goes through the same passes once, as a graph of its own (passes/scans.py).
    `views` (the CPU runtime): outputs that broadcast a small value are that value
    (passes/broadcast_outputs.py)."""
    graph = stages.timed("scans", share_scans(graph))  # before hoisting: it matches scans by operands
    notes = []  # each scan's work moved out of its loop, and what stays: the stage's '#' lines
    graph = stages.graph("hoisted", hoist_scans(graph, notes), "hoist", notes)
    graph = stages.graph("simplified", simplify(with_bodies(graph, simplify)), "simplify")
    decomposed = _decomposed(with_bodies(graph, _decomposed))
    return stages.graph("decomposed", broadcast_outputs(decomposed) if views else decomposed, "decompose")


def _decomposed(graph):
    """Once decomposed, a composite op's forward and gradient share pieces (logsumexp's
    exponentials): simplified again, they are one."""
    return simplify(decompose(graph))


class Stages:
    """Records each stage's text, verifies it under NDLC_VERIFY, dumps those NDLC_DUMP names, and
    times the work: `seconds` maps a pass (simplify, fusion, ..., codegen, then the native
    compiler's 'LLVM IR' (llvmlite building new kernels' IR), 'LLVM optimise', 'machine code' and 'load')
    to the time since the last one ended; 'program cache': keying, reading and writing it; 'host':
    the host CPU's description the keys hold (runtime/host.py: read from the disk cache, else asked
    of LLVM, importing and initialising llvmlite's binding); 'import': importing the code generator
    on the first compilation in a process that reaches it, after the passes (by then the thread
    `prepare_llvm` started has imported llvmlite.ir, which the import would have waited for);
    'record' is the time spent verifying and keeping the texts of stages no pass made."""

    def __init__(self, name):
        self.name, self.number = name, next(_COMPILATIONS)
        self.texts, self.seconds = {}, {}
        self.source = None  # the graph the kernels are fused from (check mode and tests read it)
        self.wanted = wanted_stages()
        self.start = self.clock = time.perf_counter()

    def graph(self, stage, graph, work, notes=()):
        """`graph` verified and kept as `stage`'s text, after `notes` as '#' lines."""
        maybe_verify(graph, stage)
        self.text(stage, GraphStage(graph, notes), work)
        return graph

    def kernels(self, stage, program, work):
        maybe_verify_kernels(program, stage)
        self.text(stage, KernelStage(program), work)
        return program

    def wants(self, stage):
        return stage in self.wanted or "all" in self.wanted

    def timed(self, work, result):
        """`result`, the time since the last stage counted as `work`'s."""
        now = time.perf_counter()
        self.seconds[work], self.clock = self.seconds.get(work, 0.0) + now - self.clock, now
        return result

    def split(self, work, parts):
        """Count `parts` ({work: seconds}, measured within `work`) as works of their own, `work` after them."""
        rest = self.seconds.pop(work) - sum(parts.values())
        self.seconds.update(parts)
        self.seconds[work] = rest

    def log(self, what, after=""):
        """One NDLC_LOG=compile line: the total time and each pass's, then `after`."""
        if timing.isEnabledFor(logging.INFO):
            parts = ", ".join(f"{work} {seconds:.3f}" for work, seconds in self.seconds.items())
            timing.info("@%s: %s compiled in %.3f s: %s%s", self.name, what, time.perf_counter() - self.start, parts,
                        after)

    def text(self, stage, text, work):
        self.timed(work, None)
        self.texts[stage] = text
        if self.wants(stage):
            directory = os.environ.get("NDLC_DUMP_DIR", ".")
            path = os.path.join(directory, f"{self.name}.{self.number}.{stage}.txt")
            try:
                os.makedirs(directory, exist_ok=True)
                with open(path, "w") as f:
                    f.write(f"{text}\n")
            except OSError as e:
                raise SettingError(f"NDLC_DUMP_DIR={directory!r}: cannot write the {stage} dump {path} "
                                   f"({e.strerror or e})") from e
        return text


class GraphStage:
    """A graph stage's text, printed on first use (no pass changes a graph it is given: each makes
    a new one): a compilation prints only the stage the program cache keys on, unless asked."""

    def __init__(self, graph, notes=()):
        self.graph, self.notes = graph, tuple(notes)

    @functools.cached_property
    def text(self) -> str:
        return "".join(f"# {note}\n" for note in self.notes) + print_graph(self.graph)

    def __str__(self):
        return self.text


class KernelStage:
    """A kernel stage's text, printed on first use from a copy of what the later passes change in
    place (each kernel's schedule and row-local temporaries, the buffers' kinds, the in-place
    updates): a compilation whose kernel stages nobody reads prints none of them."""

    def __init__(self, program):
        self.program = _copy(program)
        self.program.buffers = {name: _copy(b) for name, b in program.buffers.items()}
        self.program.kernels = [_copy(k) for k in program.kernels]
        for kernel in self.program.kernels:
            kernel.local = dict(kernel.local)
        self.program.in_place = dict(program.in_place)

    @functools.cached_property
    def text(self) -> str:
        return str(self.program)

    def __str__(self):
        return self.text


def _copy(record):
    """A shallow copy of a Kernel IR dataclass (none has a __post_init__ or slots): its fields'
    dictionary copied, 4-6x faster than dataclasses.replace, which calls the constructor with
    every field (~1 ms of each kernel stage of the Transformer: 38 kernels, 163 buffers)."""
    copied = object.__new__(type(record))
    copied.__dict__.update(record.__dict__)
    return copied


def wanted_stages() -> set:
    """The stages NDLC_DUMP names; an unknown name is warned about once per compilation."""
    wanted = {s.strip() for s in os.environ.get("NDLC_DUMP", "").split(",") if s.strip()}
    unknown = sorted(wanted - set(STAGES) - {"all"})
    if unknown:
        log.warning("NDLC_DUMP names unknown stage(s) %s; stages: %s, all", ", ".join(unknown), ", ".join(STAGES))
    return wanted
