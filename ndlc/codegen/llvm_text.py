"""The text of an llvmlite.ir module, the same text as `str(module)` byte for byte (so LLVM
optimises the same IR), written in 0.6 of llvmlite's time: llvmlite formats each instruction
through several layers of `str.format` and cached references, a third of building a kernel
module's IR in Python. Instructions of the kinds a kernel is mostly made of (arithmetic, loads,
stores, addresses, comparisons, casts, selects, branches) are written here with one f-string
each; every other kind, and any instruction with metadata, as llvmlite writes it.
tests/codegen/test_llvm_text.py checks the text against llvmlite's for kernels of every schedule.

Also here, for the same reason: `UniqueNames`, llvmlite's names for a function's values (an
unnamed value `.N`, a repeated name `name.N`) given without llvmlite's search for a free one;
and `FunctionText`, a function defined by IR text made once per process (mathlib's polynomials:
codegen/mathlib.py), instead of instructions built again in every module that calls it.
"""
from collections import defaultdict

from llvmlite import ir
from llvmlite.ir import _utils
from llvmlite.ir import instructions as ins

_COMPARISONS = (ins.ICMPInstr, ins.FCMPInstr)
_BRANCHES = (ins.Branch, ins.ConditionalBranch)
_VECTOR_OPS = (ins.ShuffleVector, ins.InsertElement, ins.ExtractElement)  # written as "opname typed operands"
_LOCALS = (ins.Instruction, ir.Argument, ir.Block)  # named values referenced as llvmlite's NamedValue does


class UniqueNames(_utils.NameScope):
    """A function's value names as llvmlite's NameScope gives them (the names are part of the IR
    text, which must not change), each found in one step: the next number of its base name."""

    def __init__(self, scope):
        """Takes over `scope`'s names (a new function's, naming its arguments)."""
        super().__init__()
        self._useset = set(scope._useset)
        self._basenamemap = defaultdict(int, scope._basenamemap)

    def register(self, name, deduplicate=False):
        used = self._useset
        if name in used:
            if not deduplicate:
                raise _utils.DuplicatedNameError(name)
            base, counts = name, self._basenamemap
            while name in used:
                counts[base] += 1
                name = f"{base}.{counts[base]}"
        used.add(name)
        return name


def uniquely_named(function):
    """`function` (an llvmlite ir.Function without blocks yet), its values named by UniqueNames."""
    function.scope = UniqueNames(function.scope)
    return function


class FunctionText(ir.Function):
    """A function of a module defined by `text`, its definition as llvmlite writes it (made
    once, in a module of its own); the functions it calls must be declared in the module too."""

    def __init__(self, module, ftype, name, text):
        super().__init__(module, ftype, name)
        self.text = text

    def descr(self, buf):
        buf.append(self.text)


def module_text(module) -> str:
    """`str(module)` (the module's IR text, as llvmlite writes it), written faster."""
    lines = [f'; ModuleID = "{module.name}"', f'target triple = "{module.triple}"',
             f'target datalayout = "{module.data_layout}"', ""]
    lines += [it.get_declaration() for it in module.get_identified_types().values()]
    writer = _Writer()
    for value in module.globals.values():
        lines.append(writer.function(value) if type(value) is ir.Function and value.blocks else str(value))
    lines += module._get_metadata_lines()
    return "\n".join(lines)


def function_text(function) -> str:
    """A function's definition, as llvmlite's Function.__str__ writes it."""
    return _Writer().function(function)


class _Writer:
    """Writes functions' instructions, each value's reference and each type's text made once
    (keyed by id: the values and types live as long as the module being written)."""

    def __init__(self):
        self.types, self.refs = {}, {}

    def function(self, function) -> str:
        out = []
        function.descr_prototype(out)
        out.append("{\n")
        line = self.line
        for block in function.blocks:
            out.append(f"{block._format_name()}:\n")
            out += [f"  {line(x)}\n" for x in block.instructions]
        out.append("}\n")
        return "".join(out)

    def ref(self, value) -> str:
        """`value.get_reference()`; a local value's made here (`%"name"`, as llvmlite quotes it)."""
        text = self.refs.get(id(value))
        if text is None:
            name = value._name if isinstance(value, _LOCALS) else '"'
            text = f'%"{name}"' if '"' not in name and "\\" not in name else value.get_reference()
            self.refs[id(value)] = text
        return text

    def type(self, ty) -> str:
        text = self.types.get(id(ty))
        if text is None:
            text = self.types[id(ty)] = str(ty)
        return text

    def typed(self, value) -> str:
        return f"{self.type(value.type)} {self.ref(value)}"

    def line(self, x) -> str:
        """One instruction, as llvmlite's NamedValue._to_string writes it (without the indent)."""
        kind, ref, typed = type(x), self.ref, self.typed
        if x.metadata:
            return str(x)
        if kind is ins.Instruction:
            opname = f"{x.opname} {' '.join(x.flags)}" if x.flags else x.opname
            text = f"{opname} {self.type(x.type)} {', '.join([ref(op) for op in x.operands])}"
        elif kind is ins.LoadInstr:
            text = f"load {self.type(x.type)}, {typed(x.operands[0])}{_align(x)}"
        elif kind is ins.StoreInstr:
            return f"store {typed(x.operands[0])}, {typed(x.operands[1])}{_align(x)}"
        elif kind is ins.GEPInstr:
            opname = "getelementptr inbounds" if x.inbounds else "getelementptr"
            text = f"{opname} {self.type(x.source_etype)}, {typed(x.pointer)}, {', '.join([typed(i) for i in x.indices])}"
        elif kind in _BRANCHES:
            return f"{x.opname} {', '.join([typed(op) for op in x.operands])}"
        elif kind in _COMPARISONS:
            lhs, rhs = x.operands
            flags = "".join(" " + flag for flag in x.flags)
            text = f"{x.opname}{flags} {x.op} {typed(lhs)}, {ref(rhs)}"
        elif kind is ins.CastInstr:
            text = f"{x.opname} {typed(x.operands[0])} to {self.type(x.type)}"
        elif kind is ins.SelectInstr:
            text = f"select {' '.join(x.flags)} {', '.join([typed(op) for op in x.operands])}"
        elif kind is ins.CallInstr:
            text = self.call(x)
        elif kind in _VECTOR_OPS:
            text = f"{x.opname} {', '.join([typed(op) for op in x.operands])}"
        elif kind is ins.AllocaInstr:
            count = f", {typed(x.operands[0])}" if x.operands else ""
            text = f"alloca {self.type(x.allocated_type)}{count}{_align(x)}"
        elif kind is ins.Ret:
            return f"{x.opname} {typed(x.operands[0])}" if x.operands else x.opname
        elif kind is ins.AtomicRMW:
            ptr, val = x.operands
            text = f"atomicrmw {x.operation} {typed(ptr)}, {typed(val)} {x.ordering}"
        else:
            return str(x)
        if isinstance(x.type, ir.VoidType):
            return text.rstrip()
        return f"{ref(x)} = {text.rstrip()}"


    def call(self, x) -> str:
        """A call, as llvmlite's CallInstr._descr writes it (without its metadata)."""
        fnty, arg_attributes = x.callee.function_type, x.arg_attributes
        args = ", ".join([f"{self.type(a.type)} {' '.join(arg_attributes[i]._to_list(a.type)) + ' '}{self.ref(a)}"
                          if i in arg_attributes else self.typed(a) for i, a in enumerate(x.operands[1:])])
        callee = f"{fnty if fnty.var_arg else self.type(fnty.return_type)} {self.ref(x.callee)}"
        if x.cconv:
            callee = f"{x.cconv} {callee}"
        tail = f"{x.tail} " if x.tail else ""
        fastmath = " " + " ".join(x.fastmath._to_list(fnty.return_type)) if x.fastmath else ""
        attributes = " " + " ".join(x.attributes._to_list(fnty.return_type)) if x.attributes else ""
        return f"{tail}call{fastmath} {callee}({args}){attributes}"


def _align(x) -> str:
    return "" if x.align is None else f", align {x.align}"


def string_attribute(function, name, value):
    """Give llvmlite ir.Function `function` LLVM's string attribute `"name"="value"` (llvmlite's
    attribute sets take only LLVM's keywords; the text writes the entry as given)."""
    set.add(function.attributes, f'"{name}"="{value}"')
