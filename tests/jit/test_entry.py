"""The call entry (jit/entry.py): a call like the last one runs through it without the full path,
and every change the full path would see, made on purpose between calls, still takes the full path:
each scenario gives, bit for bit, the results and compilations of the same calls with no entry."""
import importlib

import numpy as np
import pytest

import ndlc as ndl
from ndlc.examples.train_mlp import training_step
from ndlc.ir.types import TensorType

nn = ndl.nn
compile_module = importlib.import_module("ndlc.jit.compile")  # the module, not ndlc.jit.compile the function
RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 16)
SCALE = 2.0  # a global float: a runtime input
POWER = 2  # a global int: compiled in
OFFSET = np.zeros(3, np.float32)  # a global array: a constant, guarded by its bytes


def mlp():
    np.random.seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def sgd_step(static=False):
    """A compiled SGD training step and what a call of it returns (its loss, every parameter)."""
    model = mlp()
    opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = ndl.compile(training_step(model, opt), static_hyperparameters=static)
    return step, model, opt, lambda: [step(X, Y).numpy().copy()] + [p.numpy().copy() for p in model.parameters()]


def scenario_learning_rate():
    step, model, opt, call = sgd_step()
    return step, [call, call, call, lambda: setattr(opt, "lr", 0.05), call, call]


def scenario_static_learning_rate():
    step, model, opt, call = sgd_step(static=True)
    return step, [call, call, call, lambda: setattr(opt, "lr", 0.05), call, call]


def scenario_parameter_replaced():
    step, model, opt, call = sgd_step()
    replace = lambda: setattr(model.modules[0], "weight", nn.Parameter(np.ones((6, 8), np.float32)))  # noqa: E731
    return step, [call, call, call, replace, call, call]


def scenario_parameter_written_in_place():
    step, model, opt, call = sgd_step()
    write = lambda: model.modules[2].weight.numpy().__setitem__(0, 1.5)  # noqa: E731
    return step, [call, call, call, write, call, call]


def scenario_data_assigned():
    step, model, opt, call = sgd_step()
    assign = lambda: setattr(model.modules[0].bias, "data", ndl.Tensor(np.full((1, 8), 0.5, np.float32)))  # noqa: E731
    return step, [call, call, call, assign, call, call]


def scenario_requires_grad_flipped():
    step, model, opt, call = sgd_step()
    return step, [call, call, call, lambda: setattr(model.modules[0].weight, "requires_grad", False), call, call]


def scenario_submodule_appended():
    step, model, opt, call = sgd_step()
    return step, [call, call, call, lambda: setattr(model, "modules", model.modules + (nn.ReLU(),)), call, call]


def scenario_optimizer_state_replaced():
    step, model, opt, call = sgd_step()
    replace = lambda: opt.u.__setitem__(0, ndl.Tensor(np.ones((6, 8), np.float32)))  # noqa: E731
    add = lambda: opt.u.__setitem__("unused", ndl.Tensor(np.ones(2, np.float32)))  # noqa: E731
    return step, [call, call, call, replace, call, call, add, call, call]


def scenario_eval_mode():
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8))
    step = ndl.compile(model)
    call = lambda: [step(X).numpy().copy(), model.modules[1].running_mean.numpy().copy()]  # noqa: E731
    return step, [call, call, call, model.eval, call, call, model.train, call]


def scenario_global_numbers():
    global SCALE, POWER
    step = ndl.compile(lambda x: (x ** POWER) * SCALE + OFFSET)
    x = np.arange(3, dtype=np.float32)
    call = lambda: step(x).numpy().copy()  # noqa: E731

    def change(scale=None, power=None):
        global SCALE, POWER
        SCALE, POWER = scale or SCALE, power or POWER
    return step, [call, call, call, lambda: change(scale=3.0), call, call, lambda: change(power=3), call, call,
                  lambda: OFFSET.__setitem__(1, 4.0), call, call, lambda: change(scale=2.0, power=2),
                  lambda: OFFSET.__setitem__(1, 0.0), call]


def scenario_closure_and_inputs():
    shift = 1.0
    step = ndl.compile(lambda x, y: x * shift - y)
    a, b = np.ones((2, 3), np.float32), np.full((4, 3), 2.0, np.float32)

    def rebind():
        nonlocal shift
        shift = 5.0
    calls = [lambda: step(a, a), lambda: step(ndl.Tensor(a), a), lambda: step(a, a), lambda: step(b, b),
             lambda: step(b, b), rebind, lambda: step(b, b), lambda: step(a, y=a), lambda: step(a, y=a),
             lambda: step(a.astype(np.float64), a), lambda: step(a.astype(np.float64), a),
             lambda: step(ndl.Tensor(b), b), lambda: step(b[:, ::-1], b), lambda: step(b, b)]
    return step, [(lambda c: lambda: c().numpy().copy())(c) if c is not rebind else c for c in calls]


def scenario_containers_read():
    """A closure's list and dict whose numbers the trace compiled in: an item replaced, by an
    equal number or another, one appended, a key moved to the end, a list of more than INLINE."""
    scales, table, many = [2.0, 3.0], {"a": 1.0, "b": 0.5}, [float(i) for i in range(40)]
    step = ndl.compile(lambda x: x * scales[0] + x * table["b"] + many[-1])
    x = np.ones((2, 3), np.float32)
    call = lambda: step(x).numpy().copy()  # noqa: E731
    moved = lambda: table.__setitem__("a", table.pop("a"))  # noqa: E731
    return step, [call, call, call, lambda: scales.__setitem__(0, float("2.0")), call, call,
                  lambda: scales.__setitem__(0, 4.0), call, call, lambda: scales.append(1.0), call, call,
                  lambda: table.__setitem__("b", 0.25), call, call, moved, call, call,
                  lambda: many.__setitem__(39, 7.0), call, call, lambda: many.__setitem__(39, 7.0), call, call]


class Scaler:
    """A plain object whose bound method is the step."""

    def __init__(self):
        self.linear, self.factor, self.calls = nn.Linear(3, 3), 2.0, 0

    def step(self, x):
        return self.linear(x) * self.factor


def scenario_bound_object():
    np.random.seed(1)
    scaler = Scaler()
    step = ndl.compile(scaler.step)
    x = np.ones((2, 3), np.float32)
    call = lambda: step(x).numpy().copy()  # noqa: E731
    replace = lambda: setattr(scaler, "linear", nn.Linear(3, 3))  # noqa: E731
    return step, [call, call, call, lambda: setattr(scaler, "factor", 3.0), call, call,
                  lambda: setattr(scaler, "calls", 1), call, call, replace, call, call,
                  lambda: setattr(scaler, "extra", nn.Linear(3, 3)), call, call]


def scenario_returned_running_statistics():
    """BatchNorm's new running mean returned as well as kept (the program copies it into the
    state's array), the returned tensors held and read again after later calls, then the running
    variance's array made read-only (its new value is stored into a new array instead)."""
    np.random.seed(0)
    norm = nn.BatchNorm1d(6)
    step = ndl.compile(lambda x: (norm(x), norm.running_mean, norm.running_var))
    held = []

    def call():
        held.append(step(X))
        return [o.numpy().copy() for o in held[-1]] + [norm.running_mean.numpy().copy()]

    def freeze():
        norm.running_var.numpy().flags.writeable = False
    read = lambda: [o.numpy().copy() for outputs in held for o in outputs]  # noqa: E731
    return step, [call, call, call, read, call, freeze, call, call, read]


def scenario_builtin_shadowed():
    """A new global named as a builtin (and a method) the step reads, a number the settings hold,
    then removed: compiled anew each time, as the full path decides."""
    step = ndl.compile(lambda x: x.max((0,)) * float(len(x.shape)))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    call = lambda: step(x).numpy().copy()  # noqa: E731
    return step, [call, call, call, lambda: globals().__setitem__("max", 3), call, call,
                  lambda: globals().pop("max"), call, call]


def scenario_new_arrays():
    """A new argument array on every call, one array passed twice, then one written in place, and a
    parameter's data replaced by a new array: the entry's steady run hands each to the full run."""
    step, model, opt, _ = sgd_step()
    x = X.copy()
    call = lambda a=x: [step(a, Y).numpy().copy()] + [p.numpy().copy() for p in model.parameters()]  # noqa: E731
    fresh = lambda: call(x.copy())  # noqa: E731
    rebind = lambda: setattr(model.modules[0].weight, "data", ndl.Tensor(model.modules[0].weight.numpy() * 0.5))  # noqa: E731
    return step, [call, call, fresh, fresh, fresh, lambda: x.__setitem__((0, 0), 3.0), call, call, rebind, call, call,
                  lambda: x.__setitem__((0, 0), 0.5), call]


SCENARIOS = [scenario_learning_rate, scenario_static_learning_rate, scenario_parameter_replaced,
             scenario_parameter_written_in_place, scenario_data_assigned, scenario_requires_grad_flipped,
             scenario_submodule_appended, scenario_optimizer_state_replaced, scenario_eval_mode,
             scenario_global_numbers, scenario_closure_and_inputs, scenario_containers_read, scenario_bound_object,
             scenario_returned_running_statistics, scenario_builtin_shadowed,
             scenario_new_arrays]


def run(scenario, misses, monkeypatch):
    """The scenario's results, the step's compilations, and how many calls took the full path."""
    monkeypatch.setattr(compile_module, "MISSES", misses)  # 0: no entry is ever built
    step, calls = scenario()
    full = []
    original = step._call
    step._call = lambda *a: full.append(1) or original(*a)
    results = [result for result in (call() for call in calls) if isinstance(result, (list, np.ndarray))]
    return results, step.compilations, len(full)


def same(a, b):
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__[9:])
def test_a_change_between_calls_takes_the_full_path(scenario, monkeypatch):
    """The same calls with and without entries: equal results and compilations, and the calls
    with an entry but after a change went the full path (fewer full-path calls than calls)."""
    results, compilations, full = run(scenario, compile_module.MISSES, monkeypatch)
    expected, expected_compilations, every = run(scenario, 0, monkeypatch)
    assert compilations == expected_compilations and len(results) == len(expected)
    assert all(same(a, b) for a, b in zip(results, expected))
    assert full < every


def test_a_repeated_call_runs_through_the_entry():
    """From the second call like the first on, the full path is not taken; the entry's source
    checks the argument's type and the module's settings."""
    norm = nn.LayerNorm1d(8)
    step = ndl.compile(lambda x: norm(x))
    x = ndl.Tensor(RNG.standard_normal((4, 8)).astype(np.float32))
    first = step(x).numpy().copy()
    step(x)
    full = []
    original = step._call
    step._call = lambda *a: full.append(1) or original(*a)
    for _ in range(5):
        assert step(x).numpy().tobytes() == first.tobytes()
    assert not full
    assert "a0.shape != (4, 8)" in step.entry.source and "['eps']" in step.entry.source
    # the program's steady run is written in, under the call's lock, which is the program's
    assert step.last.program.lock is step.lock and "with " not in step.entry.source
    assert "except Slow" in step.entry.source and ".steady(" not in step.entry.source


MODE = "double"


def test_an_object_replaced_on_every_call_builds_a_bounded_number_of_entries():
    """A global the step reads, replaced by an equal object each call, misses each entry (which
    holds what the step reaches by identity): the full path runs the call, and after MISSES such
    misses no entry is made again."""
    global MODE
    step = ndl.compile(lambda x: x * 2.0 if MODE == "double" else x)
    x = np.ones((2, 8), np.float32)
    for _ in range(3 * compile_module.MISSES):
        MODE = "".join(["dou", "ble"])  # equal, and a new str object
        assert step(x).numpy()[0, 0] == 2.0
    assert step.compilations == 1 and step.last.misses == compile_module.MISSES and step.entry is None


def test_a_setting_is_compared_as_the_same_object_first():
    """A module's NaN setting (unequal to itself) is the same object on every call: the entry
    runs the calls, where comparing values alone missed each and took the full path."""
    norm = nn.BatchNorm1d(8)
    norm.eval()
    norm.momentum = float("nan")  # not read in eval mode
    step = ndl.compile(lambda x: norm(x))
    x = RNG.standard_normal((4, 8)).astype(np.float32)
    first = step(x).numpy().copy()
    step(x)
    full = []
    original = step._call
    step._call = lambda *a: full.append(1) or original(*a)
    for _ in range(5):
        assert step(x).numpy().tobytes() == first.tobytes()
    assert not full and "momentum" in step.entry.source


def test_switching_between_specialisations_keeps_building_their_entries():
    """Train and eval in turn, many times: each phase's second call builds its entry again (a
    switch is no miss of an unchanged call), and the third runs through it."""
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8))
    step = ndl.compile(model)
    full = []
    original = step._call
    step._call = lambda *a: full.append(1) or original(*a)
    for phase in range(4 * compile_module.MISSES):
        model.train() if phase % 2 == 0 else model.eval()
        for _ in range(3):
            step(X)
    assert len(full) == 2 * 4 * compile_module.MISSES and step.compilations == 2


def test_labels_out_of_range_are_refused_through_the_entry():
    step, model, opt, call = sgd_step()
    for _ in range(3):
        call()
    bad = Y.copy()
    bad[3] = 7
    with pytest.raises(ValueError, match="holds 7"):
        step(X, bad)


def test_the_entry_wraps_outputs_as_the_full_path_does():
    """Outputs made through the entry (with the program's output types, not read from the arrays)
    have the types of their arrays, take part in eager ops and keep their data while held, though
    the program reuses an output array two runs later once no one holds it."""
    step = ndl.compile(lambda x: (x.sum(), x * 2.0, (x * 2.0).sum((1,))))
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    held = [step(x) for _ in range(4)]
    for outputs in held:
        for out in outputs:
            assert out._value.type == TensorType.of(out.numpy()) and not out.requires_grad
        assert float(outputs[0]) == 66.0 and (outputs[1] + 1.0).numpy()[2, 3] == 23.0
    assert len({id(o[1].numpy()) for o in held}) == len(held)
    for _ in range(3):
        step(x)  # results dropped: their arrays may be written again
    assert all(o[1].numpy().tobytes() == (x * 2.0).tobytes() for o in held)


def test_outputs_kept_read_late_or_viewed_keep_their_values_through_later_calls():
    """The entry's runs (the steady run written in: runtime/steady.py) write an output array again only when nothing holds it:
    an output kept, one read after the next call and a view of one whose Tensor is dropped keep
    their values while the same input array, written in place, is called on again and again."""
    step = ndl.compile(lambda x: x * 2.0)
    x = np.zeros((3, 4), np.float32)
    kept = step(x)
    x[...] = 1.0
    view = step(x).numpy()[1:]
    last = None
    for k in range(2, 8):
        x[...] = k
        previous, last = last, step(x)
        if previous is not None:
            assert previous.numpy().tobytes() == np.full((3, 4), 2.0 * (k - 1), np.float32).tobytes()
    assert "except Slow" in step.entry.source, "the calls ran through the entry's steady run"
    assert kept.numpy().tobytes() == np.zeros((3, 4), np.float32).tobytes()
    assert view.tobytes() == np.full((2, 4), 2.0, np.float32).tobytes()
    assert last.numpy().tobytes() == np.full((3, 4), 14.0, np.float32).tobytes()


def test_calls_from_three_threads_through_the_entry_update_the_state_in_a_serial_order():
    """3 threads calling a step that adds its argument to a state tensor and returns the sum, with
    thread switches forced often: sorted, the results step by one call's argument each, from the
    first to the state's final value (a lost or torn update breaks the chain: the state is large
    enough that unlocked native runs, which release the GIL, would overlap); the entry ran."""
    import sys
    import threading
    n = 1 << 18
    total = ndl.Tensor(np.zeros(n, np.float32), requires_grad=False)

    def accumulate(x):
        total.data = total + x
        return total * 1.0
    step = ndl.compile(accumulate)
    calls = {k: [] for k in (1.0, 2.0, 4.0)}

    def work(k):
        x = np.full(n, k, np.float32)
        for _ in range(100):
            r = step(x).numpy()
            calls[k].append((r[0], r[n // 2], r[-1]))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    results = sorted((r, k) for k, rs in calls.items() for r in rs)
    previous = 0.0
    for r, k in results:
        assert r[0] == r[1] == r[2] and r[0] - previous == k, f"{r} follows {previous}, not a call adding {k}"
        previous = r[0]
    assert previous == 100.0 * 7 and np.all(total.numpy() == previous)
    assert step.entry is not None and step.compilations == 1
