"""Compiled functions called with drawn changes between calls: a hypothesis state machine calls
functions of several signatures (a default, *args, keyword arguments in any order) and a compiled
module with arguments whose form changes from call to call (arrays, Tensors with and without
requires_grad and on either host device, float64 or integer arrays, lists, tuples, Python
numbers, None, dicts, text), by position or by name, and between calls switches the module
between train and eval, changes the lists and dicts a function reads (numbers, a tensor) in place
or rebinds them, replaces or rewrites its parameters, flips their requires_grad and
changes its settings. Every compiled call must give what eager needle gives on the arguments as
`ndl.Tensor(...)` converts them, or (where the rank, dtype or count differs from the first call's)
the ShapeError that refuses them, or, where eager fails, a named error: never stale code's result
and never a crash. test_entry_fuzz.py drives a training step's state; this drives its arguments.
FUZZ_EXAMPLES sets how many programs are drawn (`-m slow` runs 60)."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import ndlc as ndl
from ndlc.jit.arguments import Parameters, as_input

nn = ndl.nn
FORMS = ("array", "tensor", "tensor with grad", "cpu_numpy tensor", "float64", "int64", "list", "tuple",
         "number", "none", "dict", "text")
NAMED = (ndl.NdlcError, TypeError, ValueError, IndexError)  # the errors a bad argument may raise


def affine(a, b, scale=1.5):
    return a * scale + b


def total(a, *rest):
    result = a.sum()
    for r in rest:
        result = result + r.sum()
    return result


def difference(x, y):
    return x - y


SETTINGS = {"scale": 1.0, "shifts": [0.0, 1.0]}  # numbers in containers: a trace compiles them in
OFFSETS = [ndl.Tensor(np.zeros(3, np.float32), requires_grad=False)]  # a tensor reached through a list


def configured(x):
    return x * SETTINGS["scale"] + SETTINGS["shifts"][1] + OFFSETS[0]


FUNCTIONS = {"affine": affine, "total": total, "difference": difference, "configured": configured}


def given_as(array, form):
    """`array` (float32) passed in `form` (each call builds its own)."""
    if form == "tensor":
        return ndl.Tensor(array.copy(), requires_grad=False)
    if form == "tensor with grad":
        return ndl.Tensor(array.copy(), requires_grad=True)
    if form == "cpu_numpy tensor":
        return ndl.Tensor(array.copy(), device=ndl.cpu_numpy(), requires_grad=False)
    if form in ("float64", "int64"):
        return array.round().astype(form) if form == "int64" else array.astype(form)
    if form == "list":
        return array.tolist()
    if form == "tuple":
        return tuple(array.reshape(-1).tolist())
    if form == "number":
        return float(array.reshape(-1)[0]) if array.size else 0.0
    return {"none": None, "dict": {"a": array}, "text": "1.0"}.get(form, array.copy())


def tensor_of(value):
    """What eager needle is given: the argument as `ndl.Tensor(value)` makes it."""
    return value if isinstance(value, ndl.Tensor) else ndl.Tensor(value, requires_grad=False)


def outcome(run):
    try:
        return "values", run()
    except Exception as e:  # noqa: BLE001 - the class is what is compared
        return "error", e


def agree(eager, compiled, what):
    results = [eager, compiled]
    for i, r in enumerate(results):
        r = r if isinstance(r, tuple) else (r,)
        results[i] = [x.numpy() for x in r]
    for want, got in zip(*results):
        assert got.shape == want.shape and got.dtype == want.dtype, (what, got, want)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=what)


class Model:
    """A module's two copies, built from one seed, and the compiled one."""

    def __init__(self, seed):
        copies = []
        for _ in range(2):
            np.random.seed(seed)
            copies.append(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, eps=1e-2), nn.Tanh(), nn.Linear(4, 3)))
        self.eager, self.module = copies
        self.compiled = ndl.compile(self.module)


class CallsUnderChange(RuleBasedStateMachine):
    """Compiled functions and their eager originals, called alike with changing arguments."""

    @initialize(seed=st.integers(0, 2**16))
    def build(self, seed):
        self.rng = np.random.default_rng(seed)
        self.compiled = {name: ndl.compile(fn) for name, fn in FUNCTIONS.items()}
        self.compiled["model"] = None
        self.signatures = {}  # name -> the (count, rank, dtype) signature of its first call
        self.model = Model(seed)
        global OFFSETS
        SETTINGS.update(scale=1.0, shifts=[0.0, 1.0])
        OFFSETS = [ndl.Tensor(np.zeros(3, np.float32), requires_grad=False)]

    def signature(self, name, args, kwargs):
        """(count, ((ndim, dtype), ...)) of a call as the compiled function binds and converts it,
        or None where that raises (the call must then raise a named error)."""
        fn = self.model.module.forward if name == "model" else FUNCTIONS[name]
        try:
            arrays = [as_input(v, name, i) for i, v in enumerate(Parameters(fn, name).bind(args, kwargs))]
        except NAMED:
            return None
        return len(arrays), tuple((a.ndim, str(a.dtype)) for a in arrays)

    def call(self, name, eager_fn, args, kwargs, eager_args, eager_kwargs):
        compiled = self.model.compiled if name == "model" else self.compiled[name]
        signature = self.signature(name, args, kwargs)
        first = self.signatures.setdefault(name, signature)
        eager = outcome(lambda: eager_fn(*[tensor_of(v) for v in eager_args],
                                         **{k: tensor_of(v) for k, v in eager_kwargs.items()}))
        got = outcome(lambda: compiled(*args, **kwargs))
        event(f"{name}: eager {eager[0]}, compiled {got[0]}")
        if got[0] == "error":
            e = got[1]
            assert isinstance(e, NAMED), f"{name}{args, kwargs}: {type(e).__name__}: {e}"
            if eager[0] == "values":  # only a refused signature may fail where eager runs
                assert isinstance(e, ndl.ShapeError) and "compiled for" in str(e) and signature != first, \
                    f"{name}{args, kwargs} raised {type(e).__name__}: {e}, eager gave values"
            return
        assert eager[0] == "values", f"{name}{args, kwargs}: compiled ran where eager raised {eager[1]!r}"
        agree(eager[1], got[1], f"{name}{args, kwargs}")

    def arrays(self, count, batch):
        return [self.rng.standard_normal((batch, 3)).astype(np.float32) for _ in range(count)]

    @rule(batch=st.sampled_from((1, 2, 4)), forms=st.lists(st.sampled_from(FORMS), min_size=2, max_size=2),
          scale=st.sampled_from((None, 2.0, 3, "keyword")), by_name=st.booleans())
    def call_affine(self, batch, forms, scale, by_name):
        a, b = self.arrays(2, batch)

        def arguments():
            given_a, given_b = given_as(a, forms[0]), given_as(b, forms[1])
            args, kwargs = ([], {"b": given_b, "a": given_a}) if by_name else ([given_a, given_b], {})
            if scale == "keyword" or (scale is not None and by_name):
                kwargs["scale"] = np.float32(0.5) if scale == "keyword" else scale
            elif scale is not None:
                args.append(scale)
            return args, kwargs
        (args, kwargs), (eager_args, eager_kwargs) = arguments(), arguments()
        self.call("affine", affine, args, kwargs, eager_args, eager_kwargs)

    @rule(batch=st.sampled_from((1, 3)), count=st.integers(0, 3), form=st.sampled_from(FORMS))
    def call_total(self, batch, count, form):
        arrays = self.arrays(1 + count, batch)
        self.call("total", total, [given_as(a, form) for a in arrays], {}, [given_as(a, form) for a in arrays], {})

    @rule(batch=st.sampled_from((2, 5)), forms=st.lists(st.sampled_from(FORMS[:7]), min_size=2, max_size=2),
          order=st.sampled_from(("positional", "names", "reversed names", "mixed")))
    def call_difference(self, batch, forms, order):
        x, y = self.arrays(2, batch)

        def arguments():
            gx, gy = given_as(x, forms[0]), given_as(y, forms[1])
            return {"positional": ([gx, gy], {}), "names": ([], {"x": gx, "y": gy}),
                    "reversed names": ([], {"y": gy, "x": gx}), "mixed": ([gx], {"y": gy})}[order]
        (args, kwargs), (eager_args, eager_kwargs) = arguments(), arguments()
        self.call("difference", difference, args, kwargs, eager_args, eager_kwargs)

    @rule(batch=st.sampled_from((1, 4)), form=st.sampled_from(FORMS[:5]), times=st.sampled_from((1, 3)),
          how=st.sampled_from(("scale", "shift", "append", "rebind", "offset data", "offset in place", "offset")),
          value=st.sampled_from((0.5, 2.0, -1.0, 3)))
    def call_configured(self, batch, form, times, how, value):
        """Calls, a change of the containers configured() reads (in place or rebound), calls."""
        global OFFSETS
        for round in range(2):
            for _ in range(times):  # three in a row: the third runs through the call entry
                (x,) = self.arrays(1, batch)
                self.call("configured", configured, [given_as(x, form)], {}, [given_as(x, form)], {})
            if round:
                return
            if how == "scale":
                SETTINGS["scale"] = value
            elif how == "shift":
                SETTINGS["shifts"][1] = value
            elif how == "append":
                SETTINGS["shifts"].append(value)
            elif how == "rebind":
                SETTINGS["shifts"] = [0.0, value]
            elif how == "offset data":
                OFFSETS[0].data = ndl.Tensor(np.full(3, value, np.float32))
            elif how == "offset in place":
                OFFSETS[0].numpy()[...] = value
            else:
                OFFSETS = [ndl.Tensor(np.full(3, value, np.float32), requires_grad=False)]

    @rule(batch=st.sampled_from((2, 3, 6)), form=st.sampled_from(FORMS[:5]), times=st.sampled_from((1, 3)))
    def call_model(self, batch, form, times):
        for _ in range(times):  # three in a row: the third runs through the call entry
            (x,) = self.arrays(1, batch)
            self.call("model", self.model.eager, [given_as(x, form)], {}, [given_as(x, form)], {})

    @rule(training=st.booleans())
    def mode(self, training):
        for m in (self.model.eager, self.model.module):
            m.train() if training else m.eval()

    @rule(index=st.integers(0, 5), how=st.sampled_from(("data", "in place", "parameter", "requires_grad")))
    def change_parameter(self, index, how):
        shape = self.model.eager.parameters()[index].shape
        new = self.rng.standard_normal(shape).astype(np.float32)
        for m in (self.model.eager, self.model.module):
            p = m.parameters()[index]
            if how == "data":
                p.data = ndl.Tensor(new.copy())
            elif how == "in place":
                p.numpy()[...] = new
            elif how == "requires_grad":
                p.requires_grad = not p.requires_grad
            else:
                owner = next(layer for layer in m.modules if any(q is p for q in vars(layer).values()))
                name = next(k for k, q in vars(owner).items() if q is p)
                setattr(owner, name, nn.Parameter(new.copy()))

    @rule(momentum=st.sampled_from((0.1, 0.5, 1e-3)), eps=st.sampled_from((1e-2, 0.1)))
    def batchnorm_settings(self, momentum, eps):
        for m in (self.model.eager, self.model.module):
            m.modules[1].momentum, m.modules[1].eps = momentum, eps

    @invariant()
    def modules_agree(self):
        if hasattr(self, "model"):
            for e, c in zip(self.model.eager.state_dict().values(), self.model.module.state_dict().values()):
                np.testing.assert_allclose(c.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)


EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
CallsUnderChange.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=12, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
test_compiled_calls_under_changing_arguments_agree_with_eager = CallsUnderChange.TestCase


class ManyCalls(CallsUnderChange):
    pass


ManyCalls.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                       suppress_health_check=list(HealthCheck))
test_many_compiled_calls_under_changing_arguments = pytest.mark.slow(ManyCalls.TestCase)
