"""Innermost loops shaped for LLVM's vectoriser (codegen/llvm_vector.py): contiguous loops run as
one, and a row whose length the vector width does not divide runs as its largest multiple of the
width and a remainder, so that LLVM vectorises it at full width rather than at a width dividing
the row (LeNet's 28-wide feature maps ran 4 wide); a reduction's rows are not split."""
import re

import numpy as np
import pytest

from ndlc.ir import parse
from ndlc.jit.compile import compile_graph


def _compiled(text):
    return compile_graph(parse(text))


def _bounds(llvm):
    """The constant trip counts of the emitted loops, in order."""
    return [int(n) for n in re.findall(r"icmp slt i64 %\S+, (\d+)", llvm)]


def test_loops_that_address_memory_as_one_run_as_one_loop():
    compiled = _compiled("""graph @m(%x: f32[6,28,28], %b: f32[6,1,1]) {
  %c = broadcast_to(%b, shape=(6, 28, 28)) : f32[6,28,28]
  %y = add(%x, %c) : f32[6,28,28]
  return %y
}""")
    assert _bounds(compiled.ir("llvm")) == [6, 784]  # %b's stride in i0 is not 28 times its stride in i1
    assert "<8 x float>" in compiled.ir("llvm_opt")
    rng = np.random.default_rng(0)
    x, b = rng.standard_normal((6, 28, 28)).astype(np.float32), rng.standard_normal((6, 1, 1)).astype(np.float32)
    (y,) = compiled.run(x, b)
    np.testing.assert_array_equal(y, x + b)


def test_a_row_the_width_does_not_divide_is_split_at_the_width():
    compiled = _compiled("""graph @m(%x: f32[6,28,30]) {
  %v = slice(%x, start=(0, 0, 0), stop=(6, 28, 28)) : f32[6,28,28]
  %y = sigmoid(%v) : f32[6,28,28]
  return %y
}""")
    # the row of 28 (codegen's own vectors, codegen/llvm_lanes.py): three vectors of 8 without a
    # loop (at most STRAIGHT), then one of 4
    assert _bounds(compiled.ir("llvm")) == [6, 28]
    assert compiled.ir("llvm").count("store <8 x float>") == 3 and "store <4 x float>" in compiled.ir("llvm")
    x = np.random.default_rng(1).standard_normal((6, 28, 30)).astype(np.float32)
    (y,) = compiled.run(x)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x[:, :, :28])), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("width", [28, 30])
def test_a_reductions_rows_are_not_split_nor_its_first_loop_collapsed(width):
    """A scan's unrolled steps are stacked along the first reduced loop, guarded: collapsing it
    where a scan's packed result is contiguous would sum the two in different orders."""
    compiled = _compiled(f"""graph @m(%x: f32[4,6,28,{width}]) {{
  %v = slice(%x, start=(0, 0, 0, 0), stop=(4, 6, 28, 28)) : f32[4,6,28,28]
  %s = summation(%v, axes=(0, 2, 3)) : f32[6]
  return %s
}}""")
    # the rows (784, or 28 where the planes are not contiguous) in codegen's order (llvm_lanes.py
    # `_in_order`): steps of 4 vectors (of 3 in a row of 28), then the rest straight
    assert _bounds(compiled.ir("llvm")) == ([6, 4, 768] if width == 28 else [6, 4, 28, 24])
    x = np.random.default_rng(2).standard_normal((4, 6, 28, width)).astype(np.float32)
    (s,) = compiled.run(x)
    np.testing.assert_allclose(s, x[..., :28].astype(np.float64).sum((0, 2, 3)), rtol=1e-5, atol=1e-5)


def test_a_double_rows_width_is_four():
    compiled = _compiled("""graph @m(%x: f64[6,10,12]) {
  %v = slice(%x, start=(0, 0, 0), stop=(6, 10, 10)) : f64[6,10,10]
  %y = exp(%v) : f64[6,10,10]
  return %y
}""")
    assert _bounds(compiled.ir("llvm")) == [6, 10]  # two vectors of 4 without a loop, then one of 2
    assert compiled.ir("llvm").count("store <4 x double>") == 2 and "store <2 x double>" in compiled.ir("llvm")
    x = np.random.default_rng(3).standard_normal((6, 10, 12))
    (y,) = compiled.run(x)
    np.testing.assert_allclose(y, np.exp(x[:, :, :10]), rtol=1e-12)
