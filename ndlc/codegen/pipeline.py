"""The lowering pipeline, one stage a line: traced -> grad -> simplified -> decomposed -> kernels
(which of them run on several threads decided) -> llvm.

Each stage's text is kept (`Lowered.stages`) and, for the stages named in NDLC_DUMP
(comma-separated, or 'all'), written to NDLC_DUMP_DIR (default: the working directory) as
`<graph>.<n>.<stage>.txt`, n counting compilations in this process.
"""
import itertools
import os
import time
from dataclasses import dataclass, field

from ..ir.printer import print_graph
from ..passes.decompose import decompose
from ..passes.simplify import simplify
from .kernel import Program
from .llvm import ENTRY, lower_to_llvm
from .lower import lower_to_kernels
from .memory import plan_memory
from .parallel import parallelise

_COMPILATIONS = itertools.count()


@dataclass
class Lowered:
    """A graph lowered to Kernel IR and LLVM IR, with each stage's text and time in seconds."""
    kernels: Program
    llvm_ir: str
    entry: str = ENTRY
    stages: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    profile: bool = False


class Stages:
    """Records each stage's text and duration, and dumps those NDLC_DUMP names."""

    def __init__(self, name):
        self.name, self.number = name, next(_COMPILATIONS)
        self.texts, self.seconds = {}, {}
        self.wanted = {s.strip() for s in os.environ.get("NDLC_DUMP", "").split(",") if s.strip()}
        self.clock = time.perf_counter()

    def add(self, stage, ir):
        now = time.perf_counter()
        self.seconds[stage], self.clock = now - self.clock, now
        self.texts[stage] = text = print_graph(ir) if stage in ("traced", "grad", "simplified", "decomposed") else str(ir)
        if stage in self.wanted or "all" in self.wanted:
            directory = os.environ.get("NDLC_DUMP_DIR", ".")
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"{self.name}.{self.number}.{stage}.txt")
            with open(path, "w") as f:
                f.write(text + "\n")
        return ir


def lower(graph, triple="", data_layout="", forward=None, profile=False) -> Lowered:
    """Graph IR to LLVM IR for a target (triple and data layout of the host by default).
    `forward`: the step's graph before backward() added adjoints (then `graph` is the 'grad' stage).
    `profile`: the code records the cycle counter around each kernel (runtime Program.profile)."""
    stages = Stages(graph.name)
    if forward is not None:
        stages.add("traced", forward)
        graph = stages.add("grad", graph)
    else:
        graph = stages.add("traced", graph)
    graph = stages.add("simplified", simplify(graph))
    graph = stages.add("decomposed", decompose(graph))
    kernels = stages.add("kernels", plan_memory(parallelise(lower_to_kernels(graph))))
    llvm_ir = stages.add("llvm", lower_to_llvm(kernels, triple, data_layout, profile))
    stages.texts["graph"] = stages.texts["decomposed"]
    return Lowered(kernels, llvm_ir, ENTRY, stages.texts, stages.seconds, profile)
