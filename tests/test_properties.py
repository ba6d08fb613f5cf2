"""Property tests over random shapes and random small programs: the traced graph interpreted
equals eager execution (values and gradients), and the text form round-trips."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ndlc as ndl
from ndlc.ir import interpret, parse
from ndlc.passes import autodiff

UNARY = ["negate", "tanh", "sin", "cos", "sigmoid", "relu", "exp"]
BINARY = ["add", "multiply", "maximum", "subtract"]

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def programs(draw):
    """A list of steps; each applies an op to earlier values (by index) of a straight-line program."""
    base = draw(shapes)
    n_inputs = draw(st.integers(1, 3))
    steps = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["unary", "binary", "scalar", "sum", "transpose", "reshape"]))
        count = n_inputs + len(steps)
        a, b = draw(st.integers(0, count - 1)), draw(st.integers(0, count - 1))
        steps.append((kind, a, b, draw(st.sampled_from(UNARY)), draw(st.sampled_from(BINARY)),
                      draw(st.floats(-2, 2, allow_nan=False)), draw(st.integers(0, 7))))
    return base, n_inputs, steps


def run_program(program, *inputs):
    """Apply the program's steps to Tensors (eager or symbolic alike)."""
    _, _, steps = program
    values = list(inputs)
    for kind, a, b, unary, binary, number, pick in steps:
        x, y = values[a], values[b]
        if kind == "unary":
            out = getattr(ndl, unary)(ndl.tanh(x) if unary == "exp" else x)
        elif kind == "binary":
            try:
                np.broadcast_shapes(x.shape, y.shape)
            except ValueError:
                y = y.sum()  # a scalar broadcasts against anything
            out = getattr(ndl.ops, binary)(x, y)
        elif kind == "scalar":
            out = [x + number, x * number, number - x][pick % 3]
        elif kind == "sum":
            out = x.sum(pick % x.ndim if x.ndim else None)
        elif kind == "transpose":
            out = x.transpose() if x.ndim >= 2 else x.reshape((1,) + x.shape)
        else:
            out = x.reshape((-1,))
        values.append(out)
    return values[-1].sum()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.integers(0, 2**31 - 1))
def test_interpreter_equals_eager_and_text_round_trips(program, seed):
    base, n_inputs, _ = program
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(base) for _ in range(n_inputs)]
    tensors = [ndl.Tensor(a, dtype="float64") for a in arrays]
    eager = run_program(program, *tensors)
    eager.backward()

    graph = ndl.trace(lambda *xs: run_program(program, *xs), *[a for a in arrays])
    assert parse(str(graph)) == graph
    loss, *grads = interpret(autodiff(graph), *arrays)
    np.testing.assert_allclose(loss, eager.numpy(), rtol=1e-12, atol=1e-12)
    for tensor, grad in zip(tensors, grads):
        expected = tensor.grad.numpy() if tensor.grad is not None else np.zeros_like(grad)
        np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(shapes, shapes, st.integers(0, 2**31 - 1))
def test_broadcasting_binary_ops_match_numpy(a_shape, b_shape, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    try:
        expected = a * b + a
    except ValueError:
        return
    got = ndl.Tensor(a, dtype="float64") * ndl.Tensor(b, dtype="float64") + ndl.Tensor(a, dtype="float64")
    np.testing.assert_allclose(got.numpy(), expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), st.data())
def test_reductions_match_numpy_over_random_axes(shape, data):
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
    x = np.random.default_rng(len(shape)).standard_normal(shape)
    t = ndl.Tensor(x, dtype="float64")
    np.testing.assert_allclose(ndl.summation(t, axes).numpy(), x.sum(axis=axes))
    np.testing.assert_allclose(ndl.max(t, axes).numpy(), x.max(axis=axes))
    np.testing.assert_allclose(ndl.logsumexp(t, axes).numpy(), np.log(np.exp(x).sum(axis=axes)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.integers(0, 2**31 - 1))
def test_compiled_random_programs_and_their_gradients_equal_the_interpreter(program, seed):
    """Random fusion shapes (chains, fan-out, reductions feeding elementwise, views) through the
    whole CPU pipeline, forward and gradient."""
    from ndlc.jit.compile import compile_graph
    base, n_inputs, _ = program
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(base) for _ in range(n_inputs)]
    graph = autodiff(ndl.trace(lambda *xs: run_program(program, *xs), *arrays))
    compiled = compile_graph(graph).run(*arrays)
    for got, want in zip(compiled, interpret(graph, *arrays)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs(), st.sampled_from([(600, 300), (300, 600), (48, 40, 70), (1 << 17,)]), st.integers(0, 2**31 - 1))
def test_random_programs_give_the_same_bits_on_one_and_two_threads(program, base, seed):
    """Threads split outer loops or fixed chunks, never a sum's order: results do not depend on
    the thread count. Shapes large enough that kernels do split."""
    import os
    from ndlc.jit.compile import compile_graph
    _, n_inputs, steps = program
    program = (base, n_inputs, steps)
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(base).astype(np.float32) for _ in range(n_inputs)]
    graph = autodiff(ndl.trace(lambda *xs: run_program(program, *xs), *arrays))
    saved = os.environ.get("NDLC_THREADS")
    results = {}
    try:
        for threads in ("1", "2"):
            os.environ["NDLC_THREADS"] = threads
            results[threads] = [r.tobytes() for r in compile_graph(graph).run(*arrays)]
    finally:
        os.environ.pop("NDLC_THREADS") if saved is None else os.environ.__setitem__("NDLC_THREADS", saved)
    assert results["1"] == results["2"]
