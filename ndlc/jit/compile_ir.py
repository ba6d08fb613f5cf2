"""`ndlc.compile_ir(text)`: a graph given as text (a `traced`, `grad`, `simplified` or
`decomposed` stage as dumped, or one edited by hand) compiled into a callable on numpy arrays.

The text carries no data, so the callable takes every input of the graph's signature, in order
or by name: batch inputs, state inputs and captured constants alike. It returns the graph's
outputs followed by the new value of each state input (`return ..., new %w = %17`, in that
order) as fresh arrays, and changes none of its arguments: the caller decides whether new state
replaces old (`names` says which result is which)."""
import numpy as np

from ..errors import NdlcError, ShapeError
from ..ir.parser import parse
from ..ir.printer import value_names
from ..runtime.check import CheckError
from .compile import compile_graph


def compile_ir(text, check=False):
    """The graph of `text` (IRParseError names the line and column of malformed text), compiled
    for the host CPU. `check`: each call also compares every kernel with the interpreter."""
    return CompiledIR(parse(text), check)


class CompiledIR:
    """A parsed graph compiled; `inputs` are its parameter names (without %), `names` its results'
    (`out0`, ... then `new.<state input>`)."""

    def __init__(self, graph, check=False):
        for value in graph.inputs:  # the text has no data for constants: they are arguments too
            if value.kind == "const":
                value.kind = "input"
        self.graph, self.check = graph, check
        self.program = compile_graph(graph)
        printed = value_names(graph)
        self.inputs = [printed[v] for v in graph.inputs]
        self.names = [f"out{i}" for i in range(len(graph.outputs))]
        self.names += [f"new.{printed[state]}" for state in graph.updates]
        self.index_bounds = _index_bounds(graph)

    def __call__(self, *arrays, **named):
        arrays = self._arguments(arrays, named)
        for position, rows in self.index_bounds:  # as the interpreter and ndl.compile refuse them
            outside = (arrays[position] < 0) | (arrays[position] >= rows)
            if outside.any():
                raise IndexError(f"@{self.graph.name}: input %{self.inputs[position]} holds "
                                 f"{arrays[position][outside].flat[0]}, outside [0, {rows}) for its gather "
                                 f"from {rows} rows")
        if self.check:
            divergence = self.program.check(*arrays)
            if divergence is not None:
                raise CheckError(f"@{self.graph.name}: {divergence}")
        return tuple(np.array(result) for result in self.program.run(*arrays))

    def _arguments(self, arrays, named):
        """The arguments in signature order, from positional ones followed by named ones."""
        if len(arrays) > len(self.inputs):
            raise ShapeError(f"@{self.graph.name} takes {len(self.inputs)} inputs, got {len(arrays)}")
        given = dict(zip(self.inputs, arrays))
        for name, array in named.items():
            if name not in self.inputs:
                raise NdlcError(f"@{self.graph.name} has no input %{name}; inputs: "
                                f"{', '.join('%' + n for n in self.inputs)}")
            if name in given:
                raise NdlcError(f"@{self.graph.name}: input %{name} is given twice")
            given[name] = array
        missing = [f"%{n}: {v.type}" for n, v in zip(self.inputs, self.graph.inputs) if n not in given]
        if missing:
            raise NdlcError(f"@{self.graph.name} needs its inputs {', '.join(missing)}")
        return [_native(np.asarray(given[name])) for name in self.inputs]

    def ir(self, stage="planned", format="text") -> str:
        """A stage of this compilation (the graph given is its `traced` stage)."""
        return self.program.ir(stage, format=format)


def _native(array):
    """`array` in the machine's byte order (a big-endian .npy holds the same values)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _index_bounds(graph) -> list:
    """(input position, table rows) for each input that a gather takes its indices from (through
    casts and reshapes): compiled, an index outside [0, rows) would select a zero row."""
    positions = {id(v): i for i, v in enumerate(graph.inputs)}
    bounds = []
    for node in graph.nodes:
        if node.op != "gather":
            continue
        indices = node.operands[1]
        while indices.node is not None and indices.node.op in ("cast", "reshape"):
            indices = indices.node.operands[0]
        if id(indices) in positions:
            bounds.append((positions[id(indices)], node.operands[0].shape[0]))
    return bounds
