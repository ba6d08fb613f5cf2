"""codegen/llvm_text.py writes a kernel module's IR text faster than llvmlite, and the same text
byte for byte (so LLVM optimises the same IR into the same code); UniqueNames names values as
llvmlite does; mathlib's functions, made once per process as text, are the text llvmlite writes
for them built in the module; and the code generator's fingerprint covers every source that
shapes the IR it emits."""
import ast
import os
import sys

import pytest
from llvmlite import ir

import ndlc
from ndlc.codegen import kernel_key, mathlib
from ndlc.codegen.llvm import kernel_ir
from ndlc.codegen.llvm_program import lower_to_llvm
from ndlc.codegen.llvm_text import UniqueNames, module_text, uniquely_named
from ndlc.ir import parse
from ndlc.jit.compile import compile_graph

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
from llvm_identity import normalised  # noqa: E402

# kernels of every schedule: a chunks kernel (split, with an Adam-like update), rows with a
# reduction along the last axis, a padded (guarded) conv-like stack, bool and integer values
PROGRAMS = {
    "norm": """graph @n(%x: f32[512,64], %g: f32[64], %m: f32[64] state) {
  %s = summation(%x, axes=(0,)) : f32[64]
  %q = multiply(%x, %x) : f32[512,64]
  %v = summation(%q, axes=(0,)) : f32[64]
  %r = divide(%v, %s) : f32[64]
  %e = exp(%r) : f32[64]
  %t = tanh(%g) : f32[64]
  %u = add(%m, %t) : f32[64]
  return %e, new %m = %u
}""",
    "softmax": """graph @s(%x: f32[33,100]) {
  %mx = max(%x, axes=(1,)) : f32[33]
  %r = reshape(%mx, shape=(33,1)) : f32[33,1]
  %b = broadcast_to(%r, shape=(33,100)) : f32[33,100]
  %n = negate(%b) : f32[33,100]
  %d = add(%x, %n) : f32[33,100]
  %e = exp(%d) : f32[33,100]
  %s = summation(%e, axes=(1,)) : f32[33]
  %l = log(%s) : f32[33]
  return %l
}""",
    "guards": """graph @g(%x: f32[4,3,10], %y: i32[40]) {
  %p = pad(%x, widths=((0, 0), (1, 1), (2, 2))) : f32[4,5,14]
  %z = greater(%y, %y) : bool[40]
  %c = cast(%z, dtype=f64) : f64[40]
  %w = power_scalar(%c, scalar=2.5) : f64[40]
  return %p, %w
}""",
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_the_writer_writes_llvmlites_text(name):
    program = lower_to_llvm(compile_graph(parse(PROGRAMS[name])).kernels)
    module = kernel_ir(name, list(program.kernels.values()), "x86_64-unknown-linux-gnu")
    assert module_text(module) == str(module)


def test_the_writer_writes_what_it_does_not_know_as_llvmlite_does():
    module = ir.Module("m")
    fn = uniquely_named(ir.Function(module, ir.FunctionType(ir.IntType(64), [ir.PointerType()]), "f"))
    b = ir.IRBuilder(fn.append_basic_block())
    counter = b.alloca(ir.IntType(64), name="i")
    total = b.atomic_rmw("add", fn.args[0], ir.Constant(ir.IntType(64), 1), "monotonic")
    b.store(total, counter).set_metadata("nontemporal", module.add_metadata([ir.IntType(32)(1)]))
    b.fence("seq_cst")
    b.ret(b.load(counter))
    assert module_text(module) == str(module)
    assert "atomicrmw add" in module_text(module) and "!nontemporal !0" in module_text(module)


def test_the_writers_calls_vector_operations_allocas_and_returns_are_llvmlites():
    """Every form of the kinds the writer makes itself: calls with and without fast-math flags, a
    tail marker, a calling convention, argument and function attributes, a variadic callee and a
    metadata argument; element inserts, extracts and shuffles; allocas with a count and alignment;
    returns of a value and of nothing."""
    f32, i32, i64, vector = ir.FloatType(), ir.IntType(32), ir.IntType(64), ir.VectorType(ir.FloatType(), 4)
    module = ir.Module("m")
    fn = uniquely_named(ir.Function(module, ir.FunctionType(vector, [vector, ir.PointerType()]), "f"))
    b = ir.IRBuilder(fn.append_basic_block())
    lane = b.extract_element(fn.args[0], i32(2))
    inserted = b.insert_element(fn.args[0], lane, i32(0))
    mask = ir.Constant(ir.VectorType(i32, 4), [3, 2, 1, 0])
    shuffled = b.shuffle_vector(inserted, ir.Constant(vector, ir.Undefined), mask)
    slots = b.alloca(f32, size=i64(4), name="slots")
    slots.align = 16
    b.alloca(vector)
    total = b.call(ir.Function(module, ir.FunctionType(f32, [f32, vector]), "llvm.vector.reduce.fadd.v4f32"), [f32(-0.0), shuffled],
                   fastmath=("nnan", "reassoc"), tail=True)
    callee = ir.Function(module, ir.FunctionType(f32, [f32, ir.PointerType()]), "g")
    callee.calling_convention = "fastcc"
    b.call(callee, [total, fn.args[1]], cconv="fastcc", attrs=("nounwind",), arg_attrs={1: ("noalias",)})
    printf = ir.Function(module, ir.FunctionType(i32, [ir.PointerType()], var_arg=True), "printf")
    b.call(printf, [fn.args[1], total, lane])
    b.call(module.declare_intrinsic("llvm.assume", fnty=ir.FunctionType(ir.VoidType(), [ir.IntType(1)])),
           [ir.IntType(1)(1)])
    b.call(ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.MetaDataType()]), "uses"),
           [module.add_metadata([i32(7)])])
    b.ret(shuffled)
    other = uniquely_named(ir.Function(module, ir.FunctionType(ir.VoidType(), []), "h"))
    ir.IRBuilder(other.append_basic_block()).ret_void()
    assert module_text(module) == str(module)
    assert "tail call nnan reassoc float" in module_text(module) and "fastcc float" in module_text(module)


def test_unique_names_are_llvmlites_names():
    def names(scope_of):
        fn = scope_of(ir.Function(ir.Module(), ir.FunctionType(ir.VoidType(), [ir.IntType(8)] * 2), "f"))
        b = ir.IRBuilder(fn.append_basic_block("loop"))
        values = [b.add(fn.args[0], fn.args[1], name=name) for name in ("", "x", "", "x", "x.1", "", "x")]
        blocks = [fn.append_basic_block(name) for name in ("loop", "loop", "")]
        return [v.name for v in values + blocks + list(fn.args)]
    assert names(uniquely_named) == names(lambda fn: fn) == [
        ".4", "x", ".5", "x.1", "x.1.1", ".6", "x.2", "loop.1", "loop.2", ".7", ".1", ".2"]  # .3: the return value


def test_a_name_given_twice_without_deduplication_is_refused():
    scope = UniqueNames(ir.Function(ir.Module(), ir.FunctionType(ir.VoidType(), []), "f").scope)
    scope.register("x")
    with pytest.raises(NameError, match="x"):
        scope.register("x")


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name,ty", [("exp", ir.FloatType()), ("log", ir.VectorType(ir.FloatType(), 8)),
                                     ("tanh", ir.DoubleType()), ("pow", ir.FloatType())])
def test_mathlibs_text_is_the_function_llvmlite_writes(name, ty, fused):
    """A function made once per process as text: the same definition (and the intrinsics it calls
    declared beside it) as when built in the module, for a target with fused multiply-adds or not."""
    arity = 2 if name == "pow" else 1
    built = ir.Module()
    fn = ir.Function(built, ir.FunctionType(ty, [ty] * arity), f"ndlc.{name}.{ty}")
    fn.linkage = "internal"
    fn.attributes.add("readnone")
    fn.attributes.add("nounwind")
    body = mathlib.Builder(fn.append_basic_block("entry"), fused)
    body.ret(getattr(mathlib, name)(body, *fn.args))

    module = ir.Module()
    caller = ir.Function(module, ir.FunctionType(ty, [ty] * arity), "caller")
    b = ir.IRBuilder(caller.append_basic_block("entry"))
    b.ret(mathlib.call(b, name, list(caller.args), inline=True, fused=fused))
    made = [str(g) for g in module.globals.values() if g is not caller]
    assert made == [str(g) for g in built.globals.values()]
    assert module_text(module) == str(module)


def test_the_identity_tools_normal_form_ignores_names_only():
    one = 'define void @"f"(ptr %a) {\nentry:\n  %x.1 = load i64, ptr %a ; c\n  br label %"loop"\nloop:\n  ret void\n}\n'
    renamed = 'define void @"f"(ptr %b) {\nentry:\n  %7 = load i64, ptr %b\n  br label %next\nnext:\n  ret void\n}\n'
    other = 'define void @"f"(ptr %a) {\nentry:\n  %x.1 = load i32, ptr %a\n  br label %loop\nloop:\n  ret void\n}\n'
    assert normalised(one) == normalised(renamed) != normalised(other)


def _imported(path) -> set:
    """The ndlc source files module `path` imports (relative imports)."""
    found, package = set(), os.path.dirname(path)
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package
            for _ in range(node.level - 1):
                base = os.path.dirname(base)
            module = os.path.join(base, *node.module.split(".")) if node.module else base
            candidates = [module + ".py"] + [os.path.join(module, a.name + ".py") for a in node.names]
            found |= {c for c in candidates if os.path.isfile(c)}
    return found


def test_the_fingerprint_covers_every_source_the_emitted_ir_depends_on():
    """Native code cached by kernel is keyed by kernel_key.FINGERPRINT: every codegen module that
    codegen/llvm.py reaches, and every IR module they read, is hashed (errors.py: messages only)."""
    root = os.path.dirname(os.path.abspath(ndlc.__file__))
    seen, todo, read = set(), [os.path.join(root, "codegen", "llvm.py")], set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            for found in _imported(path):
                if os.path.basename(os.path.dirname(found)) == "codegen":
                    todo.append(found)
                else:
                    read.add(found)
    sources = {os.path.relpath(p, root) for p in seen | read} - {"errors.py"}
    assert sources <= set(kernel_key._GENERATOR), sorted(sources - set(kernel_key._GENERATOR))
