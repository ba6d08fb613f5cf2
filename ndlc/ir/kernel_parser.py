"""Parser of Kernel IR text (`str(Program)`: the fused, scheduled and planned stages, CPU and CUDA
schedules) back into a Program that prints the same text and verifies; errors name the line.

The text is line-oriented, so each line is read by its own pattern. What the text leaves implicit
is rebuilt from the rest: a load's dtype is its buffer's, a reduction's the dtype of its body (or
of the stores that read it), a scheduled kernel without a strategy line is 'gemm' or 'point'.
Equal subexpressions of a kernel are shared (the printer writes a shared node where it is used).
Constant buffers' values are not part of the text: the parsed program's `constants` is empty.
"""
import functools
import re
from dataclasses import replace

from ..errors import IRParseError
from .indexing import Access, Affine, Guard
from .kernel import (GEMMS, Buffer, BufferKind, Combine, Gemm, GpuLaunch, Kernel, Matrix, Phase, PhaseKind, Program,
                     Reduction, Scatter, Split, Store, Strategy)
from .kernel_leaves import Acc, Index, Indirect, Load, infer_dtypes
from .kernel_verifier import verify_program
from .streams import parse_streams
from .scalar import PRIMITIVES, ScalarExpr
from .types import DTYPES

_NAME = r"%([A-Za-z0-9_.]+)"
_PROGRAM = re.compile(r"program @(\S+)\((.*)\) -> \((.*)\)$")
_BUFFER = re.compile(rf"  {_NAME}: (\w+)\[([\d,]*)\] (\w+)$")
_IN_PLACE = re.compile(rf"  {_NAME} is written in place of {_NAME}$")
_KERNEL = re.compile(r"kernel (\S+) -> (.*)$")
_LOOP = re.compile(r"i(\d+)<(\d+)$")
_CHUNKS = re.compile(r"  strategy: chunks \(i\d+ cut into (\d+) chunks whose partial results, (.*), "
                     r"combine in order; whole rows stream\)$")
_ROWS = re.compile(r"  strategy: rows \(blocks of (\d+) i\d+(?: by (\d+) i\d+)? accumulate side by side"
                   r"(?:, the last computing \d+ to store \d+)?; ")
_CUDA = re.compile(r"  cuda: (\d+) blocks of (\d+)x(\d+) threads(, lanes fastest)?(?:, (\d+) points a thread)?"
                   rf"(?:, (\d+) chunks into ({_NAME}(?:, {_NAME})*))? \((.*)\)$")
_PARALLEL = re.compile(r"  parallel over (?:i(\d+) in \d+ pieces of (\d+), taken in turn|its chunks) \((\d+) threads\)$")
_GEMM = re.compile(r"  (?:per [i\d ]+: )?call (\w+)\((.*)\) -> %(\S+)  \((\d+)x(\d+) @ (\d+)x(\d+)\)"
                   r"(?:, in calls of (\d+) rows, each on OpenBLAS's small-matrix kernels \(.*\))?$")
_AT = rf"{_NAME}(?:\[(\d+)\])?"
_SCATTER = re.compile(rf"  call scatter_add\({_AT}, {_AT}\) -> {_AT}  \((\d+) rows of (\d+) into (\d+), in order\)$")
_MATRIX = re.compile(rf"{_NAME}(?:\[([^\]]*)\])?(\^T)?(?: ld (\d+))?$")
_LOCAL = re.compile(rf"  {_NAME} is local: one row of (\d+) per thread$")
_LOAD = re.compile(rf"  \$(\d+) = (?:{_NAME}|(index))\[(.*)\]$")
_INDIRECT = re.compile(r"(-?\d+)\*\$(\d+) \+ (.*?) if 0 <= \$(\d+) < (\d+)(?: and (.*))?$")
_PHASE = re.compile(r"  phase (\d+): (.*)$")
_REDUCTION = re.compile(r"    acc(\d+) = (\w+) of (.*)$")
_STORE = re.compile(rf"(?:  )?  store {_NAME}\[(.*?)\] = (.*)$")
_GUARD = re.compile(r"0 <= (?:\((.*)\)/(\d+)|(.*)) < (\d+)$")
_TOKEN = re.compile(r"\s*(?:(?P<num>-?(?:inf|nan)|-?\d+(?:\.\d*)?(?:e[-+]?\d+)?)|(?P<word>[A-Za-z_]\w*)"
                    r"|\$(?P<load>\d+)|(?P<punct>[(),]))")
_ATOMS = {"True": True, "False": False}
_STEPPED = re.compile(r"\((.*)\)/(\d+)")
_TERM = re.compile(r"(-?\d+)|(-?\d+\*|-)?i(\d+)")
_ACC = re.compile(r"acc\d+")


def parse_kernels(text, verify=True) -> Program:
    """The Program whose `str` is `text` (blank lines around it are ignored); verified unless
    `verify` is False."""
    if not isinstance(text, str):
        raise IRParseError(f"parse_kernels takes the text form of a program (a str), not {type(text).__name__}", 1, 1)
    program = _ProgramParser(text.split("\n")).program()
    return verify_program(program, "parse_kernels") if verify else program


class _ProgramParser:
    def __init__(self, lines):
        self.lines, self.n = lines, 0

    def error(self, message, n=None):
        n = self.n if n is None else n
        line = self.lines[n] if n < len(self.lines) else ""
        return IRParseError(message, n + 1, 1, line)

    def peek(self):
        return self.lines[self.n] if self.n < len(self.lines) else None

    def match(self, pattern, what):
        line = self.peek()
        m = pattern.match(line) if line is not None else None
        if m is None:
            raise self.error(f"expected {what}")
        self.n += 1
        return m

    def program(self):
        while self.peek() == "":  # blank lines around the text (a dump file ends in one) are fine
            self.n += 1
        while self.lines and self.lines[-1].strip() == "":
            self.lines.pop()
        name, inputs, outputs = self.match(_PROGRAM, "'program @name(%inputs) -> (%outputs)'").groups()
        inputs = _names(inputs)
        updated, results = [], []
        for entry in filter(None, outputs.split(", ")):
            update = re.fullmatch(rf"new {_NAME} = {_NAME}", entry)
            if update:
                updated.append(update.group(1))
                results.append(update.group(2))
            elif updated or not entry.startswith("%"):
                raise self.error(f"output {entry!r}: plain outputs come first, then 'new %state = %value'", 0)
            else:
                results.append(entry[1:])
        buffers, in_place = {}, {}
        while self.peek() and _BUFFER.match(self.peek()):
            b, dtype, shape, kind = self.match(_BUFFER, "a buffer").groups()
            buffers[b] = Buffer(b, tuple(int(d) for d in shape.split(",") if d), self._dtype(dtype, self.n - 1),
                                self._enum(BufferKind, kind, "buffer kind", self.n - 1))
        while self.peek() and _IN_PLACE.match(self.peek()):
            out, state = self.match(_IN_PLACE, "an in-place update").groups()
            in_place[out] = state
        kernels = []
        while self.peek() is not None:
            if self.peek() != "":
                raise self.error("expected a blank line, then a kernel: this line is no part of a kernel's text")
            self.n += 1
            kernels.append(self.kernel(buffers))
        return Program(name, buffers, kernels, inputs, results, updated=tuple(updated), in_place=in_place)

    def kernel(self, buffers):
        first = self.n
        name, outputs = self.match(_KERNEL, "'kernel NAME -> %outputs'").groups()
        k = Kernel(name, (), 0, [], [])
        k.fused = tuple(self.optional("  fuses: ", lambda t: t.split(", ")) or ())
        k.lowered = tuple(self.repeated("  lowered: "))
        whys = self.optional("  stored because: ", lambda t: t) or ""
        k.recomputes = tuple(self.repeated("  recomputes: "))
        k.merged = tuple(self.repeated("  merged: "))
        k.boundary = self.optional("  not merged into the kernel before: ", lambda t: t) or ""
        k.step = self.optional("  step: ", lambda t: t) or ""
        self.loops(k)
        scheduled = self.schedule(k)
        gemm = _GEMM.match(self.peek() or "")
        if gemm:
            self.n += 1
            k.gemm, k.calls = self.gemm(gemm, len(k.extents) + 1), int(gemm.group(8) or 0)
        if _SCATTER.match(self.peek() or ""):
            values, v, indices, i, out, o, count, width, rows = self.match(_SCATTER, "a scatter").groups()
            k.scatter = Scatter(values, indices, out, int(count), int(rows), int(width), self.buffer(buffers, out).dtype,
                                self.buffer(buffers, indices).dtype, at=tuple(int(at or 0) for at in (v, i, o)))
        while self.peek() and _LOCAL.match(self.peek()):
            local, size = self.match(_LOCAL, "a local row").groups()
            k.local[local] = int(size)
        while self.peek() and _LOAD.match(self.peek()):
            number, buffer, index, access = self.match(_LOAD, "a load").groups()
            if int(number) != len(k.loads):
                raise self.error(f"load ${number} out of order: expected ${len(k.loads)}", self.n - 1)
            indirect = _INDIRECT.match(access) if not index else None
            if indirect:
                stride, row, plain, checked, rows, guards = indirect.groups()
                if row != checked:
                    raise self.error(f"${number} adds row ${row} but checks ${checked}", self.n - 1)
                access = plain + (f" if {guards}" if guards else "")
                indirect = Indirect(int(row), int(stride), int(rows))
            access = self.access(access, len(k.extents))
            k.loads.append(Index(access) if index else Load(buffer, self.buffer(buffers, buffer).dtype, access, indirect))
        nodes = {}
        while self.peek() and (self.peek().startswith("  phase ") or self.peek().startswith("  store")):
            k.phases.append(self.phase(k, buffers, nodes))
        if scheduled and k.strategy == Strategy.NONE:
            k.strategy = Strategy.GEMM if k.gemm else Strategy.POINT
        self.reasons(k, whys, first)
        if k.outputs() != _names(outputs):
            raise self.error(f"kernel {name} writes {', '.join('%' + o for o in k.outputs())}, "
                             f"not what its first line says", first)
        return k

    def optional(self, prefix, read):
        if self.peek() is not None and self.peek().startswith(prefix):
            self.n += 1
            return read(self.lines[self.n - 1][len(prefix):])
        return None

    def repeated(self, prefix):
        start = self.n
        while self.peek() is not None and self.peek().startswith(prefix):
            self.n += 1
        return [line[len(prefix):] for line in self.lines[start:self.n]]

    def loops(self, k):
        text = self.match(re.compile(r"  loops: (.*)$"), "'loops: ...'").group(1)
        outer, _, inner = text.partition(" | ")
        loops = ([] if outer == "(scalar)" else outer.split(" ")) + (inner.split(" ") if inner else [])
        extents = []
        for loop in loops:
            m = _LOOP.match(loop)
            if m is None or int(m.group(1)) != len(extents):
                raise self.error(f"loop {loop!r}: expected i{len(extents)}<extent", self.n - 1)
            extents.append(int(m.group(2)))
        k.extents, k.outer = tuple(extents), len(extents) - (len(inner.split(" ")) if inner else 0)

    def schedule(self, k) -> bool:
        """The strategy, CUDA and thread lines; whether the kernel is scheduled at all."""
        scheduled = False
        chunks = _CHUNKS.match(self.peek() or "")
        if chunks:
            self.n += 1
            k.strategy, k.chunks, k.scratch = Strategy.CHUNKS, int(chunks.group(1)), tuple(_names(chunks.group(2)))
        elif _ROWS.match(self.peek() or ""):
            block, tile = _ROWS.match(self.peek()).groups()
            k.strategy, k.block, k.tile = Strategy.ROWS, int(block), int(tile or 0)
            self.n += 1
        cuda = _CUDA.match(self.peek() or "")
        if cuda:
            self.n += 1
            blocks, tile, lanes, fastest, vector, chunks, scratch = cuda.groups()[:7]
            k.gpu = GpuLaunch(int(tile), int(lanes), int(blocks), cuda.group(cuda.re.groups), bool(fastest),
                              int(vector or 1), int(chunks or 1))
            k.scratch = tuple(_names(scratch)) if scratch else k.scratch
            scheduled = True
        parallel = _PARALLEL.match(self.peek() or "")
        if parallel:
            self.n += 1
            if parallel.group(1) is None:
                k.split = Split(k.outer, int(parallel.group(3)))
            else:
                k.split = Split(int(parallel.group(1)), int(parallel.group(3)), int(parallel.group(2)))
            scheduled = True
        else:
            serial = self.optional("  serial: ", lambda t: t)
            if serial is not None:
                k.serial_why, scheduled = serial, True
        k.streams = parse_streams(self.peek() or "")
        self.n += k.streams is not None
        return scheduled or k.strategy != Strategy.NONE

    def gemm(self, m, ndim):
        """The Gemm of a call line; its operands' offsets are over the kernel's loops and k (`ndim`)."""
        routine, operands, out, rows, inner, _, cols = m.groups()[:7]
        dtype = next((d for d, r in GEMMS.items() if r == routine), None)
        if dtype is None:
            raise self.error(f"unknown BLAS routine {routine!r}", self.n - 1)
        a, _, b = operands.partition(", ")
        matrices = [self.matrix(a, ndim, int(rows), int(inner)), self.matrix(b, ndim, int(inner), int(cols))]
        return Gemm(*matrices, int(rows), int(cols), int(inner), out, dtype)

    def matrix(self, text, ndim, rows, cols):
        m = _MATRIX.match(text)
        if m is None:
            raise self.error(f"gemm operand {text!r}: expected %buffer[offset]^T ld N", self.n - 1)
        name, offset, transposed, ld = m.groups()
        access = self.access(offset, ndim) if offset else Access(Affine((0,) * ndim))
        dense = rows if transposed else cols
        return Matrix(name, access, int(ld) if ld else dense, bool(transposed))

    def phase(self, k, buffers, nodes):
        header = _PHASE.match(self.peek())
        kind = PhaseKind.POINT
        if header is None and not _STORE.match(self.peek()):
            raise self.error("expected 'phase N: kind' or 'store %buffer[access] = value'")
        if header:
            if int(header.group(1)) != len(k.phases):
                raise self.error(f"phase {header.group(1)} out of order: expected phase {len(k.phases)}")
            kind = self._enum(PhaseKind, header.group(2), "phase kind", self.n)
            self.n += 1
        phase = Phase([], [], kind == PhaseKind.MAP)
        while self.peek() and _REDUCTION.match(self.peek()):
            number, combine, body = self.match(_REDUCTION, "a reduction").groups()
            if int(number) != len(phase.reductions):
                raise self.error(f"acc{number} out of order: expected acc{len(phase.reductions)}", self.n - 1)
            phase.reductions.append(Reduction(self.expr(body, k, nodes), self._enum(Combine, combine, "combine", self.n - 1), ""))
        while self.peek() and _STORE.match(self.peek()):
            buffer, access, value = self.match(_STORE, "a store").groups()
            dtype = self.buffer(buffers, buffer).dtype
            phase.stores.append(Store(buffer, self.access(access, len(k.extents)), self.expr(value, k, nodes), dtype))
        if kind == PhaseKind.REDUCE and not phase.reductions:
            raise self.error(f"phase {len(k.phases)} of kernel {k.name} reduces nothing")
        self.reduction_dtypes(k, phase)
        return phase

    def reduction_dtypes(self, k, phase):
        """Each reduction's dtype: its body's, else that of a store of it alone."""
        for n, r in enumerate(phase.reductions):
            types = infer_dtypes(r.body, lambda payload: k.loads[payload].dtype)
            readers = [s.dtype for s in phase.stores if s.value.prim == "arg" and s.value.payload == Acc(n)]
            r.dtype = types[id(r.body)] or next(iter(readers), None)
            if r.dtype is None:
                raise self.error(f"kernel {k.name}: the text does not say the dtype of acc{n} (its body is "
                                 "constant and no store writes it alone)", self.n - 1)

    def reasons(self, k, text, line):
        """The `stored because` entries, '%buffer: why' joined by '; ', onto the gemm and the stores."""
        names = set(k.outputs())
        entries, start = [], 0
        for m in re.finditer(rf"(?:^|; ){_NAME}: ", text):
            if m.group(1) in names:
                if entries:
                    entries[-1][1] = text[start:m.start()]
                entries.append([m.group(1), ""])
                start = m.end()
        if entries:
            entries[-1][1] = text[start:]
        elif text:
            raise self.error("'stored because' names none of the kernel's outputs", line)
        if k.gemm and entries and entries[0][0] == k.gemm.out:
            k.gemm = Gemm(*[getattr(k.gemm, f) for f in ("a", "b", "m", "n", "k", "out", "dtype")], entries.pop(0)[1])
        if k.scatter and entries and entries[0][0] == k.scatter.out:
            k.scatter = replace(k.scatter, why=entries.pop(0)[1])
        for store in k.stores:
            if k.gemm and store.buffer == k.gemm.out:  # the epilogue's store: stored for the gemm's reason
                store.why = k.gemm.why
            elif entries and store.buffer == entries[0][0]:
                store.why = entries.pop(0)[1]
        if entries:
            raise self.error(f"'stored because' names %{entries[0][0]}, which no store of the kernel explains", line)

    def access(self, text, nvars):
        text, _, guards = text.partition(" if ")
        form, step = self.form_step(text, nvars)
        found = []
        for guard in filter(None, guards.split(" and ")):
            m = _GUARD.match(guard)
            if m is None:
                raise self.error(f"guard {guard!r}: expected '0 <= form < bound'", self.n - 1)
            divided, g_step, plain, bound = m.groups()
            found.append(Guard(self.form(divided or plain, nvars), int(g_step or 1), int(bound)))
        return Access(form, step, tuple(found))

    def form_step(self, text, nvars):
        m = _STEPPED.fullmatch(text)
        return (self.form(m.group(1), nvars), int(m.group(2))) if m else (self.form(text, nvars), 1)

    def form(self, text, nvars):
        try:
            return _affine(text, nvars)
        except ValueError as e:
            raise self.error(f"index term {e.args[0]!r} in {text!r}: expected N, i<k> or N*i<k> over "
                             f"{nvars} loops", self.n - 1) from None

    def expr(self, text, k, nodes):
        """A scalar expression; equal subexpressions of the kernel are one node (`nodes`)."""
        try:
            steps = _postfix(text)
        except ValueError as e:
            raise self.error(str(e), self.n - 1) from None
        stack = []
        for prim, arity, payload in steps:
            if prim == "arg" and type(payload) is int and payload >= len(k.loads):
                raise self.error(f"${payload} is not a load of kernel {k.name}", self.n - 1)
            args = tuple(stack[len(stack) - arity:]) if arity else ()
            del stack[len(stack) - arity:]
            key = (prim, tuple(map(id, args)), type(payload), repr(payload))  # repr: -0.0 is not 0.0
            stack.append(nodes.setdefault(key, ScalarExpr(prim, args, payload)))
        return stack[0]

    def buffer(self, buffers, name):
        if name not in buffers:
            raise self.error(f"%{name} is not a buffer of the program", self.n - 1)
        return buffers[name]

    def _dtype(self, text, line):
        if text not in DTYPES:
            raise self.error(f"unknown dtype {text!r}: one of {', '.join(DTYPES)}", line)
        return text

    def _enum(self, kind, text, what, line):
        try:
            return kind(text)
        except ValueError:
            raise self.error(f"unknown {what} {text!r}: one of {', '.join(repr(m.value) for m in kind)}",
                             line) from None


_OPEN, _COMMA, _CLOSE = ("punct", "("), ("punct", ","), ("punct", ")")


@functools.lru_cache(maxsize=4096)
def _postfix(text) -> tuple:
    """An expression's text as (primitive, operand count, payload) steps in postorder, or a
    ValueError saying what is wrong; kept, as an unrolled loop repeats its kernels' texts."""
    matches = list(_TOKEN.finditer(text))
    if not matches or "".join(m.group() for m in matches).strip() != text.strip():
        raise ValueError(f"cannot read the expression {text!r}")
    tokens = [(m.lastgroup, m.group(m.lastgroup)) for m in matches]
    steps, position = [], 0

    def take():
        nonlocal position
        if position >= len(tokens):
            raise ValueError(f"the expression {text!r} ends too soon")
        position += 1
        return tokens[position - 1]

    def term():
        kind, value = take()
        leaf = _leaf(kind, value)
        if leaf:
            steps.append(leaf)
            return
        if kind != "word" or value not in PRIMITIVES or take() != _OPEN:
            raise ValueError(f"unknown primitive {value!r} in {text!r}")
        arity, payload, separator = 0, None, None
        if position < len(tokens) and tokens[position] == _CLOSE:
            separator = take()
        while separator != _CLOSE:
            ahead = tokens[position] if position < len(tokens) else None
            if value == "cast" and arity and ahead and ahead[0] == "word" and ahead[1] in DTYPES:
                payload = take()[1]
            else:
                term()
                arity += 1
            separator = take()
            if separator not in (_COMMA, _CLOSE):
                raise ValueError(f"expected ',' or ')' in {text!r}")
        if PRIMITIVES[value].arity != arity:
            raise ValueError(f"{value} takes {PRIMITIVES[value].arity} operands, not {arity}")
        steps.append((value, arity, payload))

    term()
    if position != len(tokens):
        kind, value = tokens[position]
        raise ValueError(f"unexpected {'$' * (kind == 'load') + value!r} after the expression")
    return tuple(steps)


def _leaf(kind, value):
    """The step of a token that is a whole operand (a load, a number, True/False, an accumulator), or None."""
    if kind == "load":
        return "arg", 0, int(value)
    if kind == "num":
        return "const", 0, _number(value)
    if kind == "word" and value in _ATOMS:
        return "const", 0, _ATOMS[value]
    if kind == "word" and _ACC.fullmatch(value):
        return "arg", 0, Acc(int(value[3:]))
    return None


@functools.lru_cache(maxsize=4096)
def _affine(text, nvars) -> Affine:
    """The Affine of an index form's text over `nvars` loops; ValueError naming a bad term."""
    coeffs, const = [0] * nvars, 0
    for term in text.replace("- ", "+ -").split(" + "):
        m = _TERM.fullmatch(term)
        if m is None or (m.group(3) and int(m.group(3)) >= nvars):
            raise ValueError(term)
        if m.group(1):
            const += int(m.group(1))
        else:
            scale = m.group(2) or ""
            coeffs[int(m.group(3))] += -1 if scale == "-" else int(scale[:-1]) if scale else 1
    return Affine(tuple(coeffs), const)


def _names(text) -> list:
    """The buffer names of '%a, %b'."""
    return [name[1:] for name in filter(None, text.split(", "))]


def _number(text):
    return float(text) if any(c in text for c in ".en") else int(text)
