"""Check mode (NDLC_CHECK=1, `ndl.compile(..., check=True)`): which kernel computes a wrong value.

The compiled program runs once on the real inputs, without updating state in place, keeping
every buffer. Each graph node of the source (`decomposed`) graph is then evaluated with numpy on
the values the program itself computed for its operands where it stored them, so every kernel is
judged on the very inputs it read, not on the interpreter's slightly different ones. A kernel is
flagged only where its error against a float64 evaluation of its nodes is far beyond what float32
itself makes there: the nodes are also evaluated in float32, and in float64 with every rounding
pushed by a few ulps (by a summation bound for sums and products), and the largest deviation
among those, times MARGIN, is allowed on top of a floor. A value that is ill-conditioned (a
division by a gradient that is analytically zero, which Adam turns into +-lr) moves under that
perturbation and is allowed to; a wrong lowering is not. The first kernel in schedule order that
differs is reported with its text, the graph nodes it fuses, the user's source lines that created
them, and its largest differences. Row-local temporaries exist in no array and are checked through
what reads them."""
import math
from dataclasses import dataclass

import numpy as np

from ..errors import NdlcError
from ..ir.interpreter import evaluate_node
from ..ir.kernel import BufferKind
from ..ir.printer import value_names
from ..ir.registry import get_op

RTOL, ATOL = 1e-3, 1e-4  # the floor; atol is relative to the largest magnitude the kernel reads or
# writes (a sum that cancels to ~0 is as exact as its terms, not as its result)
ULPS = 2  # rounding modelled per node, in units of its dtype's epsilon (of the terms' sum for a sum)
MARGIN = 8  # how many times the perturbed evaluations' deviation an error may reach
PUSHES = (1.0, -1.0, "random")  # each perturbed run's rounding: all up, all down, random


class CheckError(NdlcError, AssertionError):
    """A compiled kernel's output differs from the interpreter's; the message says which and where."""


@dataclass
class Divergence:
    kernel: object
    buffer: str
    got: np.ndarray
    want: np.ndarray
    sources: list
    allowed: np.ndarray = None

    def __str__(self):
        diff = np.abs(self.got.astype(np.float64) - self.want.astype(np.float64))
        worst = np.argsort(diff, axis=None)[::-1][:3]
        lines = [f"kernel {self.kernel.name} computes %{self.buffer} wrong: max |difference| "
                 f"{diff.max():.3g} (expected magnitude {np.abs(self.want).max():.3g})"]
        for flat in worst:
            index = np.unravel_index(flat, diff.shape) if diff.ndim else ()
            allowed = "" if self.allowed is None else f" (tolerance there {self.allowed[index]:.3g})"
            lines.append(f"  at {tuple(int(i) for i in index)}: got {self.got[index]!r}, "
                         f"expected {self.want[index]!r}{allowed}")
        lines.append("it fuses: " + ", ".join(self.kernel.fused))
        lines += [f"  {node} (at {loc})" for node, loc in self.sources]
        lines.append(str(self.kernel))
        return "\n".join(lines)


@dataclass
class Expected:
    """A value as float32 computes it (`single`), in float64 (`double`), and how far the float32
    and the perturbed float64 evaluations strayed from `double` (`spread`, elementwise)."""
    single: np.ndarray
    double: np.ndarray
    spread: np.ndarray


def check_program(program, graph, arrays):
    """The first kernel of `program` (runtime.Program) whose outputs differ from a float64
    evaluation of its nodes on the values it read, beyond float32's own error there, as a
    Divergence; None when every kernel agrees."""
    names = value_names(graph)
    feeds = [v for v in graph.inputs if v.kind != "const"]
    computed = {names[v]: np.asarray(a) for v, a in zip(feeds, arrays)}
    computed.update((name, array) for name, array in zip(program.kernels.outputs, program.run(*arrays)))
    computed.update((name, program.storage[name]) for name, buffer in program.kernels.buffers.items()
                    if buffer.kind == BufferKind.TEMP)
    stored = {name for kernel in program.kernels.kernels for name in kernel.outputs()
              if program.kernels.buffers[name].kind != BufferKind.LOCAL}
    expected, magnitude = evaluate(graph, names, computed, stored)
    nodes = {names[node.result]: node for node in graph.nodes}
    for kernel in program.kernels.kernels:
        scale = max((magnitude.get(name, 0.0) for name in kernel.reads()), default=0.0)
        for buffer in kernel.outputs():
            got, want = computed.get(buffer), expected.get(buffer)
            if got is None or want is None:
                continue
            bad, allowed = _differs(got, want, max(scale, magnitude.get(buffer, 0.0)))
            if bad:
                shown = want.double.astype(got.dtype) if got.dtype.kind == "f" else want.single
                return Divergence(kernel, buffer, got, shown, _sources(kernel, nodes), allowed)
    return None


def evaluate(graph, names, computed, wanted):
    """(name -> Expected for the values named in `wanted`, name -> largest float magnitude of every
    value): each node evaluated on `computed`'s arrays for its operands where there are some, else
    on its own evaluation of them; values are dropped after their last use."""
    last_use = {}
    for i, node in enumerate(graph.nodes):
        for v in node.operands:
            last_use[v] = i
    rng = np.random.default_rng(0)  # its own generator: the user's np.random state is left alone
    runs = {}  # value -> [float32 value, float64 value, perturbed float64 values...]
    for v, array in graph.constants.items():
        runs[v] = _promoted(array)
    given = {}  # name -> a computed array and its float64 copies, made once, dropped after last use
    expected, magnitude = {}, {}
    for name, array in computed.items():
        magnitude[name] = _magnitude(array)
    for i, node in enumerate(graph.nodes):
        operands = []
        for v in node.operands:
            name = names[v]
            if name in computed and name not in given:
                given[name] = _promoted(computed[name])
            operands.append(given[name] if name in computed else runs[v])
        single = evaluate_node(node, [o[0] for o in operands])
        values = [single] + _double_runs(node, [o[1:] for o in operands], rng)
        name = names[node.result]
        magnitude.setdefault(name, _magnitude(values[1]))
        if name in wanted:
            expected[name] = Expected(single, values[1], _spread(values[0], values[1], values[2:]))
        if node.result in last_use:
            runs[node.result] = values
        for v in node.operands:
            if last_use[v] == i:
                runs.pop(v, None)
                given.pop(names[v], None)
    return expected, magnitude


def _double_runs(node, operands, rng):
    """The node's float64 value and its perturbed values: each run on its own operands, its
    result's rounding (sized once, on the unperturbed operands) pushed by the run's PUSHES sign
    (random signs for 'random')."""
    first = _in_double(node, [o[0] for o in operands])
    results = [first]
    size = _rounding(node, [o[0] for o in operands], first) if first.dtype.kind == "f" else None
    for k, push in enumerate(PUSHES, 1):
        value = _in_double(node, [o[k] for o in operands])
        if size is not None:
            sign = rng.integers(0, 2, np.shape(value), np.int8) * 2 - 1 if push == "random" else push
            value = value + sign * size
        results.append(value)
    return results


def _in_double(node, operands):
    """The node's reference on float64 operands, its float result in float64 (a cast to
    float32 in the graph still rounds)."""
    opdef = get_op(node.op)
    if opdef.kind == "control":  # a scan's body is interpreted at its own types: judged in float32
        operands = [np.asarray(o).astype(v.type.np_dtype) for o, v in zip(operands, node.operands)]
    with np.errstate(all="ignore"):
        out = np.asarray(opdef.reference(*operands, **node.attrs))
    dtype = node.result.type.np_dtype
    return out.astype(np.float64) if dtype.kind == "f" else out.astype(dtype)


def _rounding(node, operands, value):
    """How far the node's own rounding may move its result: ULPS epsilons of the result, or for
    a sum over n terms (a reduction, a matmul, a convolution) of the sum of the terms' magnitudes,
    times sqrt(n) (any summation order: blocked, pairwise, a GPU's)."""
    eps = float(np.finfo(node.result.type.np_dtype).eps)
    opdef = get_op(node.op)
    if opdef.loop_nest is not None:
        nest = opdef.loop_nest([v.type for v in node.operands], node.result.type, **node.attrs)
        if nest.combine == "add":
            terms = math.prod(nest.reduce_extents)
            with np.errstate(all="ignore"):
                total = np.abs(opdef.reference(*[np.abs(o) for o in operands], **node.attrs))
            return ULPS * eps * (1 + math.sqrt(terms)) * total
    return ULPS * eps * np.abs(value)


def _promoted(array):
    """[array, then float64 copies for the float64 runs] of an array the program computed."""
    double = array.astype(np.float64) if array.dtype.kind == "f" else array
    return [array] + [double] * (len(PUSHES) + 1)


def _spread(single, double, perturbed):
    """Elementwise, the largest deviation from `double` of the float32 value and the perturbed
    ones; infinite where one of them left the finite range that `double` is in."""
    if double.dtype.kind != "f":
        return None
    with np.errstate(all="ignore"):
        deviations = [np.abs(single.astype(np.float64) - double)] + [np.abs(p - double) for p in perturbed]
        spread = np.max(deviations, axis=0)
    return np.where(np.isnan(spread), np.inf, spread)


def _differs(got, want, scale):
    """(whether `got` is wrong, what float32 rounding allows per element): wrong where it is far
    from both the float32 evaluation (beyond the floor) and the float64 one (beyond the floor
    and MARGIN times the perturbed runs' spread)."""
    if got.shape != want.single.shape:
        return True, None
    if want.single.dtype.kind not in "fc":
        return not bool(np.all((got == want.single) | (got == want.double))), None
    scale = max(scale, 1e-30)
    with np.errstate(all="ignore"):
        near_single = np.isclose(got, want.single, rtol=RTOL, atol=ATOL * scale, equal_nan=True)
        floor = ATOL * scale + RTOL * np.abs(want.double)
        allowed = floor + MARGIN * want.spread
        near_double = np.abs(got.astype(np.float64) - want.double) <= allowed
    return not bool(np.all(near_single | near_double)), allowed


def _magnitude(array) -> float:
    array = np.asarray(array)
    if array.dtype.kind != "f" or not array.size:
        return 0.0
    finite = np.abs(array[np.isfinite(array)])
    return float(finite.max(initial=0.0))


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
