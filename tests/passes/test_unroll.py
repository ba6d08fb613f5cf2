"""Scans differentiated (a reverse scan) and unrolled: text in, text out; gradients against finite
differences and against the unrolled graph's."""
import numpy as np
import pytest

from ndlc.ir import interpret, parse, print_graph
from ndlc.passes import autodiff
from gradcheck import central_differences
from unrolled import unroll_scans


def test_unrolling_emits_the_steps_and_stacks_the_ys():
    got = unroll_scans(parse("""
graph @g(%h0: f32[2], %xs: f32[2,2], %w: f32[2]) {
  %0 = scan(%h0, %xs, %w, carries=1, xs=1, length=2, reverse=false, body=graph @body(%h: f32[2], %x: f32[2], %v: f32[2]) {
    %0 = multiply(%h, %v) : f32[2]
    %1 = add(%0, %x) : f32[2]
    return %1, %0
  }) : f32[6]
  %1 = part(%0, offset=0, shape=(2,)) : f32[2]
  %2 = part(%0, offset=2, shape=(2, 2)) : f32[2,2]
  return %1, %2
}"""))
    assert print_graph(got) == """\
graph @g(%h0: f32[2], %xs: f32[2,2], %w: f32[2]) {
  %0 = multiply(%h0, %w) : f32[2]
  %1 = split(%xs, axis=0, index=0) : f32[2]
  %2 = add(%0, %1) : f32[2]
  %3 = multiply(%2, %w) : f32[2]
  %4 = split(%xs, axis=0, index=1) : f32[2]
  %5 = add(%3, %4) : f32[2]
  %6 = stack(%0, %3, axis=0) : f32[2,2]
  return %5, %6
}"""


# an LSTM-like cell: two carries, a weight read twice per step, a y that is not a carry
CELL = """
graph @g(%h0: f64[3], %c0: f64[3], %xs: f64[4,3], %w: f64[3], %r: f64[4,3]) {
  %0 = scan(%h0, %c0, %xs, %w, carries=2, xs=1, length=4, reverse=REVERSE, body=graph @body(%h: f64[3], %c: f64[3], %x: f64[3], %v: f64[3]) {
    %0 = multiply(%h, %v) : f64[3]
    %1 = add(%0, %x) : f64[3]
    %2 = sigmoid(%1) : f64[3]
    %3 = multiply(%2, %c) : f64[3]
    %4 = tanh(%1) : f64[3]
    %5 = multiply(%4, %v) : f64[3]
    %6 = add(%3, %5) : f64[3]
    %7 = tanh(%6) : f64[3]
    %8 = multiply(%7, %2) : f64[3]
    %9 = exp(%8) : f64[3]
    return %8, %6, %9
  }) : f64[18]
  %1 = part(%0, offset=0, shape=(3,)) : f64[3]
  %2 = part(%0, offset=6, shape=(4, 3)) : f64[4,3]
  %3 = multiply(%2, %r) : f64[4,3]
  %4 = summation(%3, axes=(0, 1)) : f64[]
  %5 = summation(%1, axes=(0,)) : f64[]
  %6 = add(%4, %5) : f64[]
  return %6
}"""


def cell(reverse):
    return parse(CELL.replace("REVERSE", "true" if reverse else "false"))


def cell_args(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in [(3,), (3,), (4, 3), (3,), (4, 3)]]


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_gradients_equal_finite_differences(reverse):
    graph, args = cell(reverse), cell_args()
    wrt = graph.inputs[:4]
    grads = interpret(autodiff(graph, wrt=wrt), *args)[1:]
    for i, grad in enumerate(grads):
        numeric = central_differences(lambda values: interpret(graph, *values)[0], args, i)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_gradients_equal_the_unrolled_graphs_bit_for_bit(reverse):
    graph, args = cell(reverse), [a.astype(np.float32) for a in cell_args(1)]
    graph = parse(print_graph(graph).replace("f64", "f32"))
    wrt = graph.inputs[:4]
    through_scan = interpret(unroll_scans(autodiff(graph, wrt=wrt)), *args)
    unrolled = unroll_scans(graph)
    of_unrolled = interpret(autodiff(unrolled, wrt=unrolled.inputs[:4]), *args)
    for a, b in zip(through_scan, of_unrolled):
        assert np.array_equal(a, b)


def test_the_gradient_saves_what_its_rules_read_in_a_second_forward_scan_that_unrolls_into_the_first():
    graph = cell(False)
    grad = autodiff(graph, wrt=graph.inputs[:4])
    scans = [n for n in grad.nodes if n.op == "scan"]
    assert [n.attrs["reverse"] for n in scans] == [False, False, True]
    forward, saving, backward = (n.attrs["body"] for n in scans)
    assert saving.nodes == forward.nodes and len(saving.outputs) > len(forward.outputs)
    # the reverse body: adjoints of the 2 carries and the weight's running sum are its carries
    assert [v.name for v in backward.inputs[:3]] == ["dcarry0", "dcarry1", "dconst0"]
    unrolled = unroll_scans(grad)
    forward_steps = [n for n in unrolled.nodes if n.op == "exp"]
    assert len(forward_steps) == 4  # the saving scan's steps are the first scan's


NESTED = """
graph @g(%h0: f64[2], %xs: f64[2,3,2]) {
  %0 = scan(%h0, %xs, carries=1, xs=1, length=2, reverse=false, body=graph @body(%h: f64[2], %x: f64[3,2]) {
    %0 = scan(%h, %x, carries=1, xs=1, length=3, reverse=true, body=graph @body(%g: f64[2], %y: f64[2]) {
      %0 = multiply(%g, %y) : f64[2]
      %1 = sin(%0) : f64[2]
      return %1
    }) : f64[2]
    %1 = part(%0, offset=0, shape=(2,)) : f64[2]
    %2 = exp(%1) : f64[2]
    return %2
  }) : f64[2]
  %1 = part(%0, offset=0, shape=(2,)) : f64[2]
  %2 = summation(%1, axes=(0,)) : f64[]
  return %2
}"""


def test_a_scan_in_a_body_unrolls_and_differentiates_like_the_loops_it_is():
    graph = parse(NESTED)
    rng = np.random.default_rng(2)
    args = [rng.standard_normal((2,)), rng.standard_normal((2, 3, 2))]
    h = args[0]
    for x in args[1]:
        for y in x[::-1]:
            h = np.sin(h * y)
        h = np.exp(h)
    np.testing.assert_allclose(interpret(unroll_scans(graph), *args)[0], h.sum(), rtol=1e-12)
    grads = interpret(autodiff(graph), *args)
    unrolled = unroll_scans(graph)
    for a, b in zip(grads, interpret(autodiff(unrolled), *args)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    for a, b in zip(grads, interpret(unroll_scans(autodiff(graph)), *args)):
        np.testing.assert_array_equal(a, b)
