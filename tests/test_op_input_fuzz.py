"""Every registry op and every nn module with drawn inputs, eagerly and compiled. A case of
tests/op_cases.py (or a module with inputs that fit it) is drawn, then maybe mutated: an operand's
rank, one of its dimensions or its dtype changed, or an op's attribute made negative, out of range,
fractional or of the wrong length. Eager and compiled must then agree: the same class of error (an
NdlcError, or a module's ValueError naming the module; never an exception from inside numpy or
codegen), or the same values; an unmutated op case also matches the case's numpy expectation.
Compiled calls run in this process: the boundary fuzzer already isolates crashes of native code.
FUZZ_EXAMPLES sets how many are drawn (`-m slow`: many more)."""
import os
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ndlc as ndl
from ndlc.errors import NdlcError
from ndlc.frontend.tensor import apply
from op_cases import CASES

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
# scan's cases carry a body graph typed for their operands, which a mutated operand would not follow
DRAWN = [case for case in CASES if case.op not in ("scan",)]
DTYPES = ("float32", "float64", "int32", "int64", "bool")


def fast(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def mutate_shape(data, inputs):
    if not inputs:
        return inputs, "none"
    i = data.draw(st.integers(0, len(inputs) - 1))
    x = inputs[i]
    how = data.draw(st.sampled_from(["drop", "add", "resize"] if x.ndim else ["add"]))
    if how == "drop":
        x = x.reshape(x.shape[1:]) if x.shape[0] == 1 else x[0]
    elif how == "add":
        x = np.repeat(np.expand_dims(x, data.draw(st.integers(0, x.ndim))), data.draw(st.integers(1, 3)), axis=0) \
            if x.ndim else np.full((data.draw(st.integers(1, 3)),), x)
    else:
        axis, size = data.draw(st.integers(0, x.ndim - 1)), data.draw(st.integers(0, 5))
        x = np.resize(np.moveaxis(x, axis, 0), (size,) + np.moveaxis(x, axis, 0).shape[1:])
        x = np.moveaxis(x, 0, axis)
    return inputs[:i] + [x] + inputs[i + 1:], f"operand {i} {how} -> {x.shape}"


def mutate_dtype(data, inputs):
    if not inputs:
        return inputs, "none"
    i, dtype = data.draw(st.integers(0, len(inputs) - 1)), data.draw(st.sampled_from(DTYPES))
    return inputs[:i] + [inputs[i].astype(dtype)] + inputs[i + 1:], f"operand {i} as {dtype}"


def mutate_attr(data, attrs):
    names = [k for k, v in attrs.items() if isinstance(v, (int, tuple)) and not isinstance(v, bool)]
    if not names:
        return attrs, "none"
    name = data.draw(st.sampled_from(names))
    value = attrs[name]
    if isinstance(value, int):
        value = data.draw(st.sampled_from([-value - 1, value + 7, value + 0.5, 0, (value,)]))
    elif value and all(isinstance(v, int) for v in value):
        value = data.draw(st.sampled_from([value[:-1], value + value[-1:], tuple(-v - 1 for v in value),
                                           tuple(v + 9 for v in value), value[0]]))
    else:
        value = value[:-1]
    return {**attrs, name: value}, f"{name}={value!r}"


def outcome(run):
    """('ok', result arrays) or ('error', the exception)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's overflow and invalid-value warnings, as in eager
            result = run()
    except (NdlcError, IndexError) as e:  # IndexError: gather's indices outside the table, as eager
        return "error", e
    return "ok", [r.numpy() for r in _leaves(result)]


def _leaves(result):
    """The tensors of a result that may nest tuples (an LSTM's (output, (h, c)))."""
    return [leaf for part in result for leaf in _leaves(part)] if isinstance(result, tuple) else [result]


def agree(eager, compiled, where):
    """Eager and compiled outcomes: the same class of error, or results equal in shape, dtype and value."""
    assert eager[0] == compiled[0], where
    if eager[0] == "error":
        assert type(eager[1]) is type(compiled[1]), where
        return
    for e, c in zip(eager[1], compiled[1]):
        assert e.shape == c.shape and e.dtype == c.dtype, where
        np.testing.assert_allclose(c, e, rtol=2e-4, atol=1e-5, err_msg=where)


def run_case(data):
    case = data.draw(st.sampled_from(DRAWN))
    inputs, attrs = case.draw(np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))))
    inputs = [x.astype(np.float32) if x.dtype == np.float64 else x for x in inputs]
    kind = data.draw(st.sampled_from(["none", "shape", "dtype", "attr"]))
    how = "none"
    if kind == "shape":
        inputs, how = mutate_shape(data, inputs)
    elif kind == "dtype":
        inputs, how = mutate_dtype(data, inputs)
    elif kind == "attr":
        attrs, how = mutate_attr(data, attrs)
    tensors = [ndl.Tensor(x, dtype=x.dtype.name) for x in inputs]  # float64 stays float64 both ways
    # gather and scatter_add through ops, which bound their indices when they are a compiled
    # function's argument: the bare op, traced, cannot refuse an index outside the table (it selects
    # or adds nothing)
    bounded = {"gather": lambda *xs, **a: ndl.ops.gather(*xs), "scatter_add": ndl.ops.scatter_add}
    op = bounded.get(case.op, lambda *xs, **a: apply(case.op, *xs, **a))
    eager = outcome(lambda: op(*tensors, **attrs))
    compiled = outcome(lambda: ndl.compile(lambda *xs: op(*xs, **attrs))(*tensors))
    where = f"{case.op} {how}: eager {eager[1]!r:.300}, compiled {compiled[1]!r:.300}"
    agree(eager, compiled, where)
    if eager[0] == "ok" and how == "none" and eager[1][0].dtype != np.bool_:
        np.testing.assert_allclose(eager[1][0], case.expect(*inputs, **attrs), rtol=2e-4, atol=1e-5, err_msg=where)


def test_ops_with_drawn_inputs_agree_eagerly_and_compiled():
    fast(EXAMPLES * 2)(given(st.data())(run_case))()


@pytest.mark.slow
def test_ops_with_drawn_inputs_agree_eagerly_and_compiled_many():
    settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))(given(st.data())(run_case))()


nn = ndl.nn
T, B = 3, 2  # a sequence's length and a batch's size in the modules' inputs below


def _flat(result):
    """(output, (h, c)) as (output, h, c): a compiled function returns a flat tuple."""
    return tuple(_leaves(result))


def _labels(n, *shape):
    return np.random.default_rng(1).integers(0, n, shape).astype(np.float32)


def _normal(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


# name -> (module, function of the module and tensors, the tensors' arrays)
MODULES = {
    "Linear": (lambda: nn.Linear(4, 3), lambda m, x: m(x), lambda: [_normal(B, 4)]),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(4), lambda m, x: m(x), lambda: [_normal(B, 4)]),
    "LayerNorm1d": (lambda: nn.LayerNorm1d(4), lambda m, x: m(x), lambda: [_normal(B, 4)]),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3), lambda m, x: m(x), lambda: [_normal(B, 3, 4, 4)]),
    "Conv": (lambda: nn.Conv(3, 2, 3), lambda m, x: m(x), lambda: [_normal(B, 3, 5, 5)]),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), lambda m, x: m(x), lambda: [_normal(B, 2, 4, 4)]),
    "AvgPool2d": (lambda: nn.AvgPool2d(2), lambda m, x: m(x), lambda: [_normal(B, 2, 4, 4)]),
    "Flatten": (lambda: nn.Flatten(), lambda m, x: m(x), lambda: [_normal(B, 2, 3)]),
    "Embedding": (lambda: nn.Embedding(6, 3), lambda m, x: m(x), lambda: [_labels(6, T, B)]),
    "RNNCell": (lambda: nn.RNNCell(4, 3), lambda m, x, h: m(x, h), lambda: [_normal(B, 4), _normal(B, 3)]),
    "LSTMCell": (lambda: nn.LSTMCell(4, 3), lambda m, x, h, c: m(x, (h, c)),
                 lambda: [_normal(B, 4), _normal(B, 3), _normal(B, 3)]),
    "RNN": (lambda: nn.RNN(4, 3, num_layers=2), lambda m, x, h: m(x, h), lambda: [_normal(T, B, 4), _normal(2, B, 3)]),
    "LSTM": (lambda: nn.LSTM(4, 3), lambda m, x, h, c: _flat(m(x, (h, c))),
             lambda: [_normal(T, B, 4), _normal(1, B, 3), _normal(1, B, 3)]),
    "MultiHeadAttention": (lambda: nn.MultiHeadAttention(dropout=0.0, causal=True), lambda m, q, k, v: m(q, k, v),
                           lambda: [_normal(B, 2, T, 3), _normal(B, 2, T, 3), _normal(B, 2, T, 3)]),
    "AttentionLayer": (lambda: nn.AttentionLayer(6, 2, 3, dropout=0.0), lambda m, x: m(x), lambda: [_normal(B, T, 6)]),
    "TransformerLayer": (lambda: nn.TransformerLayer(6, 2, 3, 8, dropout=0.0), lambda m, x: m(x),
                         lambda: [_normal(B, T, 6)]),
    "Transformer": (lambda: nn.Transformer(6, 8, 1, num_head=2, dim_head=3, dropout=0.0, sequence_len=T),
                    lambda m, x: m(x), lambda: [_normal(B, T, 6)]),
    "SoftmaxLoss": (lambda: nn.SoftmaxLoss(), lambda m, x, y: m(x, y), lambda: [_normal(B, 5), _labels(5, B)]),
    "Residual": (lambda: nn.Residual(nn.Linear(4, 4)), lambda m, x: m(x), lambda: [_normal(B, 4)]),
}


def module_outcome(run, name):
    """('ok', result arrays) or ('error', the exception): an NdlcError, an IndexError of a gather's
    indices, or a module's own ValueError, which starts by naming the module (or function)."""
    try:
        return outcome(run)
    except ValueError as e:
        assert re.match(r"[A-Za-z_]\w*(\(.*?\))?: ", str(e)), (name, e)
        return "error", e


def run_module(data):
    name = data.draw(st.sampled_from(sorted(MODULES)))
    make, call, arrays = MODULES[name]
    inputs = arrays()
    kind = data.draw(st.sampled_from(["none", "shape", "dtype"]))
    inputs, how = mutate_shape(data, inputs) if kind == "shape" else mutate_dtype(data, inputs) \
        if kind == "dtype" else (inputs, "none")
    np.random.seed(0)
    module = make()
    tensors = [ndl.Tensor(x, dtype=x.dtype.name) for x in inputs]
    eager = module_outcome(lambda: call(module, *tensors), name)
    compiled = module_outcome(lambda: ndl.compile(lambda *xs: call(module, *xs))(*tensors), name)
    agree(eager, compiled, f"{name} {how}: eager {eager[1]!r:.300}, compiled {compiled[1]!r:.300}")


def test_modules_with_drawn_inputs_agree_eagerly_and_compiled():
    fast(EXAMPLES)(given(st.data())(run_module))()


@pytest.mark.slow
def test_modules_with_drawn_inputs_agree_eagerly_and_compiled_many():
    settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))(given(st.data())(run_module))()
