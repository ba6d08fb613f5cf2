"""Graph IR -> Kernel IR: decides what fuses and builds each kernel's loop nest.

Every value gets a *definition*: a scalar expression over loads (from the value's own axes) or,
for a loop-nest op, over its accumulator. Elementwise ops build theirs from the registry's scalar
expression of the operands' definitions; views (layout ops' index maps) substitute into the loads;
loop-nest ops (reductions, matmul, conv, pooling) compose their operand maps into a body. A value
is *stored* (gets a buffer and a kernel computing its definition) only when it must be; each such
decision records why, and the kernel dump shows it:
  - graph outputs;
  - values used by several nodes, unless their definition is cheap to recompute;
  - a loop-nest result read other than elementwise at its own index (one reduction per kernel);
  - computed values read through zero-filling views (pad, dilate) or repeating views (broadcast,
    overlapping windows, matmul operands) unless cheap, and reshapes of non-contiguous views.
An elementwise consumer of a reduction becomes that kernel's epilogue.

A float loop nest whose op declares it a matrix product (`OpDef.blas`) becomes a gemm kernel: a
call of numpy's OpenBLAS per batch index (codegen/blas.py), its operands read in place as strided
matrices (a transposed view is a transposed operand, a broadcast batch axis a repeated matrix);
an operand that is computed, or a view BLAS cannot stride, is stored first. Elementwise consumers
(bias, activation) stay its epilogue, run over the product in place after each call.
NDLC_BLAS=0 (or no OpenBLAS in numpy) keeps matmul a loop nest.
"""
from dataclasses import dataclass
from typing import Optional

from ..ir.errors import NdlcError
from ..ir.printer import value_names
from ..ir.registry import ROW_MAJOR, get_op
from ..ir.scalar import ScalarExpr
from . import blas
from .indexing import Access, Affine, contiguous, injective
from .kernel import ACC, GEMMS, OP_COSTS, Buffer, Gemm, Index, Kernel, Load, Matrix, Program

CHEAP = 6  # a definition costing at most this much is recomputed rather than stored


class UnsupportedError(NdlcError):
    """The backend cannot lower this node; the message names the op and node."""


@dataclass(frozen=True)
class AccRef:
    """Leaf payload: the accumulated value of the loop nest computing `value`."""
    value: object
    dtype: str


@dataclass
class _Nest:
    extents: tuple
    reduce_count: int
    body: Optional[ScalarExpr]
    combine: Optional[str]
    gemm: Optional[Gemm] = None


def lower_to_kernels(graph, use_blas=None) -> Program:
    """The kernel program computing `graph` (inputs, then outputs, as buffers). `use_blas`:
    whether matrix products call BLAS (default: blas.enabled(), see the module docstring)."""
    return _Lowering(graph, blas.enabled() if use_blas is None else use_blas).run()


def _leaf(payload):
    return ScalarExpr("arg", payload=payload)


def _leaves(expr):
    seen, found = set(), []

    def visit(e):
        if id(e) in seen:
            return
        seen.add(id(e))
        if e.prim == "arg":
            found.append(e.payload)
        for a in e.args:
            visit(a)
    visit(expr)
    return found


def _map_leaves(expr, fn):
    memo = {}

    def rebuild(e):
        if id(e) not in memo:
            memo[id(e)] = fn(e.payload) if e.prim == "arg" else ScalarExpr(
                e.prim, [rebuild(a) for a in e.args], e.payload)
        return memo[id(e)]
    return rebuild(expr)


def _positions(expr, index):
    """`expr` with its 'index' primitives (element positions) read through `index`."""
    memo = {}

    def rebuild(e):
        if id(e) not in memo:
            memo[id(e)] = _leaf(index) if e.prim == "index" else e if not e.args else ScalarExpr(
                e.prim, [rebuild(a) for a in e.args], e.payload)
        return memo[id(e)]
    return rebuild(expr)


def _cost(expr):
    seen = set()

    def visit(e):
        if id(e) in seen:
            return 0
        seen.add(id(e))
        if e.prim == "arg":
            return float("inf") if isinstance(e.payload, AccRef) else 0
        own = 0 if e.prim == "const" else OP_COSTS.get(e.prim, 1)
        return own + sum(visit(a) for a in e.args)
    return visit(expr)


def _layout(r, c, rows, cols):
    """(leading dimension, transposed) for BLAS to read a rows x cols matrix whose element (i, j)
    is at r*i + c*j: row-major (c == 1) or column-major (r == 1), with lines that do not overlap;
    None otherwise. Strides along axes of one element do not matter."""
    if (c == 1 or cols == 1) and (rows == 1 or r >= cols):
        return (r if rows > 1 else cols), False
    if (r == 1 or rows == 1) and (cols == 1 or c >= rows):
        return (c if cols > 1 else rows), True
    return None


def _accs(expr):
    return {p for p in _leaves(expr) if isinstance(p, AccRef)}


class _Lowering:
    def __init__(self, graph, use_blas):
        self.graph, self.use_blas = graph, use_blas
        self.names = value_names(graph)
        self.uses = {}
        for v in [v for node in graph.nodes for v in node.operands] + list(graph.outputs) \
                + list(graph.updates.values()):  # a result read by a node and also returned: 2 uses
            self.uses[v] = self.uses.get(v, 0) + 1
        self.buffers, self.stored = {}, {}
        self.defs, self.members, self.nests = {}, {}, {}
        self.kernels, self.constants = [], {}

    def run(self) -> Program:
        inputs = []
        for v in self.graph.inputs:
            kind = "const" if v.kind == "const" else "input"
            self._bind_buffer(v, kind)
            if kind == "const":
                self.constants[self.stored[v]] = self.graph.constants[v]
            else:
                inputs.append(self.stored[v])
        for node in self.graph.nodes:
            v = node.result
            self.defs[v] = self._define(node)
            if self.uses.get(v, 0) > 1 and _cost(self.defs[v]) > CHEAP:
                self._store(v, f"used by {self.uses[v]} nodes")
        results = list(self.graph.outputs) + list(self.graph.updates.values())
        outputs = [self._store_output(v) for v in results]
        return Program(self.graph.name, self.buffers, self.kernels, inputs, outputs, self.constants,
                       tuple(self.stored[state] for state in self.graph.updates))

    # ---- definitions ------------------------------------------------------------------------
    def _define(self, node):
        opdef = get_op(node.op)
        types = [v.type for v in node.operands]
        if opdef.scalar is not None:
            d = opdef.scalar(*self._elementwise_operands(node), **node.attrs)
            d = _positions(d, Index(contiguous(node.result.shape)))
        elif opdef.index_map is not None:
            d = self._view(node, opdef.index_map(types, node.result.type, **node.attrs))
        elif opdef.loop_nest is not None:
            d = self._loop_nest(node, opdef, opdef.loop_nest(types, node.result.type, **node.attrs))
        else:
            raise self._unsupported(node)
        self.members[node.result] = self._operand_members(node) + (self._describe(node),)
        return d

    def _unsupported(self, node):
        return UnsupportedError(f"the CPU backend cannot lower {self._describe(node)}: op {node.op} "
                               "declares no scalar expression, index map, loop nest or decomposition")

    def _elementwise_operands(self, node):
        """Operand definitions; all but the first reduction among them are stored first."""
        first = None
        for v in node.operands:
            accs = _accs(self.defs[v])
            if accs and first is not None and accs != first:
                self._store(v, "a kernel holds one reduction")
            elif accs:
                first = accs
        return [self.defs[v] for v in node.operands]

    def _readable(self, node, operand, index_map, extents):
        """The operand's definition, stored first where reading it through `index_map` from loops
        of `extents` would be wrong or wasteful."""
        d = self.defs[operand]
        if _accs(d):
            return self._store(operand, f"read by {node.op} (a reduction result feeds only "
                                        "elementwise epilogues)")
        if index_map is ROW_MAJOR:
            return d
        if any(ax.guarded for ax in index_map) and not self._is_load(d):
            return self._store(operand, f"read through {node.op}'s zero-filling index map")
        if not injective(index_map, extents) and _cost(d) > CHEAP:
            return self._store(operand, f"{node.op} reads elements repeatedly")
        return d

    def _view(self, node, index_map):
        (operand,) = node.operands
        shape = node.result.shape
        d = self._readable(node, operand, index_map, shape)
        if index_map is ROW_MAJOR:
            viewed = self._reshape(d, operand.shape, shape)
            if viewed is None:
                d = self._store(operand, "reshaped but not contiguous")
                viewed = self._reshape(d, operand.shape, shape)
            return viewed
        return self._through(d, index_map, operand.shape, len(shape))

    def _loop_nest(self, node, opdef, nest):
        extents = node.result.shape + tuple(nest.reduce_extents)
        if self.use_blas and opdef.blas and node.result.dtype in GEMMS and 0 not in extents:
            self.nests[node.result] = self._gemm(node, nest, extents)
        else:
            args = [self._through(self._readable(node, v, m, extents), m, v.shape, len(extents))
                    for v, m in zip(node.operands, nest.maps)]
            body = nest.body(*args) if nest.body else args[0]
            self.nests[node.result] = _Nest(extents, len(nest.reduce_extents), body, nest.combine)
        acc = _leaf(AccRef(node.result, node.result.dtype))
        return nest.epilogue(acc) if nest.epilogue else acc

    def _gemm(self, node, nest, extents):
        """A matrix-product nest (loops batch..., m, n | k: see OpDef.blas) as a BLAS call."""
        m, n, k = len(extents) - 3, len(extents) - 2, len(extents) - 1
        matrices = []
        for v, index_map, (rows, cols) in zip(node.operands, nest.maps, ((m, k), (k, n))):
            matrix = self._matrix(v, index_map, extents, rows, cols)
            if matrix is None:
                computed = "a computed value" if not self._is_load(self.defs[v]) else "a view BLAS cannot stride"
                self._store(v, f"{node.op} hands it to BLAS as a matrix ({computed})")
                matrix = self._matrix(v, index_map, extents, rows, cols)
            matrices.append(matrix)
        return _Nest(node.result.shape, 0, None, None, Gemm(*matrices, extents[m], extents[n], extents[k]))

    def _matrix(self, v, index_map, extents, rows, cols):
        """Operand `v` as a BLAS Matrix over loop axes (rows, cols), or None where it is computed
        or its elements are not a strided matrix with one unit stride."""
        if not self._is_load(self.defs[v]):
            return None
        load = self._through(self.defs[v], index_map, v.shape, len(extents)).payload
        access = load.access.specialised(extents)
        layout = _layout(access.form.coeffs[rows], access.form.coeffs[cols], extents[rows], extents[cols])
        if access.step != 1 or access.guards or layout is None:
            return None
        batch = len(extents) - 3
        offset = Access(Affine(access.form.coeffs[:batch] + (0,) * 3, access.form.const))
        return Matrix(load.buffer, offset, *layout)

    def _through(self, d, index_map, shape, nvars):
        return _map_leaves(d, lambda leaf: _leaf(leaf.with_access(leaf.access.through(index_map, shape, nvars))))

    def _reshape(self, d, old, new):
        accesses = {leaf: leaf.access.reshape(old, new) for leaf in _leaves(d)}
        if any(a is None for a in accesses.values()):
            return None
        return _map_leaves(d, lambda leaf: _leaf(leaf.with_access(accesses[leaf])))

    @staticmethod
    def _is_load(d):
        return d.prim == "arg" and isinstance(d.payload, Load)

    # ---- storing ------------------------------------------------------------------------------
    def _bind_buffer(self, v, kind, name=None):
        name = name or self.names[v]
        self.buffers[name] = Buffer(name, v.shape, v.dtype, kind)
        self.stored[v] = name
        self.defs[v] = _leaf(Load(name, v.dtype, contiguous(v.shape)))
        self.members[v] = ()
        return self.defs[v]

    def _store(self, v, why, kind="temp", name=None):
        """Give `v` a buffer and a kernel computing its definition; later reads load it."""
        if v in self.stored and name is None:
            return self.defs[v]
        d, fused = self.defs[v], self.members[v]
        accs = _accs(d)
        if accs:
            (acc,) = accs
            nest = self.nests.pop(acc.value)
            body = nest.body
            epilogue = None if d.prim == "arg" else _map_leaves(d, lambda p: _leaf(ACC) if p == acc else _leaf(p))
        else:
            nest, body, epilogue = _Nest(v.shape, 0, None, None), d, None
        self._bind_buffer(v, kind, name)
        self.kernels.append(self._kernel(nest, body, epilogue, self.stored[v], v, fused, why))
        return self.defs[v]

    def _store_output(self, v):
        kind = self.buffers[self.stored[v]].kind if v in self.stored else None
        if kind == "temp":
            self.buffers[self.stored[v]].kind = "output"
        elif kind in ("input", "const"):  # a fresh name: node results are numbered, inputs are not
            self._store(v, "graph output (a copy of an input)", "output", str(len(self.buffers) + len(self.graph.nodes)))
        elif kind is None:
            self._store(v, "graph output", "output")
        return self.stored[v]

    def _kernel(self, nest, body, epilogue, out, v, fused, why):
        numbering = {}

        def number(payload):
            if payload == ACC:
                return _leaf(ACC)
            leaf = payload.with_access(payload.access.specialised(nest.extents))
            return _leaf(numbering.setdefault(leaf, len(numbering)))
        body = body and _map_leaves(body, number)
        epilogue = epilogue and _map_leaves(epilogue, number)
        return Kernel(f"k{len(self.kernels)}", tuple(nest.extents), nest.reduce_count, list(numbering),
                      body, out, contiguous(v.shape).specialised(nest.extents), v.dtype, nest.combine,
                      epilogue, fused, why, nest.gemm)

    # ---- naming -------------------------------------------------------------------------------
    def _describe(self, node):
        return f"%{self.names[node.result]} {node.op}"

    def _operand_members(self, node):
        result = ()
        for v in node.operands:
            if v not in self.stored:
                result += tuple(m for m in self.members.get(v, ()) if m not in result)
        return result
