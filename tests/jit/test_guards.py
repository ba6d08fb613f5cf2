"""Guards of compiled steps: replacing what a trace read (the model, the optimizer, a parameter,
a submodule, a captured numpy array) recompiles, logged with the reason, and never runs a stale
program; optimizer numbers are runtime arguments, so a learning-rate schedule compiles once;
specialisations are bounded and evicted ones are freed."""
import gc
import logging
import re
import types
import weakref

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ndlc as ndl
from ndlc.examples.train_mlp import training_step
from ndlc.jit import guards

nn = ndl.nn
RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 16)


def mlp(seed=0):
    np.random.seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def eager_loss(step):
    return float(step(ndl.Tensor(X, requires_grad=False), ndl.Tensor(Y, requires_grad=False)).numpy())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_learning_rate_schedule_compiles_once_and_equals_eager(optimizer):
    """100 steps, each with its own learning rate (and, for SGD, momentum): one compilation."""
    runs = []
    for compiled in (False, True):
        model = mlp()
        opt = (ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3) if optimizer == "sgd"
               else ndl.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3))
        step = training_step(model, opt)
        run = ndl.compile(step) if compiled else None
        losses = []
        for i in range(100):
            opt.lr = 0.1 * (1 - i / 100) if optimizer == "sgd" else 0.01 / (1 + i)
            if optimizer == "sgd":
                opt.momentum = 0.5 + i / 400
            losses.append(float(run(X, Y).numpy()) if compiled else eager_loss(step))
        runs.append((losses, [p.numpy().copy() for p in model.parameters()]))
    assert run.compilations == 1
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-4, atol=1e-6)
    for got, want in zip(runs[1][1], runs[0][1]):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_hyperparameters_are_inputs_of_the_program():
    model = mlp()
    step = ndl.compile(training_step(model, ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)))
    step(X, Y)
    header = step.ir("planned").split("\n")[0]
    assert "%optimizer.lr" in header and "%optimizer.momentum" in header


def test_a_hyperparameter_that_is_no_longer_a_number_is_a_clear_error():
    model = mlp()
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)
    step = ndl.compile(training_step(model, opt))
    step(X, Y)
    with pytest.raises(ValueError, match="SGD: lr must be a number in"):
        opt.lr = "fast"  # refused where it is set, the optimizer unchanged
    step(X, Y)
    object.__setattr__(opt, "lr", "fast")  # around that check, the guard still names it
    with pytest.raises(ndl.TraceError, match="optimizer.lr is now 'fast': the compiled step reads it as a number"):
        step(X, Y)


GLOBAL_MODEL = None
GLOBAL_OPT = None


def global_step(x, y):
    GLOBAL_OPT.reset_grad()
    loss = nn.SoftmaxLoss()(GLOBAL_MODEL(x), y)
    loss.backward()
    GLOBAL_OPT.step()
    return loss


def test_replacing_the_global_model_and_optimizer_recompiles(caplog):
    global GLOBAL_MODEL, GLOBAL_OPT
    GLOBAL_MODEL = mlp(0)
    GLOBAL_OPT = ndl.optim.SGD(GLOBAL_MODEL.parameters(), lr=0.1)
    step = ndl.compile(global_step)
    step(X, Y)
    GLOBAL_MODEL = mlp(1)
    GLOBAL_OPT = ndl.optim.SGD(GLOBAL_MODEL.parameters(), lr=0.1)
    eager = mlp(1)
    want = eager_loss(training_step(eager, ndl.optim.SGD(eager.parameters(), lr=0.1)))
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        got = float(step(X, Y).numpy())
    assert got == pytest.approx(want, rel=1e-5)
    assert re.search(r"after GLOBAL_(MODEL|OPT) was replaced by another (Sequential|SGD) object", caplog.text)
    for p, q in zip(GLOBAL_MODEL.parameters(), eager.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-5, atol=1e-6)
    before = [p.numpy().copy() for p in GLOBAL_MODEL.parameters()]
    GLOBAL_OPT = ndl.optim.SGD(GLOBAL_MODEL.parameters(), lr=0.0)  # a new optimizer that moves nothing
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        step(X, Y)
    assert "GLOBAL_OPT was replaced by another SGD object" in caplog.text
    for p, q in zip(GLOBAL_MODEL.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), q)
    GLOBAL_MODEL = GLOBAL_OPT = None


def test_replacing_a_parameter_object_recompiles(caplog):
    model = mlp()
    forward = ndl.compile(lambda x: model(x))
    forward(X)
    weight = np.ones((6, 8), np.float32)
    model.modules[0].weight = nn.Parameter(weight)
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        out = forward(X).numpy()
    np.testing.assert_allclose(out, model(ndl.Tensor(X)).numpy(), rtol=1e-5, atol=1e-6)
    assert "model.modules.0.weight was replaced by another Parameter object" in caplog.text


def test_replacing_a_submodule_recompiles(caplog):
    model = mlp()
    forward = ndl.compile(model)
    forward(X)
    model.modules = model.modules[:1] + (nn.Tanh(),) + model.modules[2:]
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        out = forward(X).numpy()
    np.testing.assert_allclose(out, model(ndl.Tensor(X)).numpy(), rtol=1e-5, atol=1e-6)
    assert "model.modules was replaced by another tuple object" in caplog.text


def test_an_eager_optimizer_step_between_compiled_ones_is_seen():
    """Eager SGD replaces its momentum tensors: the compiled step must use the new ones."""
    runs = []
    for mixed in (False, True):
        model = mlp()
        opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        step = training_step(model, opt)
        compiled = ndl.compile(step)
        for i in range(4):
            (eager_loss(step) if mixed and i == 1 else compiled(X, Y))
        runs.append([p.numpy().copy() for p in model.parameters()])
    for got, want in zip(*runs):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


SCALE = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


def test_mutating_a_captured_global_array_recompiles(caplog):
    step = ndl.compile(lambda x: (x * SCALE).sum())
    ones = np.ones(4, np.float32)
    assert float(step(ones).numpy()) == 10.0
    SCALE[:] = 5.0
    try:
        with caplog.at_level(logging.INFO, logger="ndlc.compile"):
            assert float(step(ones).numpy()) == 20.0
        assert "the array SCALE was modified" in caplog.text
    finally:
        SCALE[:] = [1.0, 2.0, 3.0, 4.0]


def test_rebinding_a_captured_closure_array_recompiles():
    offset = np.zeros(3, np.float32)
    step = ndl.compile(lambda x: x + offset)
    assert step(np.ones(3, np.float32)).numpy().tolist() == [1, 1, 1]
    offset = np.full(3, 2.0, np.float32)  # noqa: F841 (the closure reads the new binding)
    assert step(np.ones(3, np.float32)).numpy().tolist() == [3, 3, 3]


def test_an_array_rebound_to_equal_values_is_still_watched():
    """A new array with the old values keeps the program; changing that new array recompiles."""
    global SCALE
    step = ndl.compile(lambda x: (x * SCALE).sum())
    ones = np.ones(4, np.float32)
    old = SCALE
    try:
        assert float(step(ones).numpy()) == 10.0
        SCALE = old.copy()
        assert float(step(ones).numpy()) == 10.0 and step.compilations == 1
        SCALE[0] = 11.0
        assert float(step(ones).numpy()) == 20.0 and step.compilations == 2
    finally:
        SCALE = old


def test_a_huge_captured_array_is_refused_with_advice(monkeypatch):
    from ndlc.jit import guards
    monkeypatch.setattr(guards, "ARRAY_LIMIT", 1000)
    table = np.zeros(1000, np.float32)
    step = ndl.compile(lambda x: x + table[:3])
    with pytest.raises(ndl.TraceError, match=r"reads the numpy array table .* pass it as an input"):
        step(np.ones(3, np.float32))


def test_specialisations_are_bounded_and_evicted_ones_freed(caplog):
    model = nn.Linear(3, 2)
    forward = ndl.compile(model, max_specialisations=2)
    forward(np.ones((1, 3), np.float32))
    first = weakref.ref(forward.last.program)
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        for n in (2, 3):
            forward(np.ones((n, 3), np.float32))
    assert len(forward.specialisations) == 2 and forward.compilations == 3
    assert "dropped the least recently used specialisation, for (f32[1,3])" in caplog.text
    gc.collect()
    assert first() is None
    forward(np.ones((3, 3), np.float32))  # kept: no compilation
    assert forward.compilations == 3
    with pytest.raises(ndl.NdlcError, match="max_specialisations must be a positive integer"):
        ndl.compile(model, max_specialisations=0)


def test_a_call_like_the_last_reuses_its_specialisation_and_the_order_of_use_holds():
    """A call with the last call's key takes the last specialisation without looking it up; the
    least recently used one is still the one dropped, and a stale last one still recompiles."""
    model = nn.Linear(3, 2)
    forward = ndl.compile(model, max_specialisations=2)
    for n in (1, 2, 2, 1, 1):
        forward(np.ones((n, 3), np.float32))
    assert forward.compilations == 2 and [k[0][0].shape for k in forward.specialisations] == [(2, 3), (1, 3)]
    forward(np.ones((3, 3), np.float32))  # drops (2, 3), used before (1, 3)
    assert [k[0][0].shape for k in forward.specialisations] == [(1, 3), (3, 3)]
    model.weight = ndl.nn.Parameter(np.zeros((3, 2), np.float32))
    np.testing.assert_array_equal(forward(np.ones((3, 3), np.float32)).numpy(),
                                  np.broadcast_to(model.bias.numpy(), (3, 2)))
    assert forward.compilations == 4


STEP_SIZE = 0.5
COUNT = 2.0


def test_the_steps_own_floats_are_runtime_inputs():
    """A float global (a hand-written SGD's step size) and a float in the closure: new values each
    call, one compilation."""
    global STEP_SIZE
    w = ndl.Tensor(np.ones(3, np.float32))
    offset = 1.0

    def sgd_step(x):
        loss = ((w * x).sum() + offset) ** 2
        loss.backward()
        w.data = w.data - STEP_SIZE * w.grad.data
        return loss
    step = ndl.compile(sgd_step)
    x = np.full(3, 0.1, np.float32)
    try:
        for i in range(5):
            STEP_SIZE, offset = 0.5 / (i + 1), float(i)
            want = (w.numpy() * x).sum() + offset
            assert float(step(x).numpy()) == pytest.approx(want ** 2, rel=1e-5)
    finally:
        STEP_SIZE = 0.5
    assert step.compilations == 1
    assert "%STEP_SIZE: f32[]" in step.ir("traced") and "%offset: f32[]" in step.ir("traced")


def test_a_float_used_as_a_python_number_is_compiled_in_and_guarded(caplog):
    """A float the step turns into a loop count cannot be a tensor: it is compiled in, and a new
    value recompiles (logged) rather than running the old loop count."""
    global COUNT

    def repeat(x):
        for _ in range(int(COUNT)):
            x = x * 2
        return x
    step = ndl.compile(repeat)
    try:
        with caplog.at_level(logging.INFO, logger="ndlc.compile"):
            assert step(np.ones(2, np.float32)).numpy().tolist() == [4, 4]
            COUNT = 3.0
            assert step(np.ones(2, np.float32)).numpy().tolist() == [8, 8]
    finally:
        COUNT = 2.0
    assert "its floats COUNT cannot be runtime inputs (TraceError" in caplog.text
    assert "after COUNT changed from 2.0 to 3.0 (compiled in)" in caplog.text


def test_static_hyperparameters_compile_the_steps_floats_in_too():
    global STEP_SIZE
    step = ndl.compile(lambda x: x * STEP_SIZE, static_hyperparameters=True)
    try:
        assert step(np.ones(1, np.float32)).numpy()[0] == 0.5
        STEP_SIZE = 0.25
        assert step(np.ones(1, np.float32)).numpy()[0] == 0.25
    finally:
        STEP_SIZE = 0.5
    assert step.compilations == 2 and "%STEP_SIZE" not in step.ir("traced")


class Trainer:
    """A plain object holding the model and the numbers its step reads (and one it does not)."""

    def __init__(self):
        np.random.seed(0)
        self.model, self.scale, self.mask, self.steps_taken = nn.Linear(2, 2), 2.0, np.ones(2, np.float32), 0

    def step(self, x):
        return self.model(x) * self.scale * self.mask


def test_what_a_bound_method_reads_of_its_object_is_watched():
    """self.scale is a runtime input, self.mask is guarded, self.steps_taken (which the step
    never reads) changes nothing."""
    trainer = Trainer()
    step = ndl.compile(trainer.step)
    x = np.ones((1, 2), np.float32)
    for change in (lambda: setattr(trainer, "scale", 3.0), lambda: trainer.mask.__setitem__(0, 0.0),
                   lambda: setattr(trainer, "steps_taken", 7)):
        change()
        want = trainer.model(ndl.Tensor(x)).numpy() * trainer.scale * trainer.mask
        np.testing.assert_allclose(step(x).numpy(), want, rtol=1e-6)
    assert step.compilations == 2  # the mask's change only
    assert "%self.scale: f32[]" in step.ir("traced")


class Activated(nn.Module):
    """A Linear layer followed by whatever function `act` holds."""

    def __init__(self):
        super().__init__()
        self.linear, self.act = nn.Linear(2, 2), ndl.relu

    def forward(self, x):
        return self.act(self.linear(x))


def test_replacing_a_modules_function_attribute_recompiles(caplog):
    model = Activated()
    forward = ndl.compile(model)
    x = np.full((1, 2), -1.0, np.float32)
    forward(x)
    model.act = ndl.tanh
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        np.testing.assert_allclose(forward(x).numpy(), model(ndl.Tensor(x)).numpy(), rtol=1e-6)
    assert "model.act was replaced by another function object" in caplog.text


GAIN = 2.0
OFFSETS = np.zeros(2, np.float32)


def scaled(x):
    """A helper the step calls: the globals it reads are compiled into the step."""
    return x * GAIN + OFFSETS


def test_globals_read_by_a_helper_function_are_guarded(caplog):
    global GAIN
    step = ndl.compile(lambda x: scaled(x).sum())
    x = np.ones(2, np.float32)
    try:
        assert float(step(x).numpy()) == 4.0
        GAIN = 3.0
        with caplog.at_level(logging.INFO, logger="ndlc.compile"):
            assert float(step(x).numpy()) == 6.0
        OFFSETS[:] = 1.0
        assert float(step(x).numpy()) == 8.0
    finally:
        GAIN, OFFSETS[:] = 2.0, 0.0
    assert re.search(r"GAIN, a global of \S*test_guards read by code the step runs, changed \(compiled in\)",
                     caplog.text)


SHIFT = 1.0


class Shifted(nn.Module):
    """A module whose forward reads a global of its own module."""

    def forward(self, x):
        return x + SHIFT


def test_a_global_a_modules_forward_reads_is_guarded():
    global SHIFT
    forward = ndl.compile(Shifted())
    x = np.zeros(2, np.float32)
    try:
        assert forward(x).numpy().tolist() == [1.0, 1.0]
        SHIFT = 2.5
        assert forward(x).numpy().tolist() == [2.5, 2.5]
    finally:
        SHIFT = 1.0
    assert forward.compilations == 2


def double(x):
    return x * 2.0


def tripled(x):
    return x * 3.0


def rank_scaled(x):
    return x * float(len(x.shape))


def test_rebinding_a_helper_function_the_step_calls_recompiles(caplog):
    global double
    step = ndl.compile(lambda x: double(x).sum())
    x = np.ones(2, np.float32)
    kept = double
    try:
        for _ in range(3):  # the call entry is in place
            assert float(step(x).numpy()) == 4.0
        double = tripled
        with caplog.at_level(logging.INFO, logger="ndlc.compile"):
            assert float(step(x).numpy()) == 6.0
    finally:
        double = kept
    assert float(step(x).numpy()) == 4.0
    assert "double, a global of" in caplog.text


def test_a_global_shadowing_a_builtin_a_helper_calls_recompiles():
    step = ndl.compile(lambda x: rank_scaled(x).sum())
    x = np.ones(2, np.float32)
    for _ in range(3):
        assert float(step(x).numpy()) == 2.0
    globals()["len"] = lambda shape: 5
    try:
        assert float(step(x).numpy()) == 10.0
    finally:
        del globals()["len"]
    assert float(step(x).numpy()) == 2.0


CONFIG = types.ModuleType("config")  # a user's settings module: the step reads CONFIG.scale


def test_numbers_and_arrays_the_step_reads_of_a_module_are_guarded(caplog):
    CONFIG.scale, CONFIG.table = 2.0, np.zeros(2, np.float32)
    step = ndl.compile(lambda x: (x * CONFIG.scale + ndl.Tensor(CONFIG.table)).sum())
    x = np.ones(2, np.float32)
    for _ in range(3):
        assert float(step(x).numpy()) == 4.0
    CONFIG.scale = 3.0
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        assert float(step(x).numpy()) == 6.0
    CONFIG.table[1] = 1.0
    assert float(step(x).numpy()) == 7.0
    CONFIG.scale = float("3")  # an equal number: the trace still holds
    assert float(step(x).numpy()) == 7.0
    assert step.compilations == 3
    assert "scale, a global of config read by code the step runs, changed" in caplog.text


def test_a_nan_the_step_reads_of_a_module_does_not_recompile_every_call():
    step = ndl.compile(lambda x: (x * (2.0 if np.isnan(np.nan) else 1.0)).sum())
    x = np.ones(2, np.float32)
    for _ in range(4):
        assert float(step(x).numpy()) == 4.0
    assert step.compilations == 1


_leaf = st.one_of(st.none(), st.integers(-3, 3), st.floats(allow_nan=True, width=32), st.booleans(),
                  st.sampled_from(["a", "b"]), st.sampled_from([object(), object()]))
_values = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(st.sampled_from(["x", "y", 1]), inner, max_size=3)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_values, _values, st.booleans())
def test_a_containers_check_answers_as_comparing_snapshots(before, after, same):
    """guards.still, run on every call of a step that reads containers, says what comparing a new
    snapshot with the old would (NaN included: equal only as the same object)."""
    value = before if same else after
    assert guards.still(value, guards.snapshot(before)) == (guards.snapshot(value) == guards.snapshot(before))


@settings(max_examples=300, deadline=None)
@given(_values, st.integers(0, 3), st.sampled_from(["append", "replace", "same number", "key"]))
def test_a_watched_container_edited_in_place_is_judged_as_its_snapshot_would_be(before, which, edit):
    """A step's container (`_Watched`) changed in place, at any depth, or rebound to equal items:
    its quick check by identity never answers differently from comparing snapshots."""
    then = guards.snapshot(before)
    watched = guards._Watched(before)
    mutable = [c for c, _, items in guards._parts(before) if items is not None]
    if mutable:
        target = mutable[which % len(mutable)]
        if isinstance(target, dict):
            target["z" if edit == "key" else next(iter(target), "z")] = 1.5 if edit != "same number" else 2
        elif edit == "append" or not target:
            target.append(0.5)
        else:
            target[0] = float("nan") if edit == "replace" else (target[0] + 0 if type(target[0]) in (int, float) else 2)
    expected = guards.snapshot(before) == then
    assert watched.unchanged(before) == expected
    assert watched.unchanged(before) == expected, "the second call (the quick check refreshed) agrees too"
