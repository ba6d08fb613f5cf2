"""Compiled training steps: 50 steps equal eager training, one native call per step, state
visible through the user's objects, modes, disk cache, and clear errors."""
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ndlc as ndl
from ndlc.examples.train_mlp import training_step
from ndlc.runtime import native_calls
from training_cases import batches, setup

nn = ndl.nn


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fifty_compiled_steps_equal_eager_training(optimizer):
    data = batches(50)
    eager_model, eager_opt, eager_step = setup(optimizer)
    eager_losses = [float(eager_step(ndl.Tensor(x), ndl.Tensor(y)).numpy()) for x, y in data]

    model, opt, train_step = setup(optimizer)
    step = ndl.compile(train_step)
    losses = [float(step(x, y).numpy()) for x, y in data]

    np.testing.assert_allclose(losses, eager_losses, rtol=1e-4)
    assert losses[-1] < 0.5 * losses[0]
    for name, value in eager_model.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    slots = ["u"] if optimizer == "sgd" else ["m", "v"]
    for slot in slots:
        for i in getattr(opt, slot):
            np.testing.assert_allclose(getattr(opt, slot)[i].numpy(), getattr(eager_opt, slot)[i].numpy(),
                                       rtol=1e-3, atol=1e-6, err_msg=f"{slot}[{i}]")
    if optimizer == "adam":
        assert float(opt.t) == 50


def test_one_compiled_step_is_one_native_call():
    _, _, train_step = setup("adam")
    step = ndl.compile(train_step)
    x, y = batches(1)[0]
    step(x, y)
    before = native_calls()
    for _ in range(3):
        step(x, y)
    assert native_calls() - before == 3
    assert step.native_calls == 4


def test_parameters_see_updates_and_user_assignments():
    model, opt, train_step = setup("sgd")
    step = ndl.compile(train_step)
    weight = model.modules[0].weight
    view = weight.data
    before = weight.numpy().copy()
    step(*batches(1)[0])
    assert not np.array_equal(weight.numpy(), before)
    np.testing.assert_array_equal(view.numpy(), weight.numpy())
    assert model.parameters()[0] is weight and not weight.is_symbolic and weight.grad is None



def test_a_step_reads_the_data_assigned_between_calls():
    linear = nn.Linear(3, 2)
    opt = ndl.optim.SGD(linear.parameters(), lr=0.5)

    def train_step(x):
        opt.reset_grad()
        loss = linear(x).sum()
        loss.backward()
        opt.step()
        return loss

    step = ndl.compile(train_step)
    x = np.ones((4, 3), np.float32)
    step(x)
    linear.weight.data = ndl.Tensor(np.zeros((3, 2), np.float32))
    step(x)
    np.testing.assert_allclose(linear.weight.numpy(), np.full((3, 2), -0.5 * 4))


def test_compiled_module_honours_train_and_eval():
    model, _, _ = setup("sgd")
    compiled = ndl.compile(model)
    x = batches(1)[0][0]
    running = model.modules[1].running_mean.numpy().copy()
    train_out = compiled(x)
    np.testing.assert_allclose(train_out.numpy(), _eager_forward(model, x, train=True), rtol=1e-4, atol=1e-5)
    assert not np.array_equal(model.modules[1].running_mean.numpy(), running)
    model.eval()
    running = model.modules[1].running_mean.numpy().copy()
    eval_out = compiled(x)
    np.testing.assert_allclose(eval_out.numpy(), model(ndl.Tensor(x)).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model.modules[1].running_mean.numpy(), running)
    assert len(compiled.specialisations) == 2


def _eager_forward(model, x, train):
    """The eager forward in train mode, leaving the running statistics as they were."""
    saved = [(bn, bn.running_mean, bn.running_var) for bn in [model.modules[1]]]
    model.train() if train else model.eval()
    out = model(ndl.Tensor(x)).numpy()
    for bn, mean, var in saved:
        bn.running_mean, bn.running_var = mean, var
    return out


def test_compiled_dropout_draws_a_fresh_mask_each_call():
    drop = nn.Dropout(0.25)
    compiled = ndl.compile(drop)
    x = np.ones((100, 100), np.float32)
    a, b = compiled(x).numpy(), compiled(x).numpy()
    assert not np.array_equal(a, b)
    for out in (a, b):
        np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.75], rtol=1e-6)
        assert abs((out == 0).mean() - 0.25) < 0.02


def test_traced_and_grad_stages():
    _, _, train_step = setup("adam")
    step = ndl.compile(train_step)
    step(*batches(1)[0])
    traced, grad = step.ir("traced"), step.ir("grad")
    assert "logsumexp" in traced and "stop_gradient" not in traced
    assert "new %model.modules.0.weight = " in grad and len(grad) > len(traced)
    assert "kernel k0" in step.ir("planned")


def test_value_dependent_control_flow_is_refused():
    model, _, _ = setup("sgd")

    def step(x):
        out = model(x)
        if out.sum() > 0:
            return out
        return -out

    with pytest.raises(ndl.TraceError, match="cannot read the value of a symbolic"):
        ndl.compile(step)(batches(1)[0][0])
    assert not model.modules[0].weight.is_symbolic, "state is restored after a failed trace"


def test_wrong_input_rank_or_dtype_names_the_input():
    model, _, _ = setup("sgd")
    compiled = ndl.compile(model)
    compiled(np.zeros((8, 10), np.float32))
    compiled(np.zeros((4, 10), np.float32))
    compiled(np.zeros((4, 10), np.float64))  # float32, as ndl.Tensor would make it
    with pytest.raises(ndl.ShapeError, match="input 0 has type i64"):
        compiled(np.zeros((4, 10), np.int64))
    with pytest.raises(ValueError, match=r"Linear\(10, 16\): input has 7 features, expected 10"):
        ndl.compile(model)(np.zeros((4, 7), np.float32))


CACHE_SCRIPT = textwrap.dedent("""
    import numpy as np, ndlc as ndl
    from ndlc.runtime.native import llvm_compilations
    np.random.seed(0)
    model = ndl.nn.Sequential(ndl.nn.Linear(5, 3), ndl.nn.ReLU())
    out = ndl.compile(model)(np.ones((2, 5), np.float32))
    print(llvm_compilations(), float(out.numpy().sum()))
""")


def _run_cache_script(cache):
    env = dict(os.environ, NDLC_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-c", CACHE_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    count, total = done.stdout.split()
    return int(count), float(total), done.stderr


def test_second_process_reuses_the_disk_cache_and_rebuilds_a_corrupt_entry(tmp_path, fresh_machine):
    first = _run_cache_script(tmp_path)
    second = _run_cache_script(tmp_path)
    assert first[0] == 2 and second[0] == 0 and first[1] == second[1], "the kernels' module and the runner"
    entries = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files]
    entry = max([e for e in entries if e.endswith(".obj")], key=os.path.getsize)  # the kernels' object code
    for library in [e for e in entries if e.endswith(".so")]:  # the program's and the thread team's: gone,
        os.unlink(library)  # the objects are read (and the team linked again)
    with open(entry, "r+b") as f:
        f.truncate(os.path.getsize(entry) // 2)
    third = _run_cache_script(tmp_path)
    assert third[0] == 1 and third[1] == first[1]
    assert "ignoring corrupt cache entry" in third[2]
    fourth = _run_cache_script(tmp_path)
    assert fourth[0] == 0, "the rebuilt entry is used again"


class Trainer:
    """State reached through a bound method's object."""

    def __init__(self):
        self.model = nn.Linear(3, 2)
        self.opt = ndl.optim.SGD(self.model.parameters(), lr=0.5)

    def step(self, x):
        self.opt.reset_grad()
        loss = self.model(x).sum()
        loss.backward()
        self.opt.step()
        return loss


def test_state_of_a_bound_method_object_is_found():
    trainer = Trainer()
    before = trainer.model.weight.numpy().copy()
    ndl.compile(trainer.step)(np.ones((4, 3), np.float32))
    np.testing.assert_allclose(trainer.model.weight.numpy(), before - 0.5 * 4)


class Holder:
    def __init__(self, trainer):
        self.trainer = trainer


def test_state_that_cannot_be_found_is_an_error_unless_named():
    holder = Holder(Trainer())

    def step(x):
        return holder.trainer.step(x)

    with pytest.raises(ndl.TraceError, match=r"not the traced program's state is assigned .*ndl.compile\(fn, state="):
        ndl.compile(step)(np.ones((4, 3), np.float32))
    assert not holder.trainer.model.weight.is_symbolic
    assert all(not u.is_symbolic and not u.numpy().any() for u in holder.trainer.opt.u.values())
    before = holder.trainer.model.weight.numpy().copy()
    compiled = ndl.compile(step, state=[holder.trainer.model, holder.trainer.opt])
    compiled(np.ones((4, 3), np.float32))
    np.testing.assert_allclose(holder.trainer.model.weight.numpy(), before - 0.5 * 4)
    assert "%linear0.weight: f32[3,2] state" in compiled.ir("grad")


def test_compiled_cnn_step_equals_eager():
    """Conv, BatchNorm2d, both poolings, LayerNorm1d and Residual in one compiled SGD step.
    (With Adam, the conv bias in front of BatchNorm has a gradient of pure rounding noise, which
    Adam's normalisation turns into full-size steps: no two implementations agree on it.)"""
    def make():
        np.random.seed(0)
        model = nn.Sequential(nn.Conv(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv(8, 8, 3, stride=2), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                              nn.Linear(8 * 2 * 2, 16), nn.LayerNorm1d(16), nn.ReLU(),
                              nn.Residual(nn.Sequential(nn.Linear(16, 16), nn.Tanh())), nn.Linear(16, 5))
        return model, training_step(model, ndl.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))

    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((8, 3, 16, 16)).astype(np.float32), rng.integers(0, 5, 8)) for _ in range(5)]
    eager_model, eager_step = make()
    eager = [float(eager_step(ndl.Tensor(x), ndl.Tensor(y)).numpy()) for x, y in data]
    model, train_step = make()
    step = ndl.compile(train_step)
    np.testing.assert_allclose([float(step(x, y).numpy()) for x, y in data], eager, rtol=1e-5)
    for name, value in eager_model.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_static_hyperparameters_recompile_when_one_changes(caplog):
    """With static_hyperparameters the optimizer's numbers are compiled in: a change recompiles,
    logged with its name, and is never ignored."""
    data = batches(4)
    eager_model, eager_opt, eager_step = setup("sgd")
    model, opt, train_step = setup("sgd")
    step = ndl.compile(train_step, static_hyperparameters=True)
    for i, (x, y) in enumerate(data):
        if i == 2:
            eager_opt.lr = opt.lr = 0.01
        with caplog.at_level(logging.INFO, logger="ndlc.compile"):
            loss = float(step(x, y).numpy())
        assert loss == pytest.approx(float(eager_step(ndl.Tensor(x), ndl.Tensor(y)).numpy()), rel=1e-4)
    assert step.compilations == 2 and "optimizer.lr changed from 0.05 to 0.01" in caplog.text
    np.testing.assert_allclose(model.modules[0].weight.numpy(), eager_model.modules[0].weight.numpy(),
                               rtol=1e-4, atol=1e-6)


def test_a_recompile_storm_is_reported(caplog):
    model = nn.Linear(2, 2)
    step = ndl.compile(lambda x: model(x))
    with caplog.at_level(logging.WARNING, logger="ndlc.compile"):
        for i in range(8):
            model.note = float(i)  # bookkeeping on a module is compiled in, so it recompiles
            step(np.ones((1, 2), np.float32))
    assert "has been compiled 8 times" in caplog.text


SCALE = 2.0


def test_a_changed_global_number_recompiles():
    global SCALE
    step = ndl.compile(lambda x: x * SCALE)
    assert step(np.ones(1, np.float32)).numpy()[0] == 2.0
    SCALE = 3.0
    try:
        assert step(np.ones(1, np.float32)).numpy()[0] == 3.0
    finally:
        SCALE = 2.0


def test_compiled_lenet_bn_steps_equal_eager():
    """The batch-norm notebook's LeNet (padded and unpadded 5x5 convolutions, BatchNorm2d, average
    pooling, BatchNorm1d, sigmoid), five SGD steps compiled and eager."""
    from ndlc.examples.lenet import build_lenet
    rng = np.random.default_rng(0)
    batches = [(rng.random((8, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 8)) for _ in range(5)]
    results = []
    for compiled in (False, True):
        np.random.seed(0)
        model = build_lenet()
        step = training_step(model, ndl.optim.SGD(model.parameters(), lr=0.5))
        step = ndl.compile(step) if compiled else step
        losses = [float((step(x, y) if compiled else step(ndl.Tensor(x, requires_grad=False),
                                                            ndl.Tensor(y, requires_grad=False))).numpy())
                  for x, y in batches]
        results.append((losses, [p.numpy().copy() for p in model.parameters()]))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-4)
    for got, want in zip(results[1][1], results[0][1]):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_calls_from_several_threads_equal_serial_calls():
    """8 threads x 25 calls of one compiled function with different inputs give each call's serial
    result; 4 threads x 10 training steps on one batch end where 40 serial steps end."""
    import threading
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    forward = ndl.compile(lambda x: ndl.tanh(x @ ndl.Tensor(w, requires_grad=False)).sum(axes=(1,)))
    inputs = [rng.standard_normal((32, 16)).astype(np.float32) for _ in range(200)]
    serial = [forward(x).numpy() for x in inputs]
    got = [None] * len(inputs)

    def work(first):
        for i in range(first, len(inputs), 8):
            got[i] = forward(inputs[i]).numpy()
    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(got, serial):
        np.testing.assert_array_equal(a, b)

    x, y = rng.standard_normal((32, 16)).astype(np.float32), rng.integers(0, 4, 32)
    weights = []
    for threaded in (False, True):
        np.random.seed(0)
        model = ndl.nn.Sequential(ndl.nn.Linear(16, 4))
        step = ndl.compile(training_step(model, ndl.optim.SGD(model.parameters(), lr=0.1)))
        if threaded:
            pool = [threading.Thread(target=lambda: [step(x, y) for _ in range(10)]) for _ in range(4)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
        else:
            for _ in range(40):
                step(x, y)
        weights.append(model.parameters()[0].numpy().copy())
    np.testing.assert_array_equal(weights[1], weights[0])
