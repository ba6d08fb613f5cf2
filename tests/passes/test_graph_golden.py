"""The graph passes without a golden of their own elsewhere, as text: autodiff, decompose and the
split of a step at its exchanges; a graph goes in, one pass runs, the expected graph(s) come out
(in the style of test_simplify.py)."""
from ndlc.ir import parse, print_graph
from ndlc.passes.autodiff import autodiff
from ndlc.passes.decompose import decompose
from ndlc.passes.split import split_at_exchanges


def check(got, after):
    assert print_graph(got) == after.strip("\n"), print_graph(got)


def test_autodiff_appends_the_adjoints_of_a_tanh_layer():
    """The output's adjoint is ones; tanh's rule is 1 - y*y; matmul sends each operand the
    product with the other transposed; the gradient is appended to the outputs."""
    graph = parse("""
graph @loss(%x: f32[4,3], %w: f32[3,2]) {
  %0 = matmul(%x, %w) : f32[4,2]
  %1 = tanh(%0) : f32[4,2]
  %2 = summation(%1, axes=(0, 1)) : f32[]
  return %2
}""")
    check(autodiff(graph, wrt=[graph.inputs[1]]), """
graph @loss(%x: f32[4,3], %w: f32[3,2]) {
  %0 = matmul(%x, %w) : f32[4,2]
  %1 = tanh(%0) : f32[4,2]
  %2 = summation(%1, axes=(0, 1)) : f32[]
  %3 = full(shape=(), value=1.0, dtype=f32) : f32[]
  %4 = reshape(%3, shape=(1, 1)) : f32[1,1]
  %5 = broadcast_to(%4, shape=(4, 2)) : f32[4,2]
  %6 = multiply(%1, %1) : f32[4,2]
  %7 = negate(%6) : f32[4,2]
  %8 = add_scalar(%7, scalar=1.0) : f32[4,2]
  %9 = multiply(%5, %8) : f32[4,2]
  %10 = transpose(%w, axes=(0, 1)) : f32[2,3]
  %11 = matmul(%9, %10) : f32[4,3]
  %12 = transpose(%x, axes=(0, 1)) : f32[3,4]
  %13 = matmul(%12, %9) : f32[3,2]
  return %2, %13
}""")


def test_decompose_rewrites_logsumexp_and_stack_into_simpler_ops():
    """logsumexp: the row max (0 where it is infinite), exp, sum, log; stack: a pad per piece, added."""
    check(decompose(parse("""
graph @lse(%x: f32[4,6]) {
  %0 = logsumexp(%x, axes=(1,)) : f32[4]
  %1 = stack(%0, %0, axis=0) : f32[2,4]
  return %1
}""")), """
graph @lse(%x: f32[4,6]) {
  %0 = max(%x, axes=(1,)) : f32[4]
  %1 = full(shape=(4,), value=0.0, dtype=f32) : f32[4]
  %2 = negate(%0) : f32[4]
  %3 = add(%0, %2) : f32[4]
  %4 = equal(%3, %1) : bool[4]
  %5 = where(%4, %0, %1) : f32[4]
  %6 = reshape(%5, shape=(4, 1)) : f32[4,1]
  %7 = broadcast_to(%6, shape=(4, 6)) : f32[4,6]
  %8 = negate(%7) : f32[4,6]
  %9 = add(%x, %8) : f32[4,6]
  %10 = exp(%9) : f32[4,6]
  %11 = summation(%10, axes=(1,)) : f32[4]
  %12 = log(%11) : f32[4]
  %13 = add(%12, %5) : f32[4]
  %14 = reshape(%13, shape=(1, 4)) : f32[1,4]
  %15 = pad(%14, widths=((0, 1), (0, 0))) : f32[2,4]
  %16 = reshape(%13, shape=(1, 4)) : f32[1,4]
  %17 = pad(%16, widths=((1, 0), (0, 0))) : f32[2,4]
  %18 = add(%15, %17) : f32[2,4]
  return %18
}""")


def test_split_cuts_a_step_at_its_exchange():
    """Part 0 computes what the exchange sends (the batch's column sums) and the loss; part 1 reads
    the received total and, carried from part 0, the sums, and updates the state."""
    graph = parse("""
graph @step(%x: f32[4,3], %w: f32[3] state, %total: f32[3]) {
  %0 = summation(%x, axes=(0,)) : f32[3]
  %1 = mul_scalar(%w, scalar=0.5) : f32[3]
  %2 = multiply(%total, %0) : f32[3]
  %3 = add(%1, %2) : f32[3]
  %4 = summation(%0, axes=(0,)) : f32[]
  return %4, new %w = %3
}""")
    x, _, total = graph.inputs
    first, second = split_at_exchanges(graph, [([graph.nodes[0].result], [total])], [x], [x])
    assert (first.outputs, first.sent, second.outputs, second.sent) == ([0], [(0, 0)], [], [])
    assert first.carried_out == [graph.nodes[0].result] and second.carried_in == [total, graph.nodes[0].result]
    check(first.graph, """
graph @step_0(%x: f32[4,3], %w: f32[3] state) {
  %0 = summation(%x, axes=(0,)) : f32[3]
  %1 = summation(%0, axes=(0,)) : f32[]
  return %1, %0, %0
}""")
    check(second.graph, """
graph @step_1(%x: f32[4,3], %w: f32[3] state, %total: f32[3], %carried.1: f32[3]) {
  %0 = mul_scalar(%w, scalar=0.5) : f32[3]
  %1 = multiply(%total, %carried.1) : f32[3]
  %2 = add(%0, %1) : f32[3]
  return new %w = %2
}""")
