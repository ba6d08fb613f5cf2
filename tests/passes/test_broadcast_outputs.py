"""broadcast_outputs as text: an output that broadcasts a smaller value is that value."""
from ndlc.ir import parse, print_graph
from ndlc.passes.broadcast_outputs import broadcast_outputs


def check(before, after):
    got = broadcast_outputs(parse(before))
    assert print_graph(got) == after.strip("\n"), print_graph(got)


def test_a_sums_gradient_is_its_upstream_gradient_in_keepdims_shape():
    check("""
graph @g(%x: f32[4,5,3], %c: f32[4,5]) {
  %0 = reshape(%c, shape=(4, 5, 1)) : f32[4,5,1]
  %1 = broadcast_to(%0, shape=(4, 5, 3)) : f32[4,5,3]
  %2 = exp(%x) : f32[4,5,3]
  return %1, %2
}""", """
graph @g(%x: f32[4,5,3], %c: f32[4,5]) {
  %0 = reshape(%c, shape=(4, 5, 1)) : f32[4,5,1]
  %1 = exp(%x) : f32[4,5,3]
  return %0, %1
}""")


def test_a_broadcast_that_another_output_reads_stays_and_adds_leading_axes():
    check("""
graph @g(%b: f32[3]) {
  %0 = broadcast_to(%b, shape=(2, 3)) : f32[2,3]
  %1 = exp(%0) : f32[2,3]
  return %0, %1
}""", """
graph @g(%b: f32[3]) {
  %0 = broadcast_to(%b, shape=(2, 3)) : f32[2,3]
  %1 = exp(%0) : f32[2,3]
  return %b, %1
}""")


def test_a_state_update_and_an_output_that_is_also_one_stay_whole():
    same = """
graph @g(%b: f32[3], %w: f32[2,3] state) {
  %0 = broadcast_to(%b, shape=(2, 3)) : f32[2,3]
  return %0, new %w = %0
}"""
    check(same, same)
