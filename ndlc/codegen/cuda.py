"""Kernel IR -> CUDA C: one `__global__` function per kernel (a gemm kernel: a cuBLAS call, then
one per phase of its epilogue over the product; a scatter kernel: a thread per column), launched
in schedule order with the blocks the schedule chose (Kernel.gpu, passes/schedule.py: schedule_gpu).

Each kernel runs grid-stride over its outer points, `tile` points per block; thread x of the tile
owns a point and its `lanes` threads share the point's inner loops. A reduce phase accumulates in
registers, then combines the lanes (row kernels: warp shuffles, then one shared-memory slot per
warp; column kernels: a shared-memory tree) so that every lane holds the result; the phase's
per-point stores are made by lane 0, its map stores by all lanes; `__syncthreads` separates phases
(a later phase reads what an earlier one stored). Scalar primitives are spelled as the one
primitive table says (ir/scalar.py, Primitive.cuda); max/min propagate NaN like the CPU backend.

The same source runs on the host under a small emulation of CUDA's execution model
(runtime/cuda_emulation.h: each block's threads are fibers on one OS thread, a `__syncthreads`
round a barrier, shuffles through a per-block exchange; NDLC_STRESS shuffles block and thread
order and checks float4 alignment): with NDLC_EMULATE defined, each kernel gets a host entry
`ndlc_emulate_<name>(blocks, threads, buffers)`.
"""
import math

from ..errors import UnsupportedError
from ..ir.cases import TextEnum
from ..ir.indexing import Access
from ..ir.kernel_leaves import Acc, Index, infer_dtypes, operand_dtype
from ..ir.rules import combine_primitive, expanded_power, identity, power_by_squaring, primitive_for
from ..ir.scalar import COMPARISONS, PRIMITIVES, postorder
from ..ir.types import is_float
from .cuda_c import C_TYPES, MEMORY, PRELUDE, affine, literal
from .cuda_steps import CudaModule, GemmCall, Launch

INT32_LIMIT = 1 << 31


class Part(TextEnum):
    """A launch of a kernel whose reductions are cut into chunks (see _parts)."""
    PARTIAL = "partial"
    FINISH = "finish"
    MAP = "map"


def lower_to_cuda(program, prefix="") -> CudaModule:
    """The CUDA C of `program` (a kernel.Program scheduled by schedule_gpu); `prefix` starts every
    function name (several programs in one source)."""
    order = list(program.buffers)
    aliased = set(program.in_place) | set(program.in_place.values())
    parts, steps = [PRELUDE], []
    for kernel in program.kernels:
        if kernel.gpu is None:
            raise UnsupportedError(f"kernel {kernel.name} has no CUDA schedule (run passes.schedule.schedule_gpu)")
        if kernel.local:
            raise UnsupportedError(f"kernel {kernel.name} keeps row-local temporaries, which the CUDA backend "
                                   "does not plan (plan_memory(..., row_local=False))")
        if kernel.gemm is not None:
            steps.append(GemmCall(kernel.gemm, kernel.extents, kernel.name))
            for p, phase in enumerate(kernel.phases):
                if phase.reductions:
                    raise UnsupportedError(f"kernel {kernel.name}: a gemm epilogue with reductions")
                name = f"{prefix}{kernel.name}_epilogue{p}"
                emitter = _KernelEmitter(kernel, name, [phase], len(kernel.extents), order, aliased, program)
                parts.append(emitter.source)
                steps.append(emitter.launch)
            continue
        for part in _parts(kernel):
            name = f"{prefix}{kernel.name}" + (f"_{part[0]}{part[1]}" if part else "")
            emitter = _KernelEmitter(kernel, name, kernel.phases, kernel.outer, order, aliased, program, part)
            parts.append(emitter.source)
            steps.append(emitter.launch)
    return CudaModule("\n".join(parts), steps)


def _parts(kernel):
    """The launches of a kernel: [None] (one), or for a kernel whose reductions are cut into chunks,
    per phase: ('partial', p) each chunk's partial results, ('finish', p) their combination in
    chunk order and the per-point stores, ('map', p) the stores over the inner loops."""
    if kernel.gpu.chunks == 1:
        return [None]
    found = []
    for p, phase in enumerate(kernel.phases):
        if phase.reductions:
            found.append((Part.PARTIAL, p))
        if phase.reductions or not phase.inner:
            found.append((Part.FINISH, p))
        if phase.inner:
            found.append((Part.MAP, p))
    return found


class _KernelEmitter:
    """The CUDA C of one kernel's phases over its loops, the first `outer` of them outer."""

    def __init__(self, kernel, name, phases, outer, order, aliased, program, part=None):
        self.kernel, self.name, self.phases, self.outer, self.part = kernel, name, phases, outer, part
        g = kernel.gpu
        self.tile, self.lanes, self.threads = (g.threads, 1, g.threads) if outer == len(kernel.extents) \
            or (part and part[0] != Part.PARTIAL) else (g.tile, g.lanes, g.threads)
        self.outer_points = math.prod(kernel.extents[:outer])
        if part and part[0] == Part.MAP:  # every loop is a point of its own
            self.outer = outer = len(kernel.extents)
        self.vector = g.vector if outer == len(kernel.extents) else 1
        self.points = math.prod(kernel.extents[:outer]) // self.vector
        self.component, self.vectors = None, {}  # vector kernels: the element being computed, its loads
        self.inner = math.prod(kernel.extents[outer:])
        biggest = max([math.prod(kernel.extents)] + [math.prod(program.buffers[b].shape) for b in kernel.buffers()])
        self.index_type = "int" if biggest * 2 < INT32_LIMIT else "long long"
        self.used = sorted(kernel.buffers(), key=order.index)
        self.param = {b: f"b{i}" for i, b in enumerate(self.used)}
        written = set(kernel.outputs()) | set(kernel.scratch)
        self.dtypes = {b: program.buffers[b].dtype for b in self.used}
        self.reductions = [r for phase in phases for r in phase.reductions]
        self.counter = 0
        self.lines = []
        params = []
        for b in self.used:
            const = "" if b in written else "const "
            restrict = "" if b in aliased else " __restrict__"
            params.append(f"{const}{MEMORY[self.dtypes[b]]}*{restrict} {self.param[b]}")
        blocks = g.blocks if part is None else -(-self.points // self.tile) * (g.chunks if part[0] == Part.PARTIAL else 1)
        self.launch = Launch(name, blocks, self.threads, tuple(self.used), kernel.name)
        self._body()
        head = [f"// {kernel.name}: {', '.join(kernel.fused) or 'no graph nodes'} ({g.why})",
                f'extern "C" __global__ void __launch_bounds__({self.threads}, 1) {name}({", ".join(params)}) {{']
        self.source = "\n".join(head + self.lines + ["}", self._emulation_entry()])

    # ---- structure ----------------------------------------------------------------------------
    def _body(self):
        I, tile, lanes = self.index_type, self.tile, self.lanes
        put = self.lines.append
        rows = self.kernel.gpu.lanes_fastest and lanes > 1  # a warp is within one point
        if self.part is not None:
            self._chunked_body(rows)
            return
        self._prologue(rows, enumerate(self.reductions))
        put(f"  for ({I} base = ({I})blockIdx.x * {tile}; base < {self.points}; base += ({I})gridDim.x * {tile}) {{")
        put(f"    const {I} o = base + x;")
        put(f"    const bool active = o < {self.points};")
        self._decode("o", range(self.outer), "    ")
        if self.kernel.scatter is not None:
            self._scatter()
            return
        if self.vector > 1:
            for phase in self.phases:
                self._vector_stores(phase, "      ")
            put("  }")
            return
        slot = 0
        for p, phase in enumerate(self.phases):
            slots = list(range(slot, slot + len(phase.reductions)))
            slot += len(phase.reductions)
            self._phase(phase, slots, rows)
            if lanes > 1 and p < len(self.phases) - 1:
                put("    __syncthreads();")
        put("  }")

    def _prologue(self, rows, reductions):
        """The thread's point in the tile (x) and lane (y), and the shared memory in which the
        lanes of each (slot, reduction) combine (none where one warp is one point: shuffles)."""
        put, tile, lanes = self.lines.append, self.tile, self.lanes
        put("  const int tid = threadIdx.x;")
        put(f"  const int x = {'tid / ' + str(lanes) if rows else 'tid % ' + str(tile)};")
        put(f"  const int y = {'tid % ' + str(lanes) if rows else 'tid / ' + str(tile)};")
        if lanes > 1 and not (rows and lanes == 32):
            for slot, r in reductions:
                put(f"  __shared__ {C_TYPES[r.dtype]} red{slot}[{self.threads // 32 if rows else self.threads}];")

    def _chunked_body(self, rows):
        """One launch of a chunked kernel (see _parts)."""
        put, I, (kind, p) = self.lines.append, self.index_type, self.part
        phase, k = self.phases[p], self.kernel
        first = sum(len(q.reductions) for q in self.phases[:p])
        slots = list(range(first, first + len(phase.reductions)))
        chunks, points = k.gpu.chunks, self.outer_points
        self._prologue(rows, zip(slots, phase.reductions) if kind == Part.PARTIAL else ())
        if kind == Part.PARTIAL:
            groups, size = -(-points // self.tile), -(-self.inner // chunks)
            put(f"  for ({I} w = blockIdx.x; w < {groups * chunks}; w += gridDim.x) {{")
            put(f"    const {I} c = w / {groups};")
            put(f"    const {I} o = (w % {groups}) * {self.tile} + x;")
            put(f"    const bool active = o < {points};")
            self._decode("o", range(k.outer), "    ")
            end = f"((c + 1) * {size} < {self.inner} ? (c + 1) * {size} : {self.inner})"
            self._reduce(phase, slots, rows, f"c * {size} + y", end)
            put("    if (active && y == 0) {")
            for slot in slots:
                put(f"      {self.param[k.scratch[slot]]}[c * {points} + o] = acc{slot};")
            put("    }")
            put("  }")
            return
        put(f"  for ({I} o = ({I})blockIdx.x * {self.tile} + x; o < {self.points}; o += ({I})gridDim.x * {self.tile}) {{")
        self._decode("o", range(self.outer) if kind == Part.FINISH else self._memory_order(phase), "    ")
        if kind == Part.FINISH:
            for slot, r in zip(slots, phase.reductions):
                partial = self.param[k.scratch[slot]]
                put(f"    {C_TYPES[r.dtype]} acc{slot} = {partial}[o];")
                put(f"    for (int c = 1; c < {chunks}; ++c) acc{slot} = {self._combine(r, f'acc{slot}', f'{partial}[c * {points} + o]')};")
                put(f"    {partial}[o] = acc{slot};")
            if not phase.inner:
                for i in range(k.outer, len(k.extents)):
                    put(f"    const {I} i{i} = 0;")
                self._stores(phase, slots, "    ")
        else:
            strides = [math.prod(k.extents[d + 1:k.outer]) for d in range(k.outer)]
            flat = " + ".join(f"{st} * i{d}" for d, st in enumerate(strides)) or "0"
            for slot, r in zip(slots, phase.reductions):
                put(f"    const {C_TYPES[r.dtype]} acc{slot} = {self.param[k.scratch[slot]]}[{flat}];")
            self._stores(phase, slots, "    ")
        put("  }")

    def _memory_order(self, phase):
        """Every loop, the one along which the phase's first store moves by one element last, so
        that neighbouring threads touch neighbouring elements (coalesced), the others by stride."""
        coeffs = phase.stores[0].access.form.coeffs
        return sorted(range(len(self.kernel.extents)), key=lambda i: (-abs(coeffs[i]) if coeffs[i] else 0, i))

    def _scatter(self):
        """A Scatter kernel (ir/kernel.py): a thread per column zeroes it, then adds the tokens'
        values into it in token order, so that its sums are the CPU's."""
        s, I, put = self.kernel.scatter, self.index_type, self.lines.append
        values, indices, out = (f"({self.param[name]} + {at})" for name, at in zip(s.buffers, s.at))
        put("    if (active) {")
        put(f"      for ({I} r = 0; r < {s.rows}; ++r) {out}[r * {s.width} + i0] = 0;")
        put(f"      for ({I} t = 0; t < {s.count}; ++t) {{")
        put(f"        const long long r = (long long){indices}[t];")
        put(f"        if (r >= 0 && r < {s.rows}) {out}[r * {s.width} + i0] += {values}[t * {s.width} + i0];")
        put("      }")
        put("    }")
        put("  }")

    def _decode(self, flat, loops, indent):
        """The loop variables `loops` (row-major in the order given) from the flat index `flat`."""
        loops = list(loops)
        stride = 1
        for i in reversed(loops):
            n = self.kernel.extents[i]
            group = self.vector if i == len(self.kernel.extents) - 1 else 1  # vector kernels: the first of a group
            value = f"{flat}" if stride == 1 else f"{flat} / {stride}"
            if i != loops[0]:
                value = f"({value}) % {n // group}"
            if group > 1:
                value = f"{group} * ({value})"
            self.lines.append(f"{indent}const {self.index_type} i{i} = {value};")
            stride *= n // group

    def _phase(self, phase, slots, rows):
        put, I = self.lines.append, self.index_type
        inner_loops = range(self.outer, len(self.kernel.extents))
        if phase.reductions:
            self._reduce(phase, slots, rows, "y", str(self.inner))
        if phase.inner:
            put("    if (active) {")
            put(f"      for ({I} j = y; j < {self.inner}; j += {self.lanes}) {{")
            self._decode("j", inner_loops, "        ")
            self._stores(phase, slots, "        ")
            put("      }")
            put("    }")
        elif phase.stores:
            put(f"    if (active{' && y == 0' if self.lanes > 1 else ''}) {{")
            for i in inner_loops:
                put(f"      const {I} i{i} = 0;")
            self._stores(phase, slots, "      ")
            put("    }")

    def _reduce(self, phase, slots, rows, start, end):
        """The phase's accumulators over inner points start, start + lanes, ... < end, then
        combined over the point's lanes."""
        put, I = self.lines.append, self.index_type
        for slot, r in zip(slots, phase.reductions):
            put(f"    {C_TYPES[r.dtype]} acc{slot} = {self._identity(r)};")
        put("    if (active) {")
        put(f"      for ({I} j = {start}; j < {end}; j += {self.lanes}) {{")
        self._decode("j", range(self.outer, len(self.kernel.extents)), "        ")
        memo = {}
        values = [self._emit(r.body, memo, phase, slots, r.dtype, "        ") for r in phase.reductions]
        for slot, r, value in zip(slots, phase.reductions, values):
            put(f"        acc{slot} = {self._combine(r, f'acc{slot}', value)};")
        put("      }")
        put("    }")
        for slot, r in zip(slots, phase.reductions):
            self._combine_lanes(slot, r, rows)

    def _combine_lanes(self, slot, r, rows):
        """Every lane of a point gets the combination of the point's lanes' accumulators."""
        put, acc, lanes = self.lines.append, f"acc{slot}", self.lanes
        if lanes == 1:
            return
        if rows:
            put(f"    for (int s = 16; s > 0; s >>= 1) {acc} = {self._combine(r, acc, f'ndlc_shfl_down({acc}, s)')};")
            if lanes == 32:
                put(f"    {acc} = ndlc_shfl({acc}, 0);")
                return
            put(f"    if ((tid & 31) == 0) red{slot}[tid >> 5] = {acc};")
            put("    __syncthreads();")
            put(f"    {acc} = red{slot}[x * {lanes // 32}];")
            put(f"    for (int w = 1; w < {lanes // 32}; ++w) {acc} = {self._combine(r, acc, f'red{slot}[x * {lanes // 32} + w]')};")
            put("    __syncthreads();")
            return
        put(f"    red{slot}[tid] = {acc};")
        put("    __syncthreads();")
        put(f"    for (int s = {lanes // 2}; s > 0; s >>= 1) {{")
        put(f"      if (y < s) red{slot}[tid] = {self._combine(r, f'red{slot}[tid]', f'red{slot}[tid + s * {self.tile}]')};")
        put("      __syncthreads();")
        put("    }")
        put(f"    {acc} = red{slot}[x];")
        put("    __syncthreads();")

    def _stores(self, phase, slots, indent):
        """Every store's value first (a store may overwrite what another value reads), then the stores."""
        memo = {}
        values = [self._emit(s.value, memo, phase, slots, s.dtype, indent) for s in phase.stores]
        for store, value in zip(phase.stores, values):
            index, valid = self._address(store.access)
            target = f"{self.param[store.buffer]}[{index}]"
            value = f"(unsigned char)({value})" if store.dtype == "bool" else value
            self.lines.append(f"{indent}{'if (' + valid + ') ' if valid else ''}{target} = {value};")

    def _vector_stores(self, phase, indent):
        """A phase of a vector kernel: each store's value for the `vector` consecutive elements,
        loaded and stored as float4."""
        self.lines.append("    if (active) {")
        self.vectors = {}
        values = []
        for k in range(self.vector):
            self.component, memo = k, {}
            values.append([self._emit(s.value, memo, phase, [], s.dtype, indent) for s in phase.stores])
        self.component = None
        for i, store in enumerate(phase.stores):
            index, _ = self._address(store.access)
            parts = ", ".join(values[k][i] for k in range(self.vector))
            self.lines.append(f"{indent}ndlc_vec4(&{self.param[store.buffer]}[{index}]) = make_float4({parts});")
        self.lines.append("    }")

    # ---- expressions --------------------------------------------------------------------------
    def _emit(self, expr, memo, phase, slots, want, indent):
        """The C name or literal of `expr`, its operations declared as constants in postorder."""
        types = infer_dtypes(expr, lambda payload: phase.reductions[payload.index].dtype
                             if isinstance(payload, Acc) else self.kernel.loads[payload].dtype)
        for e in postorder(expr):
            if id(e) in memo:
                continue
            if e.prim == "arg":
                memo[id(e)] = f"acc{slots[e.payload.index]}" if isinstance(e.payload, Acc) \
                    else self._load(e.payload, indent)
            elif e.args:
                memo[id(e)] = self._declare(types[id(e)], self._primitive(e, memo, types, indent), indent)
        return self._operand(expr, memo, want)

    def _declare(self, dtype, text, indent):
        name = f"v{self.counter}"
        self.counter += 1
        self.lines.append(f"{indent}const {C_TYPES[dtype or 'f64']} {name} = {text};")
        return name

    def _operand(self, expr, memo, want):
        if expr.prim == "const":
            return literal(want or "f64", expr.payload)
        return memo[id(expr)]

    def _primitive(self, e, memo, types, indent):
        prim, dtype = e.prim, operand_dtype(e, types)
        if prim == "cast":
            source = types[id(e.args[0])] or "f64"
            x = self._operand(e.args[0], memo, source)
            return f"({x} != 0)" if e.payload == "bool" else f"({C_TYPES[e.payload]})({x})"
        n = expanded_power(e.args[1].payload, dtype) if prim == "pow" and e.args[1].prim == "const" else None
        if n is not None:
            return power_by_squaring(self._operand(e.args[0], memo, dtype), n, lambda a, b: self._declare(
                dtype, f"{a} * {b}", indent), literal(dtype, 1.0), lambda a, b: f"{a} / {b}")
        wants = ["bool", dtype, dtype] if prim == "select" else [dtype] * len(e.args)
        return self._apply(prim, dtype, [self._operand(a, memo, want) for a, want in zip(e.args, wants)])

    def _apply(self, prim, dtype, args):
        """`prim` on C operands computing in `dtype`, as the primitive table spells it for CUDA."""
        prim = primitive_for(prim, dtype)
        spelling = PRIMITIVES[prim].cuda
        if not spelling:
            raise UnsupportedError(f"kernel {self.kernel.name}: primitive {prim} has no CUDA spelling")
        if "{f}" in spelling and not is_float(dtype):
            raise UnsupportedError(f"kernel {self.kernel.name}: primitive {prim} on {dtype} values")
        if prim in COMPARISONS and dtype == "bool":
            args = [f"(int){a}" for a in args]
        return spelling.format(*args, f="f" if dtype == "f32" else "")

    def _load(self, n, indent):
        load = self.kernel.loads[n]
        index, valid = self._address(load.access)
        if self.component is not None:  # a vector kernel's element: one component of a float4
            if n not in self.vectors:
                if load.access.form.coeffs[-1] == 0:
                    self.vectors[n] = self._declare("f32", f"{self.param[load.buffer]}[{index}]", indent)
                else:
                    name = f"q{n}"
                    self.lines.append(f"{indent}const float4 {name} = ndlc_vec4(&{self.param[load.buffer]}[{index}]);")
                    self.vectors[n] = name
            contiguous = load.access.form.coeffs[-1] == 1
            return f"{self.vectors[n]}.{'xyzw'[self.component]}" if contiguous else self.vectors[n]
        if isinstance(load, Index):
            return self._declare("i64", f"(long long)({index})" if not valid else f"({valid}) ? (long long)({index}) : 0LL", indent)
        if load.indirect:
            index, valid = self._row(load.indirect, index, valid, indent)
        text = f"{self.param[load.buffer]}[{index}]"
        if load.dtype == "bool":
            text = f"({text} != 0)"
        if valid:
            text = f"(({valid}) ? ({C_TYPES[load.dtype]})({text}) : ({C_TYPES[load.dtype]})0)"
        return self._declare(load.dtype, text, indent)

    def _row(self, rows, index, valid, indent):
        """(element index, validity) of an indirect load at `index` (valid where `valid`): its row,
        the value of its index load, added where that is in [0, rows), else index 0 and invalid,
        so nothing outside the table is read (as codegen/llvm_memory.py `_row`)."""
        picked = self.kernel.loads[rows.index]
        at, picked_valid = self._address(picked.access)
        text = f"(long long)({self.param[picked.buffer]}[{at}])"
        row = self._declare("i64", f"({picked_valid}) ? {text} : 0LL" if picked_valid else text, indent)
        inside = f"(unsigned long long)({row}) < {rows.rows}ULL"
        return f"({inside}) ? ({index}) + {row} * {rows.stride}LL : 0LL", " && ".join(filter(None, [valid, inside]))

    def _address(self, access: Access):
        """(element index, validity condition or '') of an access at the current loop variables."""
        checks = []
        for g in access.guards:
            f = affine(g.form)
            checks.append(f"({f}) >= 0 && ({f}) < {g.bound * g.step}")
            if g.step > 1:
                checks.append(f"({f}) % {g.step} == 0")
        index = affine(access.form)
        if access.step > 1:
            index = f"({index}) / {access.step}"
        return index, " && ".join(checks)

    def _identity(self, r):
        return literal(r.dtype, identity(r.combine, r.dtype))

    def _combine(self, r, acc, value):
        return self._apply(combine_primitive(r.combine, r.dtype), r.dtype, [acc, value])

    def _emulation_entry(self):
        """The host entry of the emulation: the kernel on blocks of host threads."""
        args = ", ".join(f"({MEMORY[self.dtypes[b]]}*)buffers[{i}]" for i, b in enumerate(self.used))
        return ("#ifdef NDLC_EMULATE\n"
                f'extern "C" void ndlc_emulate_{self.name}(unsigned blocks, unsigned threads, void** buffers) {{\n'
                f"  ndlc_emulate_launch(blocks, threads, [&] {{ {self.name}({args}); }});\n"
                "}\n#endif\n")

