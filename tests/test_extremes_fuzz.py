"""Extreme values: every registry op and drawn small programs (normalisations, softmax, logsumexp,
SoftmaxLoss, reductions, elementwise chains, matmul, conv) on inputs with NaN, ±inf, ±0, the
largest and smallest normal float32, denormals, ~1e19 and ~1e-30 mixed in, eagerly and compiled.
The forwards must agree: NaN at the same places, infinities at the same places with the same signs,
finite values within a tolerance scaled to the magnitudes summed; so must the gradients wherever
the eager gradient is finite. DESIGN.md §5 lets float reductions reassociate: where the magnitudes
a result sums exceed float32's range (`BOUND_OVERFLOW`), whether a partial sum overflows depends on
the order, and any outcome is accepted there; a normalisation's statistics, only where its values
of one sign sum past float32's largest (`SIGNED_OVERFLOW`: +3e38 and -3e38 in a row overflow in no
order, so its eager outputs, finite, are demanded). A conv whose window crosses its zero padding
where a weight is inf or NaN is NaN as eagerly (0·inf). NaN payloads are not compared (NaN is NaN).
FUZZ_EXAMPLES sets how many are drawn (`-m slow`: many more)."""
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ndlc as ndl
from ndlc.frontend.nn.transformer import softmax
from ndlc.frontend.tensor import apply
from ndlc.ir import Graph, all_ops
from op_cases import BY_OP

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
F32 = np.finfo(np.float32)
SPECIALS = (np.nan, np.inf, -np.inf, 0.0, -0.0, float(F32.max), -float(F32.max), float(F32.tiny),
            -float(F32.tiny), 1e-40, -1e-45, 1e19, -1e19, 3e19, 1e-30, -1e-30)
# a result's summed magnitudes past this: some order of its partial sums may overflow, another not
BOUND_OVERFLOW = float(F32.max) / 4
# ... and a sum of values of one sign: up to this, no order of its partial sums overflows (a float32
# sum rounds to inf from the largest float and half its last place up; small values next to it round away)
SIGNED_OVERFLOW = float(F32.max)
RTOL = 1e-4
# ops whose result is a sum of products of their operands: the op of the operands' magnitudes
# bounds what a result sums (its rounding, and whether a partial sum may overflow)
SUMS = {"summation", "matmul", "conv", "plane_conv", "plane_correlate", "row_conv", "avg_pool2d", "unwindows",
        "plane_unwindows", "logsumexp", "logsoftmax"}
nn = ndl.nn


def fast(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def sprinkle(data, rng, x):
    """x (a float array) with drawn special values at drawn places."""
    if x.dtype.kind != "f" or x.size == 0:
        return x
    chosen = data.draw(st.lists(st.sampled_from(SPECIALS), min_size=1, max_size=4))
    at = rng.random(x.shape) < data.draw(st.sampled_from([0.1, 0.3, 0.6]))
    x = np.array(x, copy=True)
    x[at] = rng.choice(np.array(chosen, x.dtype), size=int(at.sum()))
    return x


def magnitudes(x):
    """|x| with NaN and infinities as 0: what the finite values contribute to a sum."""
    x = np.abs(np.asarray(x, np.float64))
    return np.where(np.isfinite(x), x, 0.0)


def agree(eager, compiled, bound, where, only_finite=False):
    """Eager and compiled arrays agree (see the module's docstring); `bound` broadcasts to them: the
    magnitudes each element sums; `only_finite`: compared where eager is finite (gradients)."""
    assert eager.shape == compiled.shape and eager.dtype == compiled.dtype, where
    if eager.dtype.kind != "f":
        np.testing.assert_array_equal(compiled, eager, err_msg=where)
        return
    e, c = eager.astype(np.float64), compiled.astype(np.float64)
    bound = np.broadcast_to(np.asarray(bound, np.float64), e.shape)
    free = bound > BOUND_OVERFLOW
    if only_finite:
        free = free | ~np.isfinite(e)
    same_class = (np.isnan(e) == np.isnan(c)) & (np.isinf(e) == np.isinf(c)) & (~np.isinf(e) | (e == c))
    bad = ~free & ~same_class
    assert not bad.any(), f"{where}: NaN/inf differ at {np.argwhere(bad)[:4].tolist()}: eager {eager[bad][:4]}, " \
                          f"compiled {compiled[bad][:4]}"
    finite = ~free & np.isfinite(e) & np.isfinite(c)
    # relative to the value, and to what it sums; a few denormal steps (a result of exp, say)
    tolerance = RTOL * np.abs(e) + RTOL * bound + 2.0 ** -146
    off = finite & (np.abs(np.where(finite, c, 0.0) - np.where(finite, e, 0.0)) > tolerance)
    assert not off.any(), f"{where}: values differ at {np.argwhere(off)[:4].tolist()}: eager {eager[off][:4]}, " \
                          f"compiled {compiled[off][:4]}"


def quietly(run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's overflow and invalid-value warnings, as in eager
        return run()


def both(fn, inputs):
    """fn's results (a tuple of arrays) eagerly and compiled."""
    def arrays(result):
        return [r.numpy() for r in (result if isinstance(result, tuple) else (result,))]
    tensors = [ndl.Tensor(x, dtype=x.dtype.name) for x in inputs]
    eager = quietly(lambda: arrays(fn(*tensors)))
    compiled = quietly(lambda: arrays(ndl.compile(fn)(*tensors)))
    return eager, compiled


def with_gradient(forward, inputs):
    """A function of the inputs returning forward's result and the gradient of Σ result·r for the
    first input (r fixed and drawn with the inputs)."""
    r = np.random.default_rng(7).standard_normal(quietly(lambda: forward(*[ndl.Tensor(x, dtype=x.dtype.name) for x in inputs])).shape)

    def step(*xs):
        xs[0].requires_grad = True
        y = forward(*xs)
        (y * ndl.Tensor(r.astype(y.dtype))).sum().backward()
        return y, xs[0].grad
    return step


# ---- every registry op ---------------------------------------------------------------------------
def op_bound(op, inputs, attrs):
    """The magnitudes each of op's results sums: op of the operands' magnitudes (float64) for the ops
    that sum products, the largest operand for logsumexp's kind, else 0 (nothing is summed)."""
    if op not in SUMS:
        return 0.0
    if op in ("logsumexp", "logsoftmax"):
        return float(magnitudes(inputs[0]).max(initial=0.0))
    return _sums(op, inputs, attrs)


def _sums(op, inputs, attrs):
    """op of its operands' magnitudes, in float64."""
    bounded = [ndl.Tensor(magnitudes(x), dtype="float64") if x.dtype.kind == "f" else ndl.Tensor(x) for x in inputs]
    return quietly(lambda: apply(op, *bounded, **attrs).numpy())


def run_op(data):
    op = data.draw(st.sampled_from(sorted(all_ops())))
    assert op in BY_OP, f"registry op {op} has no case in tests/op_cases.py"
    case = data.draw(st.sampled_from(BY_OP[op]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    inputs, attrs = case.draw(rng)
    wide = any(isinstance(v, Graph) for v in attrs.values())  # scan: its body is typed for float64
    inputs = [x if wide or x.dtype != np.float64 else x.astype(np.float32) for x in inputs]
    inputs = [sprinkle(data, rng, x) for x in inputs]
    forward = (lambda *xs: ndl.ops.gather(*xs)) if op == "gather" else (lambda *xs: apply(op, *xs, **attrs))
    bound = op_bound(op, inputs, attrs)
    where = f"{op} {attrs} on {[x.tolist() for x in inputs]!s:.600}"
    eager, compiled = both(forward, inputs)
    for e, c in zip(eager, compiled):
        agree(e, c, bound, where)
    if case.differentiable and inputs and inputs[0].dtype.kind == "f" and eager[0].dtype.kind == "f":
        eager, compiled = both(with_gradient(forward, inputs), inputs)
        scale = magnitudes(eager[1]).max(initial=0.0)  # where the forward is not compared, its gradient is not
        free = np.isinf(bound) if np.shape(bound) in ((), eager[1].shape) else False
        agree(eager[1], compiled[1], np.where(free, np.inf, scale), where + " (gradient)", only_finite=True)


def test_every_registry_op_agrees_on_extreme_values():
    fast(EXAMPLES * 3)(given(st.data())(run_op))()


@pytest.mark.slow
def test_every_registry_op_agrees_on_extreme_values_many():
    settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))(given(st.data())(run_op))()


# ---- drawn small programs -------------------------------------------------------------------------
def _rows_bound(x, axes):
    """A normalisation's magnitudes: the values over their spread (float64), at least the smallest
    normal float's (the statistics scale values by powers of two, which round in the denormal range:
    a row of -1e-45 has a mean one denormal step off, 4e-43 over the spread where eager's is 0), and
    where the sums of x or of its squared deviations may overflow in one order and not another: its
    positive or its negative values summing past SIGNED_OVERFLOW (a row of +3e38, -3e38 and small
    values overflows in no order: compiled, as eagerly, finite), its squared deviations near float32's largest."""
    m, finite = magnitudes(x), np.where(np.isfinite(x), np.asarray(x, np.float64), 0.0)
    deviations = ((m - m.mean(axes, keepdims=True)) ** 2).sum(axes, keepdims=True)
    near = (np.maximum(finite, 0).sum(axes, keepdims=True) > SIGNED_OVERFLOW) \
        | (np.maximum(-finite, 0).sum(axes, keepdims=True) > SIGNED_OVERFLOW) \
        | ((deviations > float(F32.max) / 4) & (deviations < float(F32.max) * 4))  # float64: F32.max * 4 is inf
    spread = np.sqrt(deviations / np.prod([x.shape[a] for a in axes]) + 1e-5)
    return np.where(near, np.inf, np.maximum(m.max(axes, keepdims=True), float(F32.tiny)) / spread)


def _norm(module, axes):
    def make(data, rng, shape):
        m = module(shape[1])
        return m, lambda x: _rows_bound(x, axes)
    return make


def _softmax_loss(data, rng, shape):
    labels = rng.integers(0, shape[1], shape[0]).astype(np.float32)
    loss = nn.SoftmaxLoss()
    return (lambda z: loss(z, ndl.Tensor(labels))), lambda z: magnitudes(z).max(initial=0.0) * 4


def _elementwise(data, rng, shape):
    chain = data.draw(st.lists(st.sampled_from(("exp", "log", "tanh", "sigmoid", "relu", "sqrt", "negate", "square",
                                                "scale", "shift", "recip")), min_size=1, max_size=4))
    steps = {"exp": ndl.ops.exp, "log": ndl.ops.log, "tanh": ndl.ops.tanh, "sigmoid": ndl.ops.sigmoid,
             "relu": ndl.ops.relu, "sqrt": ndl.ops.sqrt, "negate": ndl.ops.negate, "square": lambda x: x * x,
             "scale": lambda x: x * 3.0, "shift": lambda x: x + 1.5, "recip": lambda x: 1.0 / x}

    def run(x):
        for name in chain:
            x = steps[name](x)
        return x
    return run, lambda x: 0.0


PROGRAMS = {
    "LayerNorm1d": ((2, 8), _norm(lambda d: nn.LayerNorm1d(d), (1,))),
    "BatchNorm1d": ((4, 8), _norm(lambda d: nn.BatchNorm1d(d), (0,))),
    "BatchNorm2d": ((2, 3, 4, 4), _norm(lambda c: nn.BatchNorm2d(c), (0, 2, 3))),
    "softmax": ((3, 7), lambda d, r, s: (softmax, lambda x: magnitudes(x).max(1, keepdims=True) * 4)),
    "logsumexp": ((3, 9), lambda d, r, s: (lambda x: ndl.ops.logsumexp(x, (1,)),
                                          lambda x: magnitudes(x).max(1) * 4)),
    "SoftmaxLoss": ((4, 5), _softmax_loss),
    "sum": ((5, 6), lambda d, r, s: (lambda x: x.sum((1,)), lambda x: magnitudes(x).sum(1))),
    "max": ((5, 6), lambda d, r, s: (lambda x: x.max((0,)), lambda x: 0.0)),
    "min": ((5, 6), lambda d, r, s: (lambda x: -((-x).max((1,))), lambda x: 0.0)),
    "elementwise": ((4, 5), _elementwise),
    "matmul": ((6, 5), lambda d, r, s: (lambda x: ndl.ops.relu(x @ ndl.Tensor(WEIGHT) + 0.5),
                                       lambda x: magnitudes(x) @ np.abs(WEIGHT) + 0.5)),
    "conv": ((2, 3, 6, 6), lambda d, r, s: (nn.Conv(3, 4, 3), lambda x: np.inf
                                           if magnitudes(x).sum() * 2 > BOUND_OVERFLOW else magnitudes(x).max() * 27)),
}
WEIGHT = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)


def run_program(data):
    name = data.draw(st.sampled_from(sorted(PROGRAMS)))
    shape, make = PROGRAMS[name]
    if name not in ("matmul", "conv") and data.draw(st.booleans()):  # rows long enough for codegen's vectors
        shape = shape[:-1] + (data.draw(st.sampled_from([67, 130])),)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    np.random.seed(0)  # the modules' initial parameters
    forward, bound = make(data, rng, shape)
    x = sprinkle(data, rng, rng.standard_normal(shape).astype(np.float32) * data.draw(st.sampled_from([1.0, 1e19, 1e-30])))
    where = f"{name} on {x.tolist()}"
    eager, compiled = both(with_gradient(forward, [x]), [x])
    b = quietly(lambda: bound(x))
    agree(eager[0], compiled[0], b, where)
    try:
        agree(eager[1], compiled[1], magnitudes(eager[1]).max(initial=0.0), where + " (gradient)", only_finite=True)
    except AssertionError:
        if not no_less_accurate(forward, x, eager[1], compiled[1]):
            raise


def no_less_accurate(forward, x, eager, compiled):
    """Whether the compiled gradient is, where eager's is finite, as close as eager's (up to twice its
    error and a float32 ulp) to the gradient of the same program in float64: an ill-conditioned
    gradient (1 - tanh(y)² near saturation magnifies tanh's last bit 4000-fold) may leave the
    tolerance while both are as good as float32 allows."""
    x64 = x.astype(np.float64)
    try:
        exact = quietly(lambda: with_gradient(forward, [x64])(ndl.Tensor(x64, dtype="float64")))[1].numpy()
    except Exception:  # a module's float32 parameters refuse float64 input: no reference
        return False
    judged = np.isfinite(eager) & np.isfinite(exact)
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return bool(np.all(~judged | (np.abs(compiled - exact) <= 2 * np.abs(eager - exact) + ulp)))


def test_programs_agree_on_extreme_values():
    fast(EXAMPLES * 2)(given(st.data())(run_program))()


@pytest.mark.slow
def test_programs_agree_on_extreme_values_many():
    settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))(given(st.data())(run_program))()
