"""passes/scan_hoist.py: text in, text out; hoisted graphs against the originals (float64, where
only the order of a sum differs) and their gradients against finite differences; a compiled
recurrence written with `ndl.scan` against PyTorch."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc.ir import interpret, parse, print_graph
from ndlc.passes import autodiff
from ndlc.passes.scan_hoist import hoist_scans

from gradcheck import central_differences

# an RNN cell written out: the input's product (and the scaling it reads) need no loop, nor exp(U)
RNN = """
graph @g(%h0: f64[2,3], %xs: f64[4,2,5], %w: f64[5,3], %u: f64[3,3], %b: f64[3]) {
  %0 = scan(%h0, %xs, %w, %u, %b, carries=1, xs=1, length=4, reverse=false, body=graph @body(%h: f64[2,3], %x: f64[2,5], %wx: f64[5,3], %uh: f64[3,3], %bias: f64[3]) {
    %0 = mul_scalar(%x, scalar=2.0) : f64[2,5]
    %1 = matmul(%0, %wx) : f64[2,3]
    %2 = matmul(%h, %uh) : f64[2,3]
    %3 = broadcast_to(%bias, shape=(2, 3)) : f64[2,3]
    %4 = exp(%uh) : f64[3,3]
    %5 = matmul(%2, %4) : f64[2,3]
    %6 = add(%1, %5) : f64[2,3]
    %7 = add(%6, %3) : f64[2,3]
    %8 = tanh(%7) : f64[2,3]
    return %8, %8
  }) : f64[30]
  %1 = part(%0, offset=6, shape=(4, 2, 3)) : f64[4,2,3]
  return %1
}"""

RNN_HOISTED = """\
graph @g(%h0: f64[2,3], %xs: f64[4,2,5], %w: f64[5,3], %u: f64[3,3], %b: f64[3]) {
  %0 = mul_scalar(%xs, scalar=2.0) : f64[4,2,5]
  %1 = reshape(%0, shape=(8, 5)) : f64[8,5]
  %2 = matmul(%1, %w) : f64[8,3]
  %3 = reshape(%2, shape=(4, 2, 3)) : f64[4,2,3]
  %4 = exp(%u) : f64[3,3]
  %5 = scan(%h0, %3, %u, %b, %4, carries=1, xs=1, length=4, reverse=false, body=graph @body(%h: f64[2,3], %hoisted0: f64[2,3], %uh: f64[3,3], %bias: f64[3], %hoisted1: f64[3,3]) {
    %0 = matmul(%h, %uh) : f64[2,3]
    %1 = broadcast_to(%bias, shape=(2, 3)) : f64[2,3]
    %2 = matmul(%0, %hoisted1) : f64[2,3]
    %3 = add(%hoisted0, %2) : f64[2,3]
    %4 = add(%3, %1) : f64[2,3]
    %5 = tanh(%4) : f64[2,3]
    return %5, %5
  }) : f64[30]
  %6 = part(%5, offset=6, shape=(4, 2, 3)) : f64[4,2,3]
  return %6
}"""

# a reverse loop as autodiff makes them: a weight's, a bias's and a broadcast value's gradients
# accumulated, an input's gradient a product by the transposed weight
BACKWARD = """
graph @g(%d0: f64[2,3], %a0: f64[5,3], %c0: f64[3], %t0: f64[2,3], %xs: f64[4,2,5], %gs: f64[4,2,3], %w: f64[5,3]) {
  %0 = scan(%d0, %a0, %c0, %t0, %xs, %gs, %w, carries=4, xs=2, length=4, reverse=true, body=graph @body(%d: f64[2,3], %acc: f64[5,3], %bacc: f64[3], %tacc: f64[2,3], %x: f64[2,5], %g: f64[2,3], %wx: f64[5,3]) {
    %0 = add(%d, %g) : f64[2,3]
    %1 = transpose(%x, axes=(0, 1)) : f64[5,2]
    %2 = matmul(%1, %0) : f64[5,3]
    %3 = add(%acc, %2) : f64[5,3]
    %4 = summation(%0, axes=(0,)) : f64[3]
    %5 = add(%4, %bacc) : f64[3]
    %6 = transpose(%wx, axes=(0, 1)) : f64[3,5]
    %7 = matmul(%0, %6) : f64[2,5]
    %8 = tanh(%0) : f64[2,3]
    %9 = add(%tacc, %8) : f64[2,3]
    return %8, %3, %5, %9, %7
  }) : f64[70]
  %1 = part(%0, offset=6, shape=(5, 3)) : f64[5,3]
  %2 = part(%0, offset=21, shape=(3,)) : f64[3]
  %3 = part(%0, offset=30, shape=(4, 2, 5)) : f64[4,2,5]
  %4 = part(%0, offset=24, shape=(2, 3)) : f64[2,3]
  return %1, %2, %3, %4
}"""

BACKWARD_HOISTED = """\
graph @g(
    %d0: f64[2,3],
    %a0: f64[5,3],
    %c0: f64[3],
    %t0: f64[2,3],
    %xs: f64[4,2,5],
    %gs: f64[4,2,3],
    %w: f64[5,3]
) {
  %0 = transpose(%w, axes=(0, 1)) : f64[3,5]
  %1 = scan(%d0, %gs, carries=1, xs=1, length=4, reverse=true, body=graph @body(%d: f64[2,3], %g: f64[2,3]) {
    %0 = add(%d, %g) : f64[2,3]
    %1 = tanh(%0) : f64[2,3]
    return %1, %0, %1
  }) : f64[54]
  %2 = reshape(%xs, shape=(8, 5)) : f64[8,5]
  %3 = part(%1, offset=6, shape=(4, 2, 3)) : f64[4,2,3]
  %4 = reshape(%3, shape=(8, 3)) : f64[8,3]
  %5 = transpose(%2, axes=(0, 1)) : f64[5,8]
  %6 = matmul(%5, %4) : f64[5,3]
  %7 = add(%a0, %6) : f64[5,3]
  %8 = summation(%3, axes=(0, 1)) : f64[3]
  %9 = add(%8, %c0) : f64[3]
  %10 = matmul(%4, %0) : f64[8,5]
  %11 = reshape(%10, shape=(4, 2, 5)) : f64[4,2,5]
  %12 = part(%1, offset=30, shape=(4, 2, 3)) : f64[4,2,3]
  %13 = summation(%12, axes=(0,)) : f64[2,3]
  %14 = add(%t0, %13) : f64[2,3]
  return %7, %9, %11, %14
}"""


def hoisted(text):
    notes = []
    return hoist_scans(parse(text), notes), notes


def arguments(graph, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(v.shape) for v in graph.inputs]


def test_a_per_step_product_by_an_invariant_is_one_product_before_the_loop():
    graph, notes = hoisted(RNN)
    assert print_graph(graph) == RNN_HOISTED
    assert notes == ["scan %0: %1 = matmul(%0, %wx) for all 4 steps before the loop: one [8,5] @ [5,3] product",
                     "scan %0: %4 = exp(%uh) reads invariants only: computed once before the loop",
                     "scan %0: %2 = matmul(%h, %uh) stays in the loop: it reads the carries",
                     "scan %0: %5 = matmul(%2, %4) stays in the loop: it reads the carries"]


def test_accumulated_gradients_and_products_by_invariants_move_after_the_loop():
    graph, notes = hoisted(BACKWARD)
    assert print_graph(graph) == BACKWARD_HOISTED
    assert notes == [
        "scan %0: carry 1 (%acc) only accumulates %2 = matmul(%1, %0): after the loop, one [5,8] @ [8,3] "
        "product of the stacked %x, %0",
        "scan %0: carry 2 (%bacc) only accumulates %4 = summation(%0): after the loop, one summation of "
        "the stacked %0",
        "scan %0: carry 3 (%tacc) only accumulates %8 = tanh(%0): after the loop, one summation of the "
        "stacked %8",
        "scan %0: y 0 (%7 = matmul(%0, %6)) after the loop: one [8,3] @ [3,5] product"]


@pytest.mark.parametrize("text", [RNN, BACKWARD])
def test_hoisted_graphs_compute_what_the_loops_did(text):
    graph, args = parse(text), arguments(parse(text))
    for a, b in zip(interpret(graph, *args), interpret(hoisted(text)[0], *args)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)  # the sums' order differs, not more


def test_a_loop_whose_packed_results_are_read_whole_keeps_its_results():
    text = BACKWARD.replace("  return %1, %2, %3, %4", "  %5 = summation(%0, axes=(0,)) : f64[]\n  return %1, %2, %3, %4, %5")
    graph, notes = hoisted(text)
    (scan,) = [n for n in graph.nodes if n.op == "scan"]
    assert scan.attrs["carries"] == 4 and scan.result.type == parse(text).nodes[0].result.type
    assert "scan %0: its packed results are read whole: nothing moves after the loop" in notes
    args = arguments(graph)
    for a, b in zip(interpret(parse(text), *args), interpret(graph, *args)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


CARRIED = """\
graph @g(%h0: f32[2,3], %xs: f32[4,2,3], %u: f32[3,3]) {
  %0 = scan(%h0, %xs, %u, carries=1, xs=1, length=4, reverse=false, body=graph @body(%h: f32[2,3], %x: f32[2,3], %uh: f32[3,3]) {
    %0 = add(%h, %x) : f32[2,3]
    %1 = matmul(%0, %uh) : f32[2,3]
    %2 = transpose(%uh, axes=(0, 1)) : f32[3,3]
    %3 = matmul(%1, %2) : f32[2,3]
    return %3, %1
  }) : f32[30]
  %1 = part(%0, offset=6, shape=(4, 2, 3)) : f32[4,2,3]
  return %1
}"""


# a view of an invariant is no work to move: here a transpose that a matmul reads on the left
CARRIED_LEFT = """\
graph @g(%h0: f32[3,3], %xs: f32[4,3,3], %u: f32[3,3]) {
  %0 = scan(%h0, %xs, %u, carries=1, xs=1, length=4, reverse=false, body=graph @body(%h: f32[3,3], %x: f32[3,3], %uh: f32[3,3]) {
    %0 = add(%h, %x) : f32[3,3]
    %1 = matmul(%0, %uh) : f32[3,3]
    %2 = transpose(%uh, axes=(0, 1)) : f32[3,3]
    %3 = matmul(%2, %1) : f32[3,3]
    return %3, %1
  }) : f32[45]
  %1 = part(%0, offset=9, shape=(4, 3, 3)) : f32[4,3,3]
  return %1
}"""

# ... and one it reads on the right is copied once, before the loop (a BLAS call packs it as it is)
CARRIED_TRANSPOSED_ONCE = """\
graph @g(%h0: f32[2,3], %xs: f32[4,2,3], %u: f32[3,3]) {
  %0 = transpose(%u, axes=(0, 1)) : f32[3,3]
  %1 = scan(%h0, %xs, %u, %0, carries=1, xs=1, length=4, reverse=false, body=graph @body(%h: f32[2,3], %x: f32[2,3], %uh: f32[3,3], %hoisted0: f32[3,3]) {
    %0 = add(%h, %x) : f32[2,3]
    %1 = matmul(%0, %uh) : f32[2,3]
    %2 = matmul(%1, %hoisted0) : f32[2,3]
    return %2, %1
  }) : f32[30]
  %2 = part(%1, offset=6, shape=(4, 2, 3)) : f32[4,2,3]
  return %2
}"""


def test_loops_with_nothing_to_move_and_graphs_without_loops_stay_as_they_are():
    plain = parse("graph @g(%x: f32[2]) {\n  %0 = exp(%x) : f32[2]\n  return %0\n}")
    assert hoist_scans(plain) is plain
    graph, notes = hoisted(CARRIED_LEFT)
    assert print_graph(graph) == CARRIED_LEFT
    assert notes == ["scan %0: %1 = matmul(%0, %uh) stays in the loop: it reads the carries",
                     "scan %0: %3 = matmul(%2, %1) stays in the loop: it reads the carries"]


def test_an_invariant_transpose_that_steps_multiply_by_on_the_right_is_copied_once_before_the_loop():
    graph, notes = hoisted(CARRIED)
    assert print_graph(graph) == CARRIED_TRANSPOSED_ONCE
    assert notes == ["scan %0: %2 = transpose(%uh) is a matmul's right operand in every step: transposed once "
                     "before the loop",
                     "scan %0: %1 = matmul(%0, %uh) stays in the loop: it reads the carries",
                     "scan %0: %3 = matmul(%1, %2) stays in the loop: it reads the carries"]
    args = [a.astype(np.float32) for a in arguments(parse(CARRIED))]
    for a, b in zip(interpret(parse(CARRIED), *args), interpret(graph, *args)):
        np.testing.assert_array_equal(a, b)


def test_gradients_through_hoisted_loops_equal_finite_differences():
    graph = parse(RNN.replace("return %1", "%2 = summation(%1, axes=(0, 1, 2)) : f64[]\n  return %2"))
    args = arguments(graph, seed=3)
    grad = autodiff(graph)
    notes = []
    moved = hoist_scans(grad, notes)
    assert any("after the loop" in n for n in notes) and any("before the loop" in n for n in notes)
    grads = interpret(moved, *args)[1:]
    for i, g in enumerate(grads):
        numeric = central_differences(lambda values: interpret(graph, *values)[0], args, i)
        np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)


def test_a_compiled_scan_recurrence_equals_pytorch_and_explains_its_hoisting():
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle of this test")
    rng = np.random.default_rng(0)
    xs, h0 = rng.standard_normal((5, 3, 4)).astype(np.float32), rng.standard_normal((3, 6)).astype(np.float32)
    weights = [rng.standard_normal(s).astype(np.float32) * 0.5 for s in [(4, 6), (6, 6), (6,)]]
    params = [ndl.Tensor(w, requires_grad=True) for w in weights]

    def loss_of(x):
        w, u, b = params

        def step(h, x_t):
            h = ndl.tanh(x_t @ w + h @ u + b.reshape((1, 6)).broadcast_to((3, 6)))
            return h, h
        _, hs = ndl.scan(step, ndl.Tensor(h0), x)
        loss = (hs * hs).sum()
        loss.backward()
        return loss, w.grad, u.grad, b.grad
    compiled = ndl.compile(loss_of)
    got = [t.numpy() for t in compiled(xs)]
    tw = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in weights]
    h, total = torch.tensor(h0, dtype=torch.float64), 0
    for x_t in torch.tensor(xs, dtype=torch.float64):
        h = torch.tanh(x_t @ tw[0] + h @ tw[1] + tw[2])
        total = total + (h * h).sum()
    total.backward()
    for a, b in zip(got, [total] + [w.grad for w in tw]):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-4, atol=1e-5)
    text = compiled.ir("hoisted")
    assert "before the loop: one [15,4] @ [4,6] product" in text
    assert "only accumulates" in text and "after the loop" in text
    assert "%5 = transpose(%params.1) is a matmul's right operand in every step: transposed once before the loop" in text
    parse(text)  # the notes are comments: the stage reads back
    steps = [k for k in compiled.ir("scheduled").split("\n\n") if "  step: " in k and "call sgemm" in k]
    calls = [line for k in steps for line in k.splitlines() if "call sgemm" in line]
    assert len(calls) == 10 and not any("^T" in line for line in calls)  # dh_t = dz_t uᵀ reads the copy


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_compiled_recurrent_layers_gradients_equal_pytorch_in_float64(kind):
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle of this test")
    seq_len, batch, inputs, hidden, layers = 6, 3, 4, 5, 2
    module = getattr(ndl.nn, kind)(inputs, hidden, num_layers=layers)
    ref = getattr(torch.nn, kind)(inputs, hidden, layers).double()
    cells = module.lstm_cells if kind == "LSTM" else module.rnn_cells
    with torch.no_grad():
        for k, cell in enumerate(cells):
            for name, ours in [("weight_ih", cell.W_ih.numpy().T), ("weight_hh", cell.W_hh.numpy().T),
                               ("bias_ih", cell.bias_ih.numpy()), ("bias_hh", cell.bias_hh.numpy())]:
                getattr(ref, f"{name}_l{k}").copy_(torch.tensor(ours, dtype=torch.float64))
    x = np.random.default_rng(2).standard_normal((seq_len, batch, inputs)).astype(np.float32)
    params = module.parameters()

    def loss_and_gradients(x):
        for p in params:
            p.grad = None
        out, _ = module(x)
        loss = (out * out).sum()
        loss.backward()
        return (loss, *(p.grad for p in params))
    compiled = ndl.compile(loss_and_gradients)
    got = [t.numpy() for t in compiled(x)]
    hoisted_text = compiled.ir("hoisted")  # each layer's W_hh gradient, from h_t as the layer returns them
    assert hoisted_text.count("only accumulates") == hoisted_text.count("not copied") == layers
    out, _ = ref(torch.tensor(x, dtype=torch.float64))
    loss = (out * out).sum()
    loss.backward()
    expected = [loss]
    for k in range(layers):  # needle's parameter order: W_ih, W_hh, bias_ih, bias_hh, layer by layer
        expected += [getattr(ref, f"weight_ih_l{k}").grad.T, getattr(ref, f"weight_hh_l{k}").grad.T,
                     getattr(ref, f"bias_ih_l{k}").grad, getattr(ref, f"bias_hh_l{k}").grad]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-4, atol=1e-5)


VIEWS = {  # a per-step view or reduction (of x: its type) before a product by an invariant
    "transpose": ("f64[3,4]", "transpose(%x, axes=(0, 1)) : f64[4,3]", True),
    "reshape": ("f64[2,6]", "reshape(%x, shape=(4, 3)) : f64[4,3]", True),
    "summation": ("f64[3,5,3]", "summation(%x, axes=(1,)) : f64[3,3]", True),
    "slice": ("f64[5,3]", "slice(%x, start=(1, 0), stop=(4, 3)) : f64[3,3]", True),
    "split": ("f64[3,2,3]", "split(%x, axis=1, index=1) : f64[3,3]", True),
    "broadcast of a row": ("f64[1,3]", "broadcast_to(%x, shape=(3, 3)) : f64[3,3]", True),
    # stacked, [T, 3] would broadcast against the new (3, 3) with T on the wrong axis: stays
    "broadcast adding an axis": ("f64[3]", "broadcast_to(%x, shape=(3, 3)) : f64[3,3]", False),
}


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_views_before_a_hoisted_product_are_batched_where_each_step_reads_its_own_elements(view):
    x, line, moves = VIEWS[view]
    rows = int(line.rsplit("[", 1)[1].split(",")[0])
    text = f"""graph @g(%h0: f64[{rows},3], %xs: f64[3,{x[4:]}, %w: f64[3,3]) {{
  %0 = scan(%h0, %xs, %w, carries=1, xs=1, length=3, reverse=false, body=graph @body(%h: f64[{rows},3], %x: {x}, %u: f64[3,3]) {{
    %0 = {line}
    %1 = matmul(%0, %u) : f64[{rows},3]
    %2 = add(%h, %1) : f64[{rows},3]
    return %2
  }}) : f64[{rows * 3}]
  %1 = part(%0, offset=0, shape=({rows}, 3)) : f64[{rows},3]
  return %1
}}"""
    graph, notes = hoisted(text)
    assert any("before the loop" in n for n in notes) == moves
    args = arguments(graph)
    np.testing.assert_allclose(interpret(graph, *args)[0], interpret(parse(text), *args)[0], rtol=1e-12)


def test_a_loop_left_with_nothing_to_do_is_gone():
    text = """graph @g(%a0: f64[3,3], %xs: f64[4,2,3]) {
  %0 = scan(%a0, %xs, carries=1, xs=1, length=4, reverse=false, body=graph @body(%acc: f64[3,3], %x: f64[2,3]) {
    %0 = transpose(%x, axes=(0, 1)) : f64[3,2]
    %1 = matmul(%0, %x) : f64[3,3]
    %2 = add(%acc, %1) : f64[3,3]
    return %2
  }) : f64[9]
  %1 = part(%0, offset=0, shape=(3, 3)) : f64[3,3]
  return %1
}"""
    graph, notes = hoisted(text)
    assert print_graph(graph) == """\
graph @g(%a0: f64[3,3], %xs: f64[4,2,3]) {
  %0 = reshape(%xs, shape=(8, 3)) : f64[8,3]
  %1 = transpose(%0, axes=(0, 1)) : f64[3,8]
  %2 = matmul(%1, %0) : f64[3,3]
  %3 = add(%a0, %2) : f64[3,3]
  return %3
}"""
    assert notes[-1] == "scan %0: nothing is left to do in the loop: it is gone"
    args = arguments(graph)
    np.testing.assert_allclose(interpret(graph, *args)[0], interpret(parse(text), *args)[0], rtol=1e-12)


def test_a_gradient_over_saved_carries_reads_the_forward_loops_ys_in_place():
    """h_{t-1} saved by a forward loop is its initial value then its ys but the last: the product
    after the reverse loop reads those (h0ᵀ g_0 + H_0..2ᵀ g_1..3) instead of the saved stack."""
    text = """
graph @g(%h0: f64[2,3], %xs: f64[4,2,3], %u: f64[3,3], %gs: f64[4,2,3], %a0: f64[3,3]) {
  %0 = scan(%h0, %xs, %u, carries=1, xs=1, length=4, reverse=false, body=graph @body(%h: f64[2,3], %x: f64[2,3], %uh: f64[3,3]) {
    %0 = matmul(%h, %uh) : f64[2,3]
    %1 = add(%0, %x) : f64[2,3]
    %2 = tanh(%1) : f64[2,3]
    return %2, %2, %h
  }) : f64[54]
  %1 = part(%0, offset=30, shape=(4, 2, 3)) : f64[4,2,3]
  %2 = scan(%a0, %1, %gs, carries=1, xs=2, length=4, reverse=true, body=graph @body(%acc: f64[3,3], %hp: f64[2,3], %g: f64[2,3]) {
    %0 = transpose(%hp, axes=(0, 1)) : f64[3,2]
    %1 = matmul(%0, %g) : f64[3,3]
    %2 = add(%acc, %1) : f64[3,3]
    return %2
  }) : f64[9]
  %3 = part(%2, offset=0, shape=(3, 3)) : f64[3,3]
  %4 = part(%0, offset=6, shape=(4, 2, 3)) : f64[4,2,3]
  return %3, %4
}"""
    graph, notes = hoisted(text)
    assert print_graph(graph).split("}) : f64[54]\n")[1] == """\
  %1 = part(%0, offset=6, shape=(4, 2, 3)) : f64[4,2,3]
  %2 = slice(%1, start=(0, 0, 0), stop=(3, 2, 3)) : f64[3,2,3]
  %3 = slice(%gs, start=(1, 0, 0), stop=(4, 2, 3)) : f64[3,2,3]
  %4 = split(%gs, axis=0, index=0) : f64[2,3]
  %5 = transpose(%h0, axes=(0, 1)) : f64[3,2]
  %6 = matmul(%5, %4) : f64[3,3]
  %7 = reshape(%2, shape=(6, 3)) : f64[6,3]
  %8 = reshape(%3, shape=(6, 3)) : f64[6,3]
  %9 = transpose(%7, axes=(0, 1)) : f64[3,6]
  %10 = matmul(%9, %8) : f64[3,3]
  %11 = add(%6, %10) : f64[3,3]
  %12 = add(%a0, %11) : f64[3,3]
  %13 = part(%0, offset=6, shape=(4, 2, 3)) : f64[4,2,3]
  return %12, %13
}"""
    assert notes[1] == ("scan %2: carry 0 (%acc) only accumulates %1 = matmul(%0, %g): after the loop, one "
                        "[3,8] @ [8,3] product of the stacked %hp, %g (a carry's values: its initial value, "
                        "then the ys of its loop, not copied)")
    args = arguments(graph)
    for a, b in zip(interpret(parse(text), *args), interpret(graph, *args)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
