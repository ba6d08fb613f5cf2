"""Every registry op: the interpreter equals an independent numpy computation, and autodiff
gradients equal central finite differences in float64."""
import numpy as np
import pytest

from ndlc.errors import IRParseError
from ndlc.ir import all_ops, interpret, parse
from ndlc.passes import autodiff
from op_cases import BY_OP, CASES, loss_graph, single_op_graph

SEEDS = range(4)
PARAMS = [pytest.param(case, seed, id=f"{case.op}-{i}-{seed}")
          for i, case in enumerate(CASES) for seed in SEEDS]


def test_every_op_has_cases():
    assert sorted(all_ops()) == sorted(BY_OP)


@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("case,seed", PARAMS)
def test_forward_matches_numpy(case, seed, dtype):
    inputs, attrs = case.draw(np.random.default_rng(seed))
    graph, inputs = single_op_graph(case.op, inputs, attrs, dtype)
    (out,) = interpret(graph, *inputs)
    expected = np.asarray(case.expect(*[x.astype(np.float64) if x.dtype.kind == "f" else x for x in inputs], **attrs))
    assert out.shape == expected.shape
    assert out.dtype == graph.outputs[0].type.np_dtype
    tol = 1e-12 if dtype == "f64" else 1e-5
    np.testing.assert_allclose(out.astype(np.float64), expected.astype(np.float64), rtol=tol * 10, atol=tol)


@pytest.mark.parametrize("case,seed", [p for p in PARAMS if p.values[0].differentiable])
def test_gradient_matches_finite_differences(case, seed):
    rng = np.random.default_rng(seed)
    inputs, attrs = case.draw(rng)
    graph, values, r = loss_graph(case.op, inputs, attrs)
    weights = rng.standard_normal(r.shape)
    wrt = [v for v in values if v.dtype == "f64"]
    grads = interpret(autodiff(graph, wrt=wrt), *inputs, weights)[1:]

    def loss(arrays):
        return interpret(graph, *arrays, weights)[0]

    eps = 1e-6
    for v, analytic in zip(wrt, grads):
        i = values.index(v)
        numeric = np.zeros_like(inputs[i])
        for index in np.ndindex(*inputs[i].shape):
            plus = [x.copy() for x in inputs]
            minus = [x.copy() for x in inputs]
            plus[i][index] += eps
            minus[i][index] -= eps
            numeric[index] = (loss(plus) - loss(minus)) / (2 * eps)
        scale = max(np.linalg.norm(numeric), 1e-8)
        assert np.linalg.norm(analytic - numeric) / scale <= 1e-6, f"d/d{v.name}"


def test_logsumexp_gradient_of_tied_huge_maxima_is_the_softmax():
    """needle's gradient exp(x - max) / sum(exp(x - max)): exp(x - logsumexp) would round
    logsumexp(1e9, 1e9) to 1e9 in float32 and double the gradient."""
    import numpy as np

    import ndlc as ndl
    x = np.array([[1e9, 1e9, -1e9]], np.float32)

    def grad(z):
        z.requires_grad = True
        ndl.logsumexp(z, axes=(1,)).sum().backward()
        return z.grad
    eager = grad(ndl.Tensor(x))
    compiled = ndl.compile(grad)(x)
    for g in (eager, compiled):
        np.testing.assert_array_equal(g.numpy(), [[0.5, 0.5, 0.0]])


@pytest.mark.parametrize("x, w, width, message", [
    ("f32[1,2,2,2]", "f32[3,3,2,4]", 1, r"planes \(2, 2\) are smaller than the kernel \(3, 3\)"),
    ("f32[1,3,5,5]", "f32[3,3,2,4]", 3, "input channels 3 != weight's Cin 2"),
    ("f32[1,2,5,5]", "f32[3,3,2,4]", 4, "width 4 is not within the 3 outputs a row of 5 has"),
])
def test_row_conv_names_what_is_wrong(x, w, width, message):
    with pytest.raises(IRParseError, match=message):
        parse(f"graph @g(%x: {x}, %w: {w}) {{\n  %0 = row_conv(%x, %w, width={width}) : f32[1,1,4,1]\n  return %0\n}}")
