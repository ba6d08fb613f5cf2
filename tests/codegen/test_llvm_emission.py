"""The LLVM IR the CPU code generator emits, kept small: each distinct computation at a kernel's
point once (structurally equal expressions, which fusion's recomputation and the Kernel IR parser
make as separate trees, share one value), and mathlib's polynomials as one function per module,
inlined where the value varies along the loops and called, hoisted by LLVM, where it does not.
These kernels' loops are codegen's vectors (codegen/llvm_lanes.py): a value is a `<8 x float>`."""
import re

import numpy as np

from ndlc.codegen.llvm_program import lower_to_llvm
from ndlc.ir import parse, parse_kernels
from ndlc.jit.compile import compile_graph


def _compiled(text):
    return compile_graph(parse(text))


def _kernel_function(llvm_text):
    """The text of the (only) kernel's loop nest function."""
    return re.search(r'define internal void @"ndlc_k\w+\.body"\(.*?\n}', llvm_text, re.S).group(0)


def test_equal_expressions_at_a_point_are_emitted_once():
    compiled = _compiled("""graph @m(%x: f32[64]) {
  %e = exp(%x) : f32[64]
  %a = multiply(%e, %x) : f32[64]
  %b = add(%e, %x) : f32[64]
  return %a, %b
}""")
    planned = compiled.ir("planned")
    assert re.search(r"store %\w+\[i0\] = mul\(exp\(\$0\), \$0\)", planned)
    assert re.search(r"store %\w+\[i0\] = add\(exp\(\$0\), \$0\)", planned)
    program = parse_kernels(planned)  # each store's exp($0) now a tree of its own
    body = _kernel_function(str(lower_to_llvm(program)))
    assert body.count('call <8 x float> @"ndlc.exp.<8 x float>"') == 1  # 64 elements: no scalar remainder
    assert body.count("load <8 x float>") == 1
    x = np.linspace(-2, 2, 64, dtype=np.float32)
    a, b = compiled.run(x)
    np.testing.assert_allclose(a, np.exp(x) * x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b, np.exp(x) + x, rtol=1e-6, atol=1e-6)


def test_math_is_inlined_where_it_varies_and_called_where_it_is_loop_invariant():
    compiled = _compiled("""graph @m(%x: f32[64], %s: f32[1]) {
  %b = broadcast_to(%s, shape=(64,)) : f32[64]
  %p = power(%b, %b) : f32[64]
  %e = exp(%x) : f32[64]
  %r = add(%e, %p) : f32[64]
  return %r
}""")
    llvm = compiled.ir("llvm")
    assert re.search(r'call <8 x float> @"ndlc\.exp\.<8 x float>"\(.*\) alwaysinline', llvm)
    assert re.search(r'call float @"ndlc\.pow\.float"\(.*\) noinline', llvm)  # one scalar, splatted
    assert llvm.count('define internal float @"ndlc.pow.float"') == 1 and "ndlc.pow.<" not in llvm
    optimized = compiled.ir("llvm_opt")
    assert "@\"ndlc.exp" not in optimized  # inlined
    assert re.search(r"<(4|8|16) x float>", optimized)
    x, s = np.linspace(-2, 2, 64, dtype=np.float32), np.array([1.5], np.float32)
    (r,) = compiled.run(x, s)
    np.testing.assert_allclose(r, np.exp(x) + np.float32(1.5) ** np.float32(1.5), rtol=1e-6)


def test_a_stacks_point_reads_only_its_own_input():
    """At each point of a stack's axis the other inputs' guards are known to fail: their loads
    emit nothing (they read 0), so the kernel loads each input once, not T times per point."""
    inputs = [np.full((4, 32), i, np.float32) for i in range(5)]
    compiled = _compiled(f"""graph @s({", ".join(f"%x{i}: f32[4,32]" for i in range(5))}) {{
  %0 = stack({", ".join(f"%x{i}" for i in range(5))}, axis=0) : f32[5,4,32]
  %1 = exp(%0) : f32[5,4,32]
  return %1
}}""")
    assert _kernel_function(compiled.ir("llvm")).count("load <8 x float>") == 5
    np.testing.assert_allclose(compiled.run(*inputs)[0], np.exp(np.stack(inputs)), rtol=1e-6)


def _repeated_arithmetic(function):
    """The integer multiplications and additions of `function`'s text that repeat an earlier one
    of its basic block (the same operands), for LLVM to remove."""
    repeats, seen = [], set()
    for line in function.splitlines():
        if line.endswith(":"):
            seen = set()
        found = re.match(r'\s+%"?[\w.]+"? = ((mul|add) i64 .*)$', line)
        if found:
            if found.group(1) in seen:
                repeats.append(found.group(1))
            seen.add(found.group(1))
    return repeats


def test_address_products_and_partial_sums_are_emitted_once_per_block():
    """Accesses at one point whose affine forms share terms (a permuted operand: i*128 + j*16 + k
    beside i*128 + k*8 + j) compute each product and each partial sum once."""
    compiled = _compiled("""graph @p(%x: f32[4,8,16], %w: f32[4,16,8], %v: f32[4,16,8]) {
  %t = permute(%w, axes=(0, 2, 1)) : f32[4,8,16]
  %u = permute(%v, axes=(0, 2, 1)) : f32[4,8,16]
  %a = add(%x, %t) : f32[4,8,16]
  %b = multiply(%a, %u) : f32[4,8,16]
  return %b
}""")
    body = _kernel_function(compiled.ir("llvm"))
    assert "mul i64" in body and _repeated_arithmetic(body) == []
    rng = np.random.default_rng(0)
    x, w, v = (rng.standard_normal(s, dtype=np.float32) for s in ((4, 8, 16), (4, 16, 8), (4, 16, 8)))
    np.testing.assert_array_equal(compiled.run(x, w, v)[0], (x + w.transpose(0, 2, 1)) * v.transpose(0, 2, 1))
