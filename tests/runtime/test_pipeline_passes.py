"""runtime/native.py `optimise`: modules of codegen's own vectors go through the function
simplification pipeline only, between the always-inliner with global dead code elimination and
the function attributes' inference; so do kernels without loops."""
import re

import llvmlite.binding as llvm
import numpy as np

from ndlc.ir import parse
from ndlc.jit.compile import compile_graph
from ndlc.runtime import native

MODULE = """
define internal float @twice(float %x) {
  %y = fadd float %x, %x
  ret float %y
}

define internal float @kept(float %x) noinline {
  %y = fmul float %x, %x
  ret float %y
}

define void @kernel(ptr noalias %out, ptr noalias %in, i64 %n) {
entry:
  %i = alloca i64
  store i64 0, ptr %i
  br label %head
head:
  %k = load i64, ptr %i
  %more = icmp slt i64 %k, %n
  br i1 %more, label %body, label %done
body:
  %p = getelementptr float, ptr %in, i64 %k
  %v = load float, ptr %p
  %w = call float @twice(float %v) alwaysinline
  %c = call float @kept(float 3.0)
  %s = fadd float %w, %c
  %q = getelementptr float, ptr %out, i64 %k
  store float %s, ptr %q
  %next = add i64 %k, 1
  store i64 %next, ptr %i
  br label %head
done:
  ret void
}
"""


def _optimised(vectorise, timing=None):
    tm = native.target_machine()
    triple, layout = native.host_target()
    module = llvm.parse_assembly(f'target triple = "{triple}"\ntarget datalayout = "{layout}"\n{MODULE}')
    native.optimise(module, tm, vectorise, timing)
    module.verify()
    return str(module)


def test_codegen_vectors_modules_are_simplified_inlined_and_pruned():
    optimised = _optimised(False)
    assert "@twice" not in optimised, "inlined where its call says so, then dropped"
    assert re.search(r"define internal \w* ?float @kept", optimised), "a noinline function stays"
    assert "alloca" not in optimised, "the loop's counter promoted to a register"
    kernel = re.search(r"define void @kernel[^{]*#(\d+)", optimised)
    assert kernel and "nounwind" in re.search(rf"attributes #{kernel.group(1)} = {{[^}}]*}}", optimised).group(0)


def test_the_pass_timing_report_names_the_simplification_passes():
    timing = []
    _optimised(False, timing)
    assert len(timing) == 1 and "InstCombinePass" in timing[0] and "AlwaysInlinerPass" in timing[0]
    timing = []
    _optimised(True, timing)
    assert "LoopVectorizePass" in timing[0]


def test_a_kernel_without_loops_joins_the_codegen_vectors_module(monkeypatch, tmp_path, fresh_machine):
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    translated, modules = native._translated, []

    def recording(text, vectorise):
        modules.append((text.count("define weak_odr"), vectorise))
        return translated(text, vectorise)
    monkeypatch.setattr(native, "_translated", recording)
    program = compile_graph(parse("""graph @m(%x: f32[16,64], %c: f32[]) {
  %0 = mul_scalar(%x, scalar=2.0) : f32[16,64]
  %1 = add_scalar(%c, scalar=1.0) : f32[]
  return %0, %1
}"""), cached=False)
    assert sorted(list(k.extents) for k in program.kernels.kernels) == [[], [16, 64]]
    assert [m for m in modules if m[0]] == [(2, False)], "both kernels in one module, no vectorisers"
    x = np.random.default_rng(0).standard_normal((16, 64), dtype=np.float32)
    doubled, count = program.run(x, np.float32(2.5))
    np.testing.assert_array_equal(doubled, x * np.float32(2.0))
    assert count == np.float32(3.5)
