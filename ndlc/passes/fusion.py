"""fusion: Graph IR -> Kernel IR; decides what fuses and builds each kernel's loop nest.

Every value gets a *definition*: a scalar expression over loads (from the value's own axes) or,
for a loop-nest op, over its accumulator. Elementwise ops build theirs from the registry's scalar
expression of the operands' definitions; views (layout ops' index maps) substitute into the loads;
loop-nest ops (reductions, matmul, conv, pooling) compose their operand maps into a body. A value
is *stored* (gets a buffer and a kernel computing its definition) only when it must be; each such
decision records why, and the kernel dump shows it:
  - graph outputs;
  - values used by several nodes, unless their definition is cheap to recompute (then each kernel
    reading one computes it again, and says so: `recomputes:`);
  - a loop-nest result read other than elementwise at its own index (one reduction per kernel);
  - computed values read through zero-filling views (pad, dilate) or repeating views (broadcast,
    overlapping windows, matmul operands) unless cheap, and reshapes of non-contiguous views.
A value of one element computed without a reduction (a runtime scalar's arithmetic) is never
stored for being shared or repeated: it is loop-invariant, recomputed where read like a folded
constant. An elementwise consumer of a reduction becomes that kernel's epilogue. The kernels then
lose their unit loops (canonical.py) and merge into multi-output kernels (merge.py).

A float loop nest whose op declares it a matrix product (`OpDef.blas`) becomes a gemm kernel: a
call of numpy's OpenBLAS per batch index (runtime/libraries.py), its operands read in place as strided
matrices (a transposed view is a transposed operand, a broadcast batch axis a repeated matrix);
an operand that is computed, or a view BLAS cannot stride, is stored first. Elementwise consumers
(bias, activation) stay its epilogue, run over the product in place after each call.
Without BLAS (`use_blas` False: NDLC_BLAS=0, or no OpenBLAS in numpy), and for a product with one
row or one column (`gemm_pays`), matmul stays a loop nest.

A gather (`RowsAt`) is a kernel of its own storing its rows, loaded indirectly (Kernel IR `Indirect`): nothing
else reads through an indirect load, and merge keeps that kernel apart; a scatter_add is a Scatter kernel
(passes/scatter.py). A scan's operands are stored (read in place where contiguous) and so is its packed result:
its body is fused and merged once, and its kernels run once per step (passes/steps.py).
"""
import math
from dataclasses import dataclass, replace
from typing import Optional

from ..errors import UnsupportedError
from ..ir.indexing import Access, Affine, contiguous, injective
from ..ir.kernel import GEMMS, Buffer, BufferKind, Gemm, Kernel, Matrix, Phase, Program, Reduction, Store
from ..ir.kernel_leaves import Acc, Index, Indirect, Load
from ..ir.printer import value_names
from ..ir.registry import ROW_MAJOR, AxisIndex, get_op
from ..ir.scalar import PRIMITIVES, ScalarExpr, cost, leaves, map_leaves, postorder, transform
from .blas_layout import blas_layout, gemm_pays
from .canonical import canonical_loops
from .merge import LARGE, merge_kernels
from .scatter import scatter_definition
from .steps import step_kernels

CHEAP = 6  # a definition costing at most this much is recomputed rather than stored
# reads per element from which a loop nest's operand read across its rows is copied first; and the
# operations a loop nest would repeat (an operand's cost times its reads per element but one) from
# which a computed operand is computed once and stored, not at each read: a store and a load
COPY_READS = 8
INVARIANT = "one loop-invariant element (the compiler hoists it out of the loops)"


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


def fuse(graph, use_blas=False, merge=True) -> Program:
    """The kernel program computing `graph` (inputs, then outputs, as buffers). `use_blas`:
    whether matrix products call BLAS (see the module docstring). `merge`: False leaves the
    kernels unmerged (the pipeline runs merge_kernels itself, to time it apart)."""
    program = canonical_loops(lower(graph, use_blas))
    return merge_kernels(program) if merge else program


def lower(graph, use_blas=False) -> Program:
    """One kernel per stored value, in graph order: fusion before its loops are made canonical and merged."""
    return _Lowering(graph, use_blas).run()


def _leaf(payload):
    return ScalarExpr("arg", payload=payload)


def _positions(expr, index, done):
    """`expr` with its 'index' primitives (element positions) read through `index`; the nodes in
    `done` (operand definitions, already read through their own) are left as they are, and so is
    `expr` when it has none (most ops: a walk instead of a rebuilt copy)."""
    if not any(e.prim == "index" for e in postorder(expr, stop=lambda e: id(e) in done)):
        return expr
    return transform(expr, lambda e, args: _leaf(index) if e.prim == "index"
                     else e if not e.args else ScalarExpr(e.prim, args, e.payload),
                     stop=lambda e: id(e) in done)


def _cost(expr, cap=CHEAP):
    """A definition's operations, counted until past `cap`; infinite where it holds a reduction."""
    return cost([expr], cap, leaf=lambda payload: float("inf") if isinstance(payload, AccRef) else 0)


def _in_order(access, shape):
    """Whether `access` reads a value of `shape` as consecutive elements of its buffer."""
    return access.step == 1 and not access.guards and access.form.coeffs == contiguous(shape).form.coeffs


class _Lowering:
    def __init__(self, graph, use_blas):
        self.graph, self.use_blas = graph, use_blas
        self.names = value_names(graph)
        self.uses = {}
        for v in [v for node in graph.nodes for v in node.operands] + list(graph.outputs) \
                + list(graph.updates.values()):  # a result read by a node and also returned: 2 uses
            self.uses[v] = self.uses.get(v, 0) + 1
        self.buffers, self.stored = {}, {}
        self.defs, self.members, self.nests, self.whys = {}, {}, {}, {}  # whys: member -> its lowering's reason
        self.kernels, self.constants = [], {}
        self.recomputed = {}  # description of a node -> why each kernel reading it computes it again
        self.facts = {}  # id(definition node) -> (node, its _size, its _accs)

    def run(self) -> Program:
        inputs = []
        for v in self.graph.inputs:
            kind = BufferKind.CONST if v.kind == "const" else BufferKind.INPUT
            self._bind_buffer(v, kind)
            if kind == BufferKind.CONST:
                self.constants[self.stored[v]] = self.graph.constants[v]
            else:
                inputs.append(self.stored[v])
        for node in self.graph.nodes:
            v = node.result
            self.defs[v] = self._define(node)
            uses, cost = self.uses.get(v, 0), _cost(self.defs[v])
            if get_op(node.op).rows_at is not None:  # no other kernel then has indirect loads to keep apart
                self._store(v, f"{node.op}'s rows are copied by a kernel of their own (its indirect loads)")
            elif self._size(self.defs[v]) > LARGE:
                self._store(v, f"its definition grew past {LARGE} operations (keeps kernels small to compile)")
            elif uses > 1 and cost > CHEAP and not self._invariant(v):
                self._store(v, f"used by {uses} nodes")
            elif uses > 1 and cost > CHEAP:
                self.recomputed[self._describe(node)] = f"used by {uses} nodes, {INVARIANT}"
            elif uses > 1 and cost > 0:
                self.recomputed[self._describe(node)] = f"used by {uses} nodes, cost {cost} <= {CHEAP}"
        results = list(self.graph.outputs) + list(self.graph.updates.values())
        outputs = [self._store_output(v) for v in results]
        return Program(self.graph.name, self.buffers, self.kernels, inputs, outputs, self.constants,
                       tuple(self.stored[state] for state in self.graph.updates))

    def _size(self, expr):
        """An upper bound of a definition's cost (shared nodes counted at each use), capped just
        past LARGE: long chains are judged in linear time."""
        return self._facts(expr)[1]

    def _accs(self, expr):
        """The reductions (AccRefs) a definition reads."""
        return self._facts(expr)[2]

    def _facts(self, expr):
        """(expr, _size, _accs) of a definition, memoised per node and found in one walk:
        definitions share their operands' nodes, so each is walked once."""
        memo = self.facts
        found = memo.get(id(expr))
        if found is not None:
            return found
        for e in postorder(expr, stop=lambda e: id(e) in memo):
            if id(e) not in memo:
                own = 0 if e.prim == "arg" else PRIMITIVES[e.prim].cost
                accs = {e.payload} if e.prim == "arg" and isinstance(e.payload, AccRef) else set()
                operands = [memo[id(a)] for a in e.args]
                memo[id(e)] = (e, min(LARGE + 1, own + sum(fact[1] for fact in operands)),
                               frozenset(accs.union(*(fact[2] for fact in operands))))
        return memo[id(expr)]

    # ---- definitions ------------------------------------------------------------------------
    def _define(self, node):
        opdef = get_op(node.op)
        types = [v.type for v in node.operands]
        if node.op == "scan":
            d = self._scan(node)
        elif opdef.scatters:
            d = scatter_definition(self, node)
        elif opdef.scalar is not None:
            d = opdef.scalar(*self._elementwise_operands(node), **node.attrs)
            d = _positions(d, Index(contiguous(node.result.shape)), {id(self.defs[v]) for v in node.operands})
        elif opdef.index_map is not None:
            d = self._view(node, opdef.index_map(types, node.result.type, **node.attrs))
        elif opdef.rows_at is not None:
            d = self._rows(node, opdef.rows_at(types, node.result.type))
        elif opdef.loop_nest is not None:
            d = self._loop_nest(node, opdef, opdef.loop_nest(types, node.result.type, **node.attrs))
        else:
            raise self._unsupported(node)
        self.members[node.result] = self._operand_members(node) + (self._describe(node),)
        return d

    def _scan(self, node):
        """A scan's packed result, stored by its steps' kernels: its body fused and merged once
        (passes/steps.py), its operands read in place where they are contiguous."""
        operands = []
        for v in node.operands:
            d = self.defs[v]
            if not (self._is_load(d) and _in_order(d.payload.access, v.shape)):
                d = self._store(v, "read by a scan (each step reads its part in place)")
            operands.append((d.payload.buffer, d.payload.access.form.const))
        body = merge_kernels(canonical_loops(lower(node.attrs["body"], self.use_blas)))
        d = self._bind_buffer(node.result, BufferKind.TEMP)
        self.kernels += step_kernels(body, node, operands, self.stored[node.result], self.buffers)
        return d

    def _unsupported(self, node):
        return UnsupportedError(f"the CPU backend cannot lower {self._describe(node)}: op {node.op} "
                               "declares no scalar expression, index map, loop nest or decomposition")

    def _elementwise_operands(self, node):
        """Operand definitions; all but the first reduction among them are stored first, and so is
        a matrix product read by an op of another dtype (BLAS writes the product's own dtype)."""
        first = None
        for v in node.operands:
            accs = self._accs(self.defs[v])
            if any(self.nests[a.value].gemm is not None and a.dtype != node.result.dtype for a in accs):
                self._store(v, f"a BLAS call writes its product as {v.dtype}, {node.op} makes {node.result.dtype}")
            elif accs and first is not None and accs != first:
                self._store(v, "a kernel holds one reduction")
            elif accs:
                first = accs
        return [self.defs[v] for v in node.operands]

    def _readable(self, node, operand, index_map, extents):
        """The operand's definition, stored first where reading it through `index_map` from loops
        of `extents` would be wrong or wasteful."""
        d = self.defs[operand]
        if self._accs(d):
            return self._store(operand, f"read by {node.op} (a reduction result feeds only "
                                        "elementwise epilogues)")
        if index_map is ROW_MAJOR:
            return d
        if any(ax.guarded for ax in index_map) and not self._is_load(d):
            return self._store(operand, f"read through {node.op}'s zero-filling index map")
        if not injective(index_map, extents) and _cost(d) > CHEAP:
            if not self._invariant(operand):
                return self._store(operand, f"{node.op} reads elements repeatedly")
            self.recomputed[self._describe(operand.node)] = f"read by {node.op}, {INVARIANT}"
        return d

    def _invariant(self, v):
        """Whether `v` is one element computed without a reduction (a runtime scalar's arithmetic:
        epsilon, an optimizer's numbers): loop-invariant, it is recomputed where read, as a
        constant would be folded, instead of a one-element kernel of its own."""
        return v.type.size == 1 and not self._accs(self.defs[v])

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

    def _rows(self, node, rows_at):
        """A table's rows at integer indices (RowsAt): the table loaded in the row a load of the
        indices picks (`Indirect`), either stored first where computed (the table where not strided)."""
        (table, indices), nvars = node.operands, node.result.type.ndim
        t = self.defs[table].payload.access if self._is_load(self.defs[table]) else None
        if t is None or t.step != 1 or t.guards or t.nvars != table.ndim or t.form.coeffs[0] < 1:
            self._store(table, f"its rows are read by {node.op} (an indirect load)")
        if not self._is_load(self.defs[indices]):
            self._store(indices, f"its values pick {node.op}'s rows (an indirect load reads them)")
        t, i = self.defs[table].payload, self.defs[indices].payload
        rows = Indirect(i.with_access(i.access.through(rows_at.index_map, indices.shape, nvars)),
                        max(1, t.access.form.coeffs[0]), table.shape[0])  # rows of no element: none read
        access = t.access.through((AxisIndex(),) + rows_at.table_map, table.shape, nvars)
        return _leaf(Load(t.buffer, t.dtype, access, rows))

    def _loop_nest(self, node, opdef, nest):
        extents = node.result.shape + tuple(nest.reduce_extents)
        if self.use_blas and opdef.blas and node.result.dtype in GEMMS and gemm_pays(extents):
            self.nests[node.result] = self._gemm(node, nest, extents)
        else:
            args = [self._through(self._filled(node, v, m, extents), m, v.shape, len(extents))
                    for v, m in zip(node.operands, nest.maps)]
            body = nest.body(*args) if nest.body else args[0]
            self.nests[node.result] = _Nest(extents, len(nest.reduce_extents), body, nest.combine)
        acc = _leaf(AccRef(node.result, node.result.dtype))
        return nest.epilogue(acc) if nest.epilogue else acc

    def _filled(self, node, operand, index_map, extents):
        """A loop nest's operand, stored first where the nest reads its elements repeatedly and it is
        computed, at a cost times its reads per element but one of COPY_READS operations or more
        (computed once, not at every read: a conv's input gradient's `mask * grad`), or a view
        either zero-filling (padding: filled once instead of a guard at every read) or read across
        its rows along the last outer loop, each element COPY_READS times or more (a conv's flipped
        and transposed weight, its adjoint as a weight gradient's: copied once, contiguous along the
        loop whose outputs lie side by side).
        The nest's loads are then unguarded and vectorise, as register tiles need (passes/schedule.py)."""
        d = self._readable(node, operand, index_map, extents)
        if injective(index_map, extents):
            return d
        reads = math.prod(extents) // max(operand.type.size, 1)
        if not self._is_load(d):
            cost = _cost(d)
            if self._invariant(operand) or cost * (reads - 1) < COPY_READS:
                return d
            return self._store(operand, f"{node.op} reads each element {reads} times: computed once, not at "
                                        f"every read ({cost} operations x {reads - 1} >= {COPY_READS})")
        if d.payload.access == contiguous(operand.shape):
            return d
        if d.payload.access.guards:
            return self._store(operand, f"{node.op} reads its zero-filled elements repeatedly: filled once, "
                                        "not checked at every read")
        across = d.payload.access.through(index_map, operand.shape, len(extents)).form.coeffs[len(node.result.shape) - 1]
        if across not in (0, 1) and reads >= COPY_READS:
            return self._store(operand, f"{node.op} reads it across its rows, along the loop its outputs lie along: "
                                        "copied once, contiguous")
        return d

    def _gemm(self, node, nest, extents):
        """A matrix-product nest (loops batch..., m, n | k: see OpDef.blas) as a BLAS call."""
        m, n, k = len(extents) - 3, len(extents) - 2, len(extents) - 1
        matrices = []
        for v, index_map, (rows, cols) in zip(node.operands, nest.maps, ((m, k), (k, n))):
            matrix = self._matrix(v, index_map, extents, rows, cols)
            if matrix is None and self._reviewed(v, store=True):
                matrix = self._matrix(v, index_map, extents, rows, cols)
            if matrix is None:
                computed = "a computed value" if not self._is_load(self.defs[v]) else "a view BLAS cannot stride"
                self._store(v, f"{node.op} hands it to BLAS as a matrix ({computed})")
                matrix = self._matrix(v, index_map, extents, rows, cols)
            matrices.append(matrix)
        gemm = Gemm(*matrices, extents[m], extents[n], extents[k], "", node.result.dtype)
        return _Nest(node.result.shape, 0, None, None, gemm)

    def _reviewed(self, v, store=False):
        """Whether `v`, a view (or a view of a view) of a value stored since `v` was defined, is
        defined again as a load through the view: a value stored for one product is another's
        transposed operand as it is, not a transposed copy. `store`: a transpose's computed operand
        is stored first, in its own order (its rows written whole; BLAS reads it transposed)."""
        node = v.node
        if node is None or node.op == "scan" or get_op(node.op).index_map is None:
            return False
        (operand,) = node.operands
        if store and node.op == "transpose" and not self._is_load(self.defs[operand]):
            self._store(operand, "its transpose is handed to BLAS, which reads it transposed in place")
        if operand not in self.stored and not self._reviewed(operand):
            return False
        self.defs[v] = self._define(node)
        return True

    def _matrix(self, v, index_map, extents, rows, cols):
        """Operand `v` as a BLAS Matrix over loop axes (rows, cols), or None where it is computed
        or its elements are not a strided matrix with one unit stride."""
        if not self._is_load(self.defs[v]):
            return None
        load = self._through(self.defs[v], index_map, v.shape, len(extents)).payload
        access = load.access.specialised(extents)
        layout = blas_layout(access.form.coeffs[rows], access.form.coeffs[cols], extents[rows], extents[cols])
        if access.step != 1 or access.guards or layout is None:
            return None
        batch = len(extents) - 3
        offset = Access(Affine(access.form.coeffs[:batch] + (0,) * 3, access.form.const))
        return Matrix(load.buffer, offset, *layout)

    def _through(self, d, index_map, shape, nvars):
        return map_leaves(d, lambda leaf: _leaf(leaf.with_access(leaf.access.through(index_map, shape, nvars))))

    def _reshape(self, d, old, new):
        accesses = {leaf: leaf.access.reshape(old, new) for leaf in leaves(d)}
        if any(a is None for a in accesses.values()):
            return None
        return map_leaves(d, lambda leaf: _leaf(leaf.with_access(accesses[leaf])))

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

    def _store(self, v, why, kind=BufferKind.TEMP, name=None):
        """Give `v` a buffer and a kernel computing its definition; later reads load it."""
        if v in self.stored and name is None:
            return self.defs[v]
        d, fused = self.defs[v], self.members[v]
        (acc,) = self._accs(d) or (None,)
        nest = self.nests.pop(acc.value) if acc else _Nest(v.shape, 0, None, None)
        self._bind_buffer(v, kind, name)
        self.kernels.append(self._kernel(nest, acc, d, self.stored[v], v, fused, why))
        return self.defs[v]

    def _store_output(self, v):
        kind = self.buffers[self.stored[v]].kind if v in self.stored else None
        if kind == BufferKind.TEMP:
            self.buffers[self.stored[v]].kind = BufferKind.OUTPUT
        elif kind in (BufferKind.INPUT, BufferKind.CONST):  # a fresh name: node results are numbered, inputs are not
            self._store(v, "graph output (a copy of an input)", BufferKind.OUTPUT, str(len(self.buffers) + len(self.graph.nodes)))
        elif kind is None:
            self._store(v, "graph output", BufferKind.OUTPUT)
        return self.stored[v]

    def _kernel(self, nest, acc, value, out, v, fused, why):
        """The kernel storing `value` (a definition, reading the accumulator `acc` of `nest` if any)
        into buffer `out`: one reduce phase, one elementwise store, or a gemm and its epilogue."""
        numbering = {}
        store = contiguous(v.shape).specialised(nest.extents)
        result = Load(out, v.dtype, store)

        def number(payload):
            if payload == acc:
                return _leaf(Acc(0)) if nest.gemm is None else number(result)
            if isinstance(payload, Load) and payload.indirect:  # its row's load numbered first
                payload = replace(payload, indirect=replace(payload.indirect, index=number(payload.indirect.index).payload))
            leaf = payload.with_access(payload.access.specialised(nest.extents))
            return _leaf(numbering.setdefault(leaf, len(numbering)))
        outer = len(nest.extents) - nest.reduce_count
        gemm = nest.gemm and replace(nest.gemm, out=out, why=why)
        if gemm is not None:
            product = value.prim == "arg" and value.payload == acc
            phases = [] if product else [Phase([], [Store(out, store, map_leaves(value, number), v.dtype, why)])]
        else:  # the reduction's loads numbered before the store's
            reductions = [Reduction(map_leaves(nest.body, number), nest.combine, acc.dtype)] if nest.reduce_count else []
            phases = [Phase(reductions, [Store(out, store, map_leaves(value, number), v.dtype, why)])]
        recomputes = tuple(f"{m} ({self.recomputed[m]})" for m in fused if m in self.recomputed)
        return Kernel(f"k{len(self.kernels)}", tuple(nest.extents), outer, list(numbering), phases, fused, gemm,
                      recomputes=recomputes, lowered=tuple(dict.fromkeys(self.whys[m] for m in fused if m in self.whys)))

    # ---- naming -------------------------------------------------------------------------------
    def _describe(self, node):
        self.whys.update({f"%{self.names[node.result]} {node.op}": node.why} if node.why else {})
        return f"%{self.names[node.result]} {node.op}"

    def _operand_members(self, node):
        result = ()
        for v in node.operands:
            if v not in self.stored:
                result += tuple(m for m in self.members.get(v, ()) if m not in result)
        return result
