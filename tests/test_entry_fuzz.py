"""The call entry under mutation: a hypothesis state machine holds two copies of one program (a
model, an optimizer, a training step and a forward function that read a closure cell, a global and
a plain object's attribute), runs one copy eagerly and the other compiled, and between calls
changes what a later call could see: batch sizes, dtypes, layouts and forms of the arguments, the
same array passed twice, a previous output passed back, parameters replaced or written in place,
`requires_grad`, optimizer hyperparameters, train/eval mode, module settings and the values the
step reads. After every call the results and every parameter, running statistic and optimizer slot
of the two copies must agree (jit/entry.py's fast path must be exactly as strict as the full path).
FUZZ_EXAMPLES sets how many programs are drawn (`-m slow` runs 60)."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import ndlc as ndl
from test_boundary_fuzz import LAYOUTS, _laid_out

nn = ndl.nn
FEATURES = 3  # the model maps 3 features to 3 classes, so an output can be passed back as an input
GAIN = 1.0  # a global float both copies' steps read: a runtime input of the compiled one
BATCHES = (1, 2, 5)
DTYPES = {"x": ("float32", "float64", "int64", "int32"), "y": ("int64", "int32", "uint8"),
          "b shape": ("0-d", "row", "full")}  # kinds of argument: their dtypes (and b's shapes)
DTYPES["a"] = DTYPES["b"] = DTYPES["x"]
FORMS = ("array", "tensor")
RTOL, ATOL = 1e-4, 1e-5  # float32 rounding in other orders, a few steps on


class Config:
    """A plain object whose attribute the steps read (a trainer's settings)."""

    def __init__(self):
        self.scale = 1.0


class Copy:
    """One copy of the program: everything built from the same seed, so two copies start equal."""

    def __init__(self, optimizer, seed):
        np.random.seed(seed)
        self.dropout = nn.Dropout(0.3)
        # BatchNorm's eps well above a feature's variance over a batch of two that happen to agree
        # (6.9e-7 in one drawn example): (x - mean) / sqrt(var + eps) then magnifies rounding 1000-fold
        self.model = nn.Sequential(nn.Linear(FEATURES, 4), nn.BatchNorm1d(4, eps=1e-2), nn.ReLU(), self.dropout,
                                   nn.Residual(nn.Sequential(nn.Linear(4, 4), nn.Tanh())), nn.Linear(4, FEATURES))
        self.dropout.eval()  # eager dropout draws from numpy, a compiled one from its own counter
        params = self.model.parameters()
        # Adam's eps well above the gradients' float32 noise: m/sqrt(v) of a gradient that is
        # rounding noise is +-1 in either copy, with signs that need not agree
        self.opt = (ndl.optim.SGD(params, lr=0.05, momentum=0.5, weight_decay=0.01) if optimizer == "SGD"
                    else ndl.optim.Adam(params, lr=0.01, eps=1e-3))
        self.config = Config()
        self.loss_fn = nn.SoftmaxLoss()
        shift = 0.0
        model, opt, config, loss_fn = self.model, self.opt, self.config, self.loss_fn

        def step(x, y):
            opt.reset_grad()
            out = model(x) * config.scale + shift * GAIN
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            return loss, out

        def infer(a, b):
            return model(a) * config.scale + b + shift

        def set_shift(value):
            nonlocal shift
            shift = value

        self.step, self.infer, self.set_shift = step, infer, set_shift

    def compiled(self):
        self.step, self.infer = ndl.compile(self.step), ndl.compile(self.infer)
        return self

    def state(self):
        """Every number the program keeps: parameters, running statistics, optimizer slots."""
        bn = self.model.modules[1]
        arrays = [p.numpy() for p in self.model.parameters()] + [bn.running_mean.numpy(), bn.running_var.numpy()]
        opt = self.opt.state_dict()
        arrays += [t.numpy() for slots in opt["state"].values() for t in slots.values()]
        arrays += [opt[name].numpy() for name in self.opt.counters]
        return arrays


def agree(eager, compiled, what):
    assert len(eager) == len(compiled), what
    for i, (want, got) in enumerate(zip(eager, compiled)):
        want, got = np.asarray(want), np.asarray(got)
        assert got.shape == want.shape and got.dtype == want.dtype, (what, i, got, want)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=f"{what}, item {i}")


def values(result):
    results = result if isinstance(result, tuple) else (result,)
    return [r.numpy().copy() for r in results]


def argument(array, form, layout):
    """`array` laid out and passed as `form` (each copy gets its own)."""
    value = _laid_out(array.copy(), layout)
    return ndl.Tensor(value, requires_grad=False) if form == "tensor" else value


def features(batch, dtype, rng):
    x = rng.standard_normal((batch, FEATURES)) * 2
    return x.round() if np.dtype(dtype).kind == "i" else x


rarely = st.integers(0, 4).map(lambda k: k == 0)  # one call in five
TIMES = st.sampled_from((1, 3))  # a call, or three in a row: the second builds the entry, the third runs it
arrangement = st.tuples(rarely, st.sampled_from(FORMS), st.sampled_from(LAYOUTS))  # (another dtype?, form, layout)


class EntryUnderMutation(RuleBasedStateMachine):
    """Eager and compiled copies, called and changed alike."""

    @initialize(optimizer=st.sampled_from(("SGD", "Adam")), seed=st.integers(0, 2**16))
    def build(self, optimizer, seed):
        self.eager, self.compiled = Copy(optimizer, seed), Copy(optimizer, seed).compiled()
        self.rng = np.random.default_rng(seed)
        self.dtypes = {kind: str(self.rng.choice(choices)) for kind, choices in DTYPES.items()}
        self.signatures = {}  # function -> (rank, dtype) of each argument at its first call
        self.outputs = None  # the last call's output of (batch, 3) in each copy
        self.kept = []  # the last calls' results, as returned: later calls must not change them
        self.views = []  # (view of a dropped result's array, its values then)
        global GAIN
        GAIN = 1.0

    def both(self, change):
        change(self.eager)
        change(self.compiled)

    def dtype(self, kind, other):
        """The example's dtype for `kind` of argument, or (`other`) another one."""
        return str(self.rng.choice([d for d in DTYPES[kind] if d != self.dtypes[kind]])) if other else self.dtypes[kind]

    def call(self, name, eager_args, compiled_args):
        """Both copies called, their results compared; a call with another rank or dtype (as
        `ndl.Tensor` converts it) than the first is refused by the compiled copy, changing nothing."""
        signature = tuple((np.ndim(a), a.dtype if isinstance(a, ndl.Tensor) else ndl.Tensor(a).dtype)
                          for a in compiled_args)
        if self.signatures.setdefault(name, signature) != signature:
            with pytest.raises(ndl.ShapeError, match=f"{name}: input [01] has type .* but it was compiled for"):
                getattr(self.compiled, name)(*compiled_args)
            return
        event("through the entry" if getattr(self.compiled, name).entry else "the full path")
        eager = getattr(self.eager, name)(*eager_args)
        compiled = getattr(self.compiled, name)(*compiled_args)
        out_e, out_c = (eager[1], compiled[1]) if name == "step" else (eager, compiled)
        agree(values(eager), values(compiled), f"{name}'s results")
        self.outputs = (out_e, out_c)
        self.kept = self.kept[-3:] + [(eager, compiled)]

    @rule(batch=st.sampled_from(BATCHES), x=arrangement, other_labels=rarely, times=TIMES)
    def train(self, batch, x, other_labels, times):
        other, form, layout = x
        dtype, labels = self.dtype("x", other), self.dtype("y", other_labels)
        for _ in range(times):
            array = features(batch, dtype, self.rng).astype(dtype)
            y = self.rng.integers(0, FEATURES, batch).astype(labels)
            self.call("step", [argument(array, form, layout), y.copy()], [argument(array, form, layout), y.copy()])

    @precondition(lambda self: self.outputs is not None and self.outputs[0].shape[0] > 0)
    @rule()
    def train_on_the_last_output(self):
        """The last output (the compiled copy's own Tensor, whose array its program may reuse) as x."""
        y = self.rng.integers(0, FEATURES, self.outputs[0].shape[0]).astype(self.dtypes["y"])
        self.call("step", [self.outputs[0].detach(), y], [self.outputs[1], y.copy()])

    @rule(batch=st.sampled_from((0,) + BATCHES), a=arrangement, b=arrangement, other_shape=rarely, times=TIMES)
    def forward(self, batch, a, b, other_shape, times):
        b_shape = self.dtype("b shape", other_shape)
        shape = {"0-d": (), "row": (FEATURES,), "full": (batch, FEATURES)}[b_shape]
        a_type, b_type = self.dtype("a", a[0]), self.dtype("b", b[0])
        for _ in range(times):
            a_array = features(batch, a_type, self.rng).astype(a_type)
            b_array = np.asarray(self.rng.standard_normal(shape).round(1)).astype(b_type)
            self.call("infer", [argument(a_array, *a[1:]), argument(b_array, *b[1:])],
                      [argument(a_array, *a[1:]), argument(b_array, *b[1:])])

    @rule(batch=st.sampled_from(BATCHES), a=arrangement, times=TIMES)
    def forward_the_same_array_twice(self, batch, a, times):
        dtype = self.dtype("a", a[0])
        for _ in range(times):
            array = features(batch, dtype, self.rng).astype(dtype)
            e, c = argument(array, *a[1:]), argument(array, *a[1:])
            self.call("infer", [e, e], [c, c])

    @precondition(lambda self: self.outputs is not None)
    @rule(both=st.booleans())
    def forward_the_last_output(self, both):
        e, c = self.outputs
        self.call("infer", [e.detach(), e.detach() if both else np.float32(0.5)],
                  [c, c if both else np.float32(0.5)])

    @rule(training=st.booleans())
    def mode(self, training):
        def change(copy):
            copy.model.train() if training else copy.model.eval()
            copy.dropout.eval()
        self.both(change)

    @rule(name=st.sampled_from(("lr", "momentum", "weight_decay", "beta1", "eps")),
          value=st.sampled_from((0, 0.0, 0.001, 0.02, 0.5)))
    def hyperparameter(self, name, value):
        if name in ("momentum", "beta1") and value == 0.5 or name == "eps" and not value:
            value = 0.1  # a positive eps; a momentum of 0.5 is the SGD default here
        if name == "lr" and value == 0.5:  # Adam moves a parameter by about lr a step whatever its gradient's
            value = 0.05  # size: at 0.5, float32 rounding of the gradients (where BatchNorm's statistics over
            # 1 or 2 rows cancel) moved weights 2e-4 and outputs 2e-5 apart in 3 steps, eagerly and compiled
        self.both(lambda copy: hasattr(copy.opt, name) and setattr(copy.opt, name, value))

    @rule(value=st.sampled_from((0.5, 1.0, 2.0, 3)))
    def config_scale(self, value):
        self.both(lambda copy: setattr(copy.config, "scale", value))

    @rule(value=st.sampled_from((0.0, 0.25, -1.0)))
    def closure_cell(self, value):
        self.both(lambda copy: copy.set_shift(value))

    @rule(value=st.sampled_from((1.0, 0.5, 2)))
    def global_gain(self, value):
        global GAIN
        GAIN = value

    @rule(value=st.sampled_from((0.1, 0.5, 1e-3)))
    def batchnorm_setting(self, value):
        self.both(lambda copy: setattr(copy.model.modules[1], "momentum", value))

    @rule(index=st.integers(0, 7), how=st.sampled_from(("data", "in place", "parameter", "requires_grad")))
    def parameter(self, index, how):
        shape = self.eager.model.parameters()[index].shape
        new = self.rng.standard_normal(shape).astype(np.float32)

        def change(copy):
            layers = [m for m in copy.model.parameters()]
            p = layers[index]
            if how == "data":
                p.data = ndl.Tensor(new.copy())
            elif how == "in place":
                p.numpy()[...] = new
            elif how == "requires_grad":
                p.requires_grad = not p.requires_grad
            else:
                owner, attribute = owner_of(copy.model, p)
                setattr(owner, attribute, nn.Parameter(new.copy()))
                copy.opt.params[index] = getattr(owner, attribute)
        self.both(change)

    @invariant()
    def state_agrees(self):
        if hasattr(self, "eager"):
            agree(self.eager.state(), self.compiled.state(), "the programs' state")

    @invariant()
    def no_stale_gradient(self):
        """A compiled step keeps no gradients: a parameter's .grad is None or the eager one."""
        for e, c in zip(self.eager.model.parameters() if hasattr(self, "eager") else (),
                        self.compiled.model.parameters() if hasattr(self, "compiled") else ()):
            if c.grad is not None:
                agree([e.grad.numpy()], [c.grad.numpy()], "a parameter's gradient")

    @precondition(lambda self: self.kept)
    @rule()
    def keep_only_views_of_the_last_results(self):
        """The last call's results dropped but for views of their arrays (the program reuses an
        output array that nothing references any more: these views must keep theirs)."""
        _, compiled = self.kept.pop()
        results = compiled if isinstance(compiled, tuple) else (compiled,)
        self.views += [(view, view.copy()) for view in (r.numpy().T for r in results)]
        self.outputs = None

    @invariant()
    def views_stay(self):
        for view, copy in getattr(self, "views", ()):
            np.testing.assert_array_equal(view, copy, err_msg="a view of an earlier result changed")

    @invariant()
    def earlier_results_stay(self):
        for i, (eager, compiled) in enumerate(getattr(self, "kept", ())):
            agree(values(eager), values(compiled), f"the results of the call {len(self.kept) - i} calls ago")


def owner_of(module, parameter):
    """(module, attribute) holding `parameter` directly."""
    for m in [module] + list(submodules(module)):
        for key, value in vars(m).items():
            if value is parameter:
                return m, key
    raise LookupError(parameter)


def submodules(module):
    for value in vars(module).values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, nn.Module):
                yield item
                yield from submodules(item)


EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
EntryUnderMutation.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=12, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])  # no slow shrinking
test_the_entry_under_mutation_agrees_with_eager = EntryUnderMutation.TestCase


class ManyExamples(EntryUnderMutation):
    pass


ManyExamples.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                          suppress_health_check=list(HealthCheck))
test_the_entry_under_many_mutations = pytest.mark.slow(ManyExamples.TestCase)
