"""The compiler, top to bottom: a graph through every pass to native code, one stage a line.

    traced -> grad -> simplified -> decomposed -> fused -> scheduled -> planned -> llvm
           -> llvm_opt -> asm                                  (device "cpu")
                                                     planned -> cuda  (device "cuda")

Each stage's text is kept (`compiled.ir(stage)`) and, for the stages named in NDLC_DUMP
(comma-separated, or 'all'), written to NDLC_DUMP_DIR (default: the working directory) as
`<graph>.<n>.<stage>.txt`, n counting compilations in this process. Under NDLC_VERIFY=1 each
stage, graph or kernels, is verified and round-trips through its text form.
"""
import itertools
import logging
import os
import time

from ..ir.checks import maybe_verify, maybe_verify_kernels
from ..errors import UnsupportedError
from ..ir.printer import print_graph
from ..passes.decompose import decompose
from ..passes.fusion import fuse
from ..passes.memory import plan_memory
from ..passes.schedule import GpuTarget, schedule, schedule_gpu
from ..passes.simplify import simplify
from ..runtime import libraries
from ..runtime.native import host_target
from ..runtime.program import Program

log = logging.getLogger("ndlc.pipeline")
STAGES = ("traced", "grad", "simplified", "decomposed", "fused", "scheduled", "planned", "llvm",
          "llvm_opt", "asm", "cuda")
_COMPILATIONS = itertools.count()


def compile_graph(graph, forward=None, profile=False, device="cpu", gpu_target=None, debug=False):
    """`graph` compiled for `device` ('cpu': the host, a runtime Program; 'cuda': a CudaProgram
    on the GPU or its host emulation), ready to `run`. `forward`: the step's graph before
    backward() added adjoints (then `graph` is the 'grad' stage). `profile`: the code records
    the cycle counter around each kernel (Program.profile; CPU only). `gpu_target`: the
    schedule's view of the GPU (default: the device's own). `debug`: bounds checks on every load
    and store (Program raises BoundsError naming the kernel; CPU only)."""
    if device == "cuda":
        if debug:
            raise UnsupportedError("debug mode's bounds checks are compiled into CPU code only: "
                                   "compile with device='cpu' to use them")
        return _compile_cuda(graph, forward, gpu_target)
    from ..codegen.llvm import lower_to_llvm  # llvmlite only once something is compiled
    stages = Stages(graph.name)
    graph = _graph_stages(stages, graph, forward)
    kernels = stages.kernels("fused", fuse(graph, use_blas=libraries.blas_enabled()))
    kernels = stages.kernels("scheduled", schedule(kernels, libraries.threads()))
    kernels = stages.kernels("planned", plan_memory(kernels))
    llvm_ir = stages.text("llvm", lower_to_llvm(kernels, *host_target(), profile, debug))
    program = Program(kernels, llvm_ir, stages.texts, profile, source=graph, debug=debug)
    stages.text("llvm_opt", program.native.optimized_ir)
    if stages.wants("asm"):
        stages.text("asm", program.native.assembly())
    return program


def _compile_cuda(graph, forward, gpu_target):
    from ..codegen.cuda import lower_to_cuda
    from ..runtime.cuda import CudaProgram, default_executor
    executor = default_executor()  # first, so a missing GPU or pycuda is reported before any work
    stages = Stages(graph.name)
    kernels = cuda_kernels(stages, graph, forward, gpu_target or executor_target(executor))
    module = lower_to_cuda(kernels)
    stages.text("cuda", module.source)
    return CudaProgram(kernels, module, stages.texts, source=stages.source, executor=executor)


def cuda_kernels(stages, graph, forward, target):
    """The graph stages, then the kernels fused, scheduled for `target` (GpuTarget) and planned."""
    stages.source = _graph_stages(stages, graph, forward)
    kernels = stages.kernels("fused", fuse(stages.source, use_blas=True))
    kernels = stages.kernels("scheduled", schedule_gpu(kernels, target))
    return stages.kernels("planned", plan_memory(kernels, row_local=False))


def executor_target(executor) -> GpuTarget:
    """The CUDA schedule's view of an executor's device: the host emulation runs small blocks."""
    gpu = getattr(executor, "gpu", None)
    if gpu is None:
        return GpuTarget(multiprocessors=2, block_threads=64, blocks_per_multiprocessor=2, chunk_elements=16)
    return GpuTarget(multiprocessors=gpu.multiprocessors)


def _graph_stages(stages, graph, forward):
    """The graph stages, traced (and grad) to decomposed: the graph the kernels are fused from."""
    if forward is not None:
        stages.graph("traced", forward)
        graph = stages.graph("grad", graph)
    else:
        graph = stages.graph("traced", graph)
    graph = stages.graph("simplified", simplify(graph))
    return stages.graph("decomposed", simplify(decompose(graph)))  # once decomposed, a composite op's
    # forward and gradient share pieces (logsumexp's exponentials): simplified again, they are one


class Stages:
    """Records each stage's text and duration, verifies it under NDLC_VERIFY, dumps those NDLC_DUMP names."""

    def __init__(self, name):
        self.name, self.number = name, next(_COMPILATIONS)
        self.texts, self.seconds = {}, {}
        self.source = None  # the graph the kernels are fused from (check mode and tests read it)
        self.wanted = wanted_stages()
        self.clock = time.perf_counter()

    def graph(self, stage, graph):
        maybe_verify(graph, stage)
        self.text(stage, print_graph(graph))
        return graph

    def kernels(self, stage, program):
        maybe_verify_kernels(program, stage)
        self.text(stage, str(program))
        return program

    def wants(self, stage):
        return stage in self.wanted or "all" in self.wanted

    def text(self, stage, text):
        now = time.perf_counter()
        self.seconds[stage], self.clock = now - self.clock, now
        self.texts[stage] = text
        if self.wants(stage):
            directory = os.environ.get("NDLC_DUMP_DIR", ".")
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"{self.name}.{self.number}.{stage}.txt")
            with open(path, "w") as f:
                f.write(text + "\n")
        return text


def wanted_stages() -> set:
    """The stages NDLC_DUMP names; an unknown name is warned about once per compilation."""
    wanted = {s.strip() for s in os.environ.get("NDLC_DUMP", "").split(",") if s.strip()}
    unknown = sorted(wanted - set(STAGES) - {"all"})
    if unknown:
        log.warning("NDLC_DUMP names unknown stage(s) %s; stages: %s, all", ", ".join(unknown), ", ".join(STAGES))
    return wanted
