"""Check mode (NDLC_CHECK=1, `ndl.compile(..., check=True)`): which kernel computes a wrong value.

The compiled program runs once on the real inputs, without updating state in place, keeping
every buffer; the reference interpreter runs the graph the kernels were fused from (the
`decomposed` stage). Buffers are named after that graph's values, so each kernel's outputs compare
with the interpreter's values, kernel by kernel in schedule order: the first that differs beyond
tolerance is reported with its text, the graph nodes it fuses, the user's source lines that
created them, and its largest differences. Row-local temporaries exist in no array and are
checked through what reads them.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import NdlcError
from ..ir.interpreter import run
from ..ir.printer import value_names

RTOL, ATOL = 1e-3, 1e-4  # atol is relative to the largest magnitude the kernel reads or writes
# (a sum that cancels to ~0 is as exact as its terms, not as its result)


class CheckError(NdlcError, AssertionError):
    """A compiled kernel's output differs from the interpreter's; the message says which and where."""


@dataclass
class Divergence:
    kernel: object
    buffer: str
    got: np.ndarray
    want: np.ndarray
    sources: list

    def __str__(self):
        diff = np.abs(self.got.astype(np.float64) - self.want.astype(np.float64))
        worst = np.argsort(diff, axis=None)[::-1][:3]
        lines = [f"kernel {self.kernel.name} computes %{self.buffer} wrong: max |difference| "
                 f"{diff.max():.3g} (expected magnitude {np.abs(self.want).max():.3g})"]
        for flat in worst:
            index = np.unravel_index(flat, diff.shape) if diff.ndim else ()
            lines.append(f"  at {tuple(int(i) for i in index)}: got {self.got[index]!r}, expected {self.want[index]!r}")
        lines.append("it fuses: " + ", ".join(self.kernel.fused))
        lines += [f"  {node} (at {loc})" for node, loc in self.sources]
        lines.append(str(self.kernel))
        return "\n".join(lines)


def check_program(program, graph, arrays):
    """The first kernel of `program` (runtime.Program) whose outputs differ from the interpreter's
    on `arrays`, as a Divergence; None when every kernel agrees."""
    expected = run(graph, arrays)
    names = value_names(graph)
    by_name = {names[v]: array for v, array in expected.items()}
    nodes = {names[node.result]: node for node in graph.nodes}
    outputs = dict(zip(program.kernels.outputs, program.run(*arrays)))
    for kernel in program.kernels.kernels:
        read = [by_name[name] for name in kernel.reads() if name in by_name]
        scale = max((float(np.max(np.abs(a), initial=0.0)) for a in read if a.dtype.kind == "f"), default=0.0)
        for buffer in kernel.outputs():
            got = program.storage.get(buffer, outputs.get(buffer))
            want = by_name.get(buffer)
            if got is None or want is None or program.kernels.buffers[buffer].kind == "local":
                continue
            if not _close(got, want, scale):
                return Divergence(kernel, buffer, got, want, _sources(kernel, nodes))
    return None


def kernel_sources(kernel, graph):
    """(node description, user source line) of the nodes of `graph` (the one the kernels were
    fused from) that `kernel` fuses."""
    names = value_names(graph)
    return _sources(kernel, {names[node.result]: node for node in graph.nodes})


def _sources(kernel, nodes):
    """(node description, user source line) for each graph node the kernel fuses that has one."""
    found = []
    for member in kernel.fused:
        node = nodes.get(member.split(" ", 1)[0].lstrip("%"))
        if node is not None and node.loc:
            found.append((member, node.loc))
    return found


def _close(got, want, scale) -> bool:
    if got.shape != want.shape:
        return False
    if want.dtype.kind not in "fc":
        return np.array_equal(got, want)
    scale = max(scale, float(np.max(np.abs(want), initial=0.0)), 1e-30)
    return bool(np.allclose(got, want, rtol=RTOL, atol=ATOL * scale, equal_nan=True))
