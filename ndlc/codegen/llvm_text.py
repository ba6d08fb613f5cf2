"""The text of an llvmlite.ir module, the same text as `str(module)` byte for byte, written in
about half the time: llvmlite formats each instruction through several layers of `str.format`
and cached references, which was half of building a kernel module's IR in Python. Instructions
of the kinds a kernel is mostly made of (arithmetic, loads, stores, addresses, comparisons,
casts, selects, branches) are written here with one f-string each; every other kind, and any
instruction with metadata, as llvmlite writes it. tests/codegen/test_llvm_text.py checks the
text against llvmlite's for every kernel of a few models.

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
    types = {}  # id(type) -> its text: the types live as long as the module
    for value in module.globals.values():
        if type(value) is ir.Function and value.blocks:
            lines.append(function_text(value, types))
        else:
            lines.append(str(value))
    lines += module._get_metadata_lines()
    return "\n".join(lines)


def function_text(function, types=None) -> str:
    """A function's definition, as llvmlite's Function.__str__ writes it (`types`: id(type) ->
    its text, of types that live as long as the function)."""
    types = {} if types is None else types
    out = []
    function.descr_prototype(out)
    out.append("{\n")
    for block in function.blocks:
        out.append(f"{block._format_name()}:\n")
        out += [f"  {_instruction(x, types)}\n" for x in block.instructions]
    out.append("}\n")
    return "".join(out)


def _instruction(x, types) -> str:
    """One instruction's line, as llvmlite's NamedValue._to_string writes it (without the indent)."""
    kind = type(x)
    if x.metadata:
        return str(x)

    def typed(value):
        return f"{_type(value.type, types)} {value.get_reference()}"
    if kind is ins.Instruction:
        opname = f"{x.opname} {' '.join(x.flags)}" if x.flags else x.opname
        text = f"{opname} {_type(x.type, types)} {', '.join([op.get_reference() for op in x.operands])}"
    elif kind is ins.LoadInstr:
        text = f"load {_type(x.type, types)}, {typed(x.operands[0])}{_align(x)}"
    elif kind is ins.StoreInstr:
        return f"store {typed(x.operands[0])}, {typed(x.operands[1])}{_align(x)}"
    elif kind is ins.GEPInstr:
        opname = "getelementptr inbounds" if x.inbounds else "getelementptr"
        text = f"{opname} {_type(x.source_etype, types)}, {typed(x.pointer)}, {', '.join([typed(i) for i in x.indices])}"
    elif kind in _BRANCHES:
        return f"{x.opname} {', '.join([typed(op) for op in x.operands])}"
    elif kind in _COMPARISONS:
        lhs, rhs = x.operands
        flags = "".join(" " + flag for flag in x.flags)
        text = f"{x.opname}{flags} {x.op} {typed(lhs)}, {rhs.get_reference()}"
    elif kind is ins.CastInstr:
        text = f"{x.opname} {typed(x.operands[0])} to {_type(x.type, types)}"
    elif kind is ins.SelectInstr:
        text = f"select {' '.join(x.flags)} {', '.join([typed(op) for op in x.operands])}"
    else:
        return str(x)
    if isinstance(x.type, ir.VoidType):
        return text.rstrip()
    return f"{x.get_reference()} = {text.rstrip()}"


def _type(ty, types) -> str:
    text = types.get(id(ty))
    if text is None:
        text = types[id(ty)] = str(ty)
    return text


def _align(x) -> str:
    return "" if x.align is None else f", align {x.align}"
