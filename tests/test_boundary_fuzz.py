"""The boundary fuzzer: compiled forward functions and training steps are called with drawn dtypes
(f16/f32/f64, ints, bools, and one ndlc refuses), layouts (Fortran order, negative strides, strided
and read-only views, big-endian bytes, 0-size and 1-size dimensions), values (NaN, ±Inf, denormals, ±1e38) and
argument forms (arrays, Tensors, lists, Python numbers, by position or by name). Each must give
what eager needle gives on `ndl.Tensor(argument)` (NaN positions included), or, where eager fails,
a clear NdlcError or TypeError, and never crash: examples run in a worker process (this file run as
a script), which a test restarts and reports when it dies."""
import os
import pickle
import select
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import ndlc as ndl
from ndlc.examples.train_mlp import training_step

DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8", "bool", "int8")
LAYOUTS = ("c", "fortran", "flipped", "strided", "readonly", "big-endian")
FORMS = ("array", "tensor", "list", "number", "keyword")
SPECIAL = (np.nan, np.inf, -np.inf, 1e38, -1e38, 1e-40, -1e-40, 0.0, -0.0, 1.0)
# A product's terms without ±1e38: where a finite product overflows, a fused multiply-add (numpy's
# BLAS and ndlc's loops each use them at will) gives ±Inf where a rounded product then a sum gives NaN.
PRODUCT_TERMS = tuple(v for v in SPECIAL if abs(v) != 1e38)
CLASSES = 3  # classes of the training steps' models
EXAMPLE_SECONDS = 300  # one example's compilations and runs take well under a second; longer is a hang


# name -> (function of Tensors, kind of its operands' shapes): what the forward fuzzer compiles
FORWARD = {
    "multiply-add": (lambda a, b: a * b + a, "broadcast"),
    "maximum-where": (lambda a, b: ndl.ops.where(a > b, a, b) - ndl.ops.maximum(a, b), "same"),
    "relu-exp-sum": (lambda a, b: (ndl.ops.relu(a) + b).exp().sum(axes=(0,)), "same"),
    "matmul": (lambda a, b: a @ b, "matmul"),
    "logsumexp": (lambda a, b: ndl.ops.logsumexp(a - b, axes=(a.ndim - 1,)), "same"),
}


def _shapes(kind, draw):
    """Two operand shapes of `kind`, with 0-d tensors and 0-size and 1-size dimensions among them."""
    dim = st.sampled_from((0, 1, 2, 3, 5))
    if kind == "matmul":
        m, k, n = draw(dim), draw(dim), draw(dim)
        return (m, k), (k, n)
    shape = tuple(draw(st.lists(dim, max_size=3)))
    if kind == "same":
        return shape, shape
    other = tuple(d if draw(st.booleans()) else 1 for d in shape)
    return shape, other[draw(st.integers(0, len(other))):]


@st.composite
def arrays(draw, shape, dtypes=DTYPES, special=SPECIAL):
    """An array of `shape` of a drawn dtype, with special values among its elements (those a
    narrow float cannot hold become ±Inf or 0, as numpy's cast makes them)."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    if dtype.kind == "f":
        elements = st.one_of(st.sampled_from(special), st.floats(-1e3, 1e3))
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(dtype)
        elements = st.one_of(st.integers(max(info.min, -5), min(info.max, 5)), st.sampled_from((info.min, info.max)))
    size = int(np.prod(shape))
    values = draw(st.lists(elements, min_size=size, max_size=size))
    with np.errstate(over="ignore"):
        return np.array(values, object).astype(dtype).reshape(shape)


@st.composite
def arguments(draw, shapes, special=SPECIAL):
    """One (form, layout, array) per shape."""
    return [(draw(st.sampled_from(FORMS)), draw(st.sampled_from(LAYOUTS)), draw(arrays(shape, special=special)))
            for shape in shapes]


@st.composite
def forward_examples(draw):
    name = draw(st.sampled_from(sorted(FORWARD)))
    kind = FORWARD[name][1]
    special = PRODUCT_TERMS if kind == "matmul" else SPECIAL
    return {"kind": "forward", "name": name, "arguments": draw(arguments(_shapes(kind, draw), special))}


@st.composite
def training_examples(draw):
    batch, features = draw(st.sampled_from((0, 1, 4))), draw(st.sampled_from((1, 3)))
    x = (draw(st.sampled_from(FORMS[:3] + ("keyword",))), draw(st.sampled_from(LAYOUTS)),
         draw(arrays((batch, features), ("float16", "float32", "float64", "int64"), PRODUCT_TERMS)))
    labels = draw(hnp.arrays(draw(st.sampled_from(("int32", "int64", "uint8"))), (batch,),
                             elements=st.integers(0, CLASSES - 1)))
    y = (draw(st.sampled_from(("array", "tensor", "list", "keyword"))), draw(st.sampled_from(LAYOUTS)), labels)
    return {"kind": "train", "optimizer": draw(st.sampled_from(("SGD", "Adam"))), "arguments": [x, y]}


# the worker's side: build the arguments, run eager and compiled, report both

def _laid_out(array, layout):
    """`array`'s values in `layout`: a view with other strides, or a read-only array."""
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "flipped" and array.ndim:
        return np.flip(np.flip(array, -1).copy(), -1)
    if layout == "strided" and array.ndim:
        wide = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), array.dtype)
        wide[..., ::2] = array
        return wide[..., ::2]
    if layout == "big-endian":  # as read from a file written on another machine
        return array.astype(array.dtype.newbyteorder(">"))
    if layout == "readonly":
        array = array.copy()
        array.setflags(write=False)
    return array


def _argument(form, layout, array):
    """The argument as the caller passes it, and what eager needle is given for it (a Tensor of
    it, or the error making one raises)."""
    value = _laid_out(array, layout)
    if form == "tensor":
        tensor = _eager(value)
        value = value if isinstance(tensor, Exception) else tensor
    elif form == "list":
        value = value.tolist()
    elif form == "number" and array.ndim == 0:
        value = value.item()
    return value, value if isinstance(value, ndl.Tensor) else _eager(value)


def _eager(value):
    try:
        return ndl.Tensor(value)
    except Exception as e:
        return e


def _outcome(run):
    """('values', [arrays]) of a run, or ('error', class, message, whether it is a clear one)."""
    try:
        result = run()
    except Exception as e:
        return ("error", type(e).__name__, str(e)[:500], isinstance(e, (ndl.NdlcError, TypeError)))
    results = result if isinstance(result, (list, tuple)) else [result]
    return ("values", [np.array(r.numpy() if hasattr(r, "numpy") else r) for r in results])


def _call(fn, values, forms, names):
    """fn called twice (a compiled step's second call runs its kept program) with `values`, from the
    first of form 'keyword' on by their parameters' names; the second call's result."""
    cut = forms.index("keyword") if "keyword" in forms else len(forms)
    fn(*values[:cut], **dict(zip(names[cut:], values[cut:])))
    return fn(*values[:cut], **dict(zip(names[cut:], values[cut:])))


def run_example(example):
    """The eager and compiled outcomes of one drawn example."""
    forms = [form for form, _, _ in example["arguments"]]
    built = [_argument(*a) for a in example["arguments"]]
    given, eager_given = [b[0] for b in built], [b[1] for b in built]
    bad = next((e for e in eager_given if isinstance(e, Exception)), None)
    if example["kind"] == "forward":
        fn = FORWARD[example["name"]][0]
        eager, compiled = fn, ndl.compile(fn)
        params = ["a", "b"]
        states = None
    else:
        runs = []
        for _ in range(2):
            np.random.seed(0)
            model = ndl.nn.Linear(example["arguments"][0][2].shape[1], CLASSES)
            opt = getattr(ndl.optim, example["optimizer"])(model.parameters(), lr=0.1)
            runs.append((model, training_step(model, opt)))
        eager, compiled = runs[0][1], ndl.compile(runs[1][1])
        params = ["x", "y"]
        states = [m.parameters() for m, _ in runs]

    def eagerly():
        if bad is not None:
            raise bad
        return _call(eager, eager_given, forms, params)

    first = _outcome(eagerly)
    second = _outcome(lambda: _call(compiled, given, forms, params))
    if states and first[0] == second[0] == "values":
        first[1].extend(p.numpy() for p in states[0])
        second[1].extend(p.numpy() for p in states[1])
    return first, second


def serve():
    """The worker: pickled examples in on stdin, pickled outcomes out (stdout is kept for them)."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while True:
        try:
            example = pickle.load(requests)
        except EOFError:
            return
        pickle.dump(run_example(example), channel)
        channel.flush()


# the test's side

class Worker:
    """A worker process running examples; started again after a crash or a hang. Its stderr goes to
    a file (a pipe nobody reads would fill and stop it) whose tail a failure shows."""

    def __init__(self):
        self.process = self.log = None

    def run(self, example):
        if self.process is None or self.process.poll() is not None:
            self.log = tempfile.TemporaryFile()
            self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=self.log)
        pickle.dump(example, self.process.stdin)
        self.process.stdin.flush()
        if not select.select([self.process.stdout], [], [], EXAMPLE_SECONDS)[0]:
            self.process.kill()
            self._fail(f"the worker ran for over {EXAMPLE_SECONDS} s", example)
        try:
            return pickle.load(self.process.stdout)
        except EOFError:
            self._fail("the worker died", example)

    def _fail(self, what, example):
        status = self.process.wait()
        self.log.seek(0)
        err = self.log.read().decode(errors="replace")[-3000:]
        self.process = None
        pytest.fail(f"{what} (exit status {status}) on {example!r}:\n{err}")

    def close(self):
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def check(worker, example):
    """Compiled gives eager's values (to float32 rounding in other orders, which two Adam steps of lr
    0.1 magnify to about 1e-6); where eager fails, compiled fails too, with a clear error or
    the one eager raised (the trace runs the same frontend code: Linear's feature count check)."""
    eager, compiled = worker.run(example)
    if eager[0] == "error":
        assert compiled[0] == "error" and (compiled[3] or compiled[1:3] == eager[1:3]), \
            f"eager raised {eager[1]}: {eager[2]}; compiled gave {compiled[:3]} on {example!r}"
        return
    assert compiled[0] == "values", f"compiled raised {compiled[1]}: {compiled[2]} where eager ran, on {example!r}"
    assert len(eager[1]) == len(compiled[1])
    for want, got in zip(eager[1], compiled[1]):
        assert got.shape == want.shape and got.dtype == want.dtype, (got, want, example)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=True,
                                   err_msg=f"compiled and eager differ on {example!r}")


FEW = settings(max_examples=12, deadline=None, derandomize=True, database=None,
               suppress_health_check=list(HealthCheck))
MANY = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@FEW
@given(example=forward_examples())
def test_compiled_forward_agrees_with_eager_or_says_why(worker, example):
    check(worker, example)


@FEW
@given(example=training_examples())
def test_compiled_training_step_agrees_with_eager_or_says_why(worker, example):
    check(worker, example)


@pytest.mark.slow
@MANY
@given(example=st.one_of(forward_examples(), training_examples()))
def test_the_boundaries_under_many_examples(worker, example):
    check(worker, example)


if __name__ == "__main__":
    serve()
