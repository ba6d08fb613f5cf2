"""The backend-independent lowering rules (ir/rules.py) and both backends following them: integer
powers, bool arithmetic and reductions compiled for the CPU and for CUDA (under the host emulation)
give the same bits."""
import shutil

import numpy as np
import pytest

from ndlc.codegen.cuda import lower_to_cuda
from ndlc.ir import interpret, parse
from ndlc.ir.kernel import Combine
from ndlc.ir.rules import (POWER_EXPANSION_LIMIT, combine_primitive, expanded_power, identity,
                           power_by_squaring, primitive_for)
from ndlc.ir.scalar import PRIMITIVES
from ndlc.jit.compile_ir import compile_ir
from ndlc.jit.pipeline import Stages, cuda_kernels, executor_target
from ndlc.runtime.cuda import CudaProgram, EmulatedExecutor

RULES = """
graph @rules(%x: f32[4,16], %a: bool[4,16], %b: bool[4,16], %n: i32[4,16], %d: f64[4,16]) {
  %0 = power_scalar(%x, scalar=9) : f32[4,16]
  %1 = power_scalar(%x, scalar=-12) : f32[4,16]
  %2 = power_scalar(%d, scalar=64) : f64[4,16]
  %3 = add(%a, %b) : bool[4,16]
  %4 = multiply(%a, %b) : bool[4,16]
  %5 = max(%n, axes=(1,)) : i32[4]
  %6 = max(%a, axes=(1,)) : bool[4]
  %7 = summation(%a, axes=(1,)) : bool[4]
  %8 = max(%x, axes=(1,)) : f32[4]
  return %0, %1, %2, %3, %4, %5, %6, %7, %8
}"""


def inputs():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 16)) * 1.3).astype(np.float32)
    a, b = rng.random((4, 16)) < 0.3, rng.random((4, 16)) < 0.5
    a[2] = False  # a row of bools whose max and sum are the identity
    n = rng.integers(-(1 << 31), -(1 << 31) + 3, (4, 16)).astype(np.int32)  # near the i32 max identity
    d = 1 + rng.standard_normal((4, 16)) / 64
    return x, a, b, n, d


def test_the_table():
    assert [primitive_for(p, "bool") for p in ("add", "sub", "mul", "max", "min", "lt")] == \
        ["or", "xor", "and", "or", "and", "lt"]
    assert primitive_for("add", "f32") == "add"
    assert [combine_primitive(c, d) for c in Combine for d in ("f32", "bool")] == ["add", "or", "max", "or"]
    assert identity("add", "bool") is False and identity(Combine.ADD, "f64") == 0
    assert identity("max", "f32") == -np.inf and identity("max", "u8") == 0
    assert identity("max", "i32") == -(1 << 31) and identity("max", "i64") == -(1 << 63)
    assert [expanded_power(e, "f32") for e in (9, -12.0, POWER_EXPANSION_LIMIT, 65, 2.5, True)] == \
        [9, -12, POWER_EXPANSION_LIMIT, None, None, None]
    assert expanded_power(2, "i32") is None  # integer powers are not multiplications of floats


def test_power_by_squaring_multiplies_in_one_order():
    steps = []

    def multiply(a, b):
        steps.append((a, b))
        return f"({a}*{b})"
    x12 = power_by_squaring("x", -12, multiply, "1", lambda a, b: f"{a}/{b}")
    assert steps == [("x", "x"), ("(x*x)", "(x*x)"), ("((x*x)*(x*x))", "((x*x)*(x*x))"),
                     ("((x*x)*(x*x))", "(((x*x)*(x*x))*((x*x)*(x*x)))")]  # x^2, x^4, x^8, x^4 * x^8
    assert eval(x12, {"x": 2.0}) == 2.0 ** -12
    assert power_by_squaring("x", 0, multiply, "1", None) == "1" and len(steps) == 4


def test_every_primitive_is_spelled_for_both_backends_or_for_neither():
    structural = {"cast", "index", "const", "arg"}
    for name, p in PRIMITIVES.items():
        spelled = (any(p.llvm), bool(p.cuda))
        assert spelled == ((False, False) if name in structural else (True, True)), name


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulation needs g++ (C++20)")
def test_cpu_and_emulated_cuda_agree_bit_for_bit():
    graph = parse(RULES)
    want = interpret(graph, *inputs())
    cpu = compile_ir(RULES)(*inputs())
    kernels = cuda_kernels(Stages(graph.name), graph, None, executor_target(None))
    module = lower_to_cuda(kernels)
    gpu = CudaProgram(kernels, module, {}, executor=EmulatedExecutor()).run(*inputs())
    for got_cpu, got_gpu, expected in zip(cpu, gpu, want):
        assert got_cpu.dtype == got_gpu.dtype == expected.dtype
        assert got_cpu.tobytes() == got_gpu.tobytes()
        np.testing.assert_allclose(got_cpu, expected, rtol=2e-6)
    assert "pow(" not in module.source and "powf(" not in module.source  # every power was expanded
