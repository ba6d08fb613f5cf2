"""divide's decomposition as text: a division by a broadcast of a computed value becomes a
multiplication by the broadcast reciprocal (one division per row or feature, not per element);
divisors that are inputs, or not repeated, keep their division."""
from ndlc.ir import parse, print_graph
from ndlc.passes.decompose import decompose
from ndlc.passes.simplify import simplify


def test_a_repeated_computed_divisor_is_inverted_once_per_element_of_its_own():
    got = simplify(decompose(parse("""
graph @softmax(%z: f32[4,3], %w: f32[3]) {
  %0 = exp(%z) : f32[4,3]
  %1 = summation(%0, axes=(1,)) : f32[4]
  %2 = reshape(%1, shape=(4, 1)) : f32[4,1]
  %3 = broadcast_to(%2, shape=(4, 3)) : f32[4,3]
  %4 = divide(%0, %3) : f32[4,3]
  %5 = broadcast_to(%w, shape=(4, 3)) : f32[4,3]
  %6 = divide(%4, %5) : f32[4,3]
  %7 = divide(%6, %0) : f32[4,3]
  return %7
}""")))
    assert print_graph(got) == """\
graph @softmax(%z: f32[4,3], %w: f32[3]) {
  %0 = exp(%z) : f32[4,3]
  %1 = summation(%0, axes=(1,)) : f32[4]
  %2 = full(shape=(4,), value=1.0, dtype=f32) : f32[4]
  %3 = divide(%2, %1) : f32[4]
  %4 = reshape(%3, shape=(4, 1)) : f32[4,1]
  %5 = broadcast_to(%4, shape=(4, 3)) : f32[4,3]
  %6 = multiply(%0, %5) : f32[4,3]
  %7 = broadcast_to(%w, shape=(4, 3)) : f32[4,3]
  %8 = divide(%6, %7) : f32[4,3]
  %9 = divide(%8, %0) : f32[4,3]
  return %9
}"""
