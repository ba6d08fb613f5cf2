"""Capturing a training step: state becomes graph inputs/updates; the captured step run with the
reference executor follows eager training exactly, and leaves the user's objects as they were."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc.examples.train_mlp import training_step
from ndlc.jit.capture import capture, find_slots
from ndlc.jit.reads import referenced_objects
from ndlc.runtime.reference import reference_executor

nn = ndl.nn


def make_setup(optimizer, seed=0, dropout=0.0):
    np.random.seed(seed)
    layers = [nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU()]
    layers += [nn.Dropout(dropout)] if dropout else []
    model = nn.Sequential(*layers, nn.Linear(8, 3))
    if optimizer == "sgd":
        opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    else:
        opt = ndl.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    return model, opt, training_step(model, opt)


def batches(n, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((16, 6)).astype(np.float32), rng.integers(0, 3, 16)) for _ in range(n)]


def test_state_is_found_through_closures_and_globals():
    model, opt, step = make_setup("adam")
    roots = referenced_objects(step)
    assert roots["model"] is model and roots["optimizer"] is opt
    paths = [s.path for s in find_slots(roots)]
    assert paths[0] == "model.modules.0.weight"
    assert "model.modules.1.running_mean" in paths and "optimizer.t" in paths and "optimizer.m.0" in paths


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_captured_step_follows_eager_training(optimizer):
    data = batches(50)
    eager_model, _, eager_step = make_setup(optimizer)
    eager_losses = [float(eager_step(ndl.Tensor(x), ndl.Tensor(y))) for x, y in data]

    model, opt, step = make_setup(optimizer)
    captured = capture(step, data[0])
    execute = reference_executor(captured.graph)
    losses = [float(captured.run(execute, x, y)[0]) for x, y in data]

    np.testing.assert_allclose(losses, eager_losses, rtol=1e-4)
    assert losses[-1] < losses[0]
    # the captured optimizer's numbers are f32 inputs: Adam's 1 - beta2 is 1.3e-5 off eager's double
    for name, value in eager_model.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_capture_leaves_objects_as_they_were_and_updates_them_in_place():
    model, opt, step = make_setup("adam")
    bn = model.modules[1]
    running, weight = bn.running_mean, model.modules[0].weight
    before = weight.numpy().copy()
    view = weight.data
    captured = capture(step, batches(1)[0])
    assert bn.running_mean is running and not running.is_symbolic and weight.grad is None
    np.testing.assert_array_equal(weight.numpy(), before)
    captured.run(reference_executor(captured.graph), *batches(1)[0])
    assert bn.running_mean is running and float(opt.t) == 1
    assert not np.array_equal(weight.numpy(), before)
    np.testing.assert_array_equal(view.numpy(), weight.numpy())  # one storage: .data sees updates
    assert any(np.abs(m.numpy()).sum() > 0 for m in opt.m.values())


def test_graph_names_state_by_its_place_and_updates_each_slot():
    model, opt, step = make_setup("sgd")
    graph = capture(step, batches(1)[0]).graph
    text = str(graph)
    assert "%model.modules.0.weight: f32[6,8] state" in text
    assert "new %model.modules.1.running_var = " in text and "new %optimizer.u.0 = " in text
    assert len(graph.updates) == 6 + 2 + 6  # parameters, running statistics, momentum slots


def test_compiled_dropout_draws_a_new_mask_each_step():
    model = nn.Dropout(0.5)
    x = np.ones((200, 50), np.float32)
    captured = capture(lambda a: model(a), [x], roots={"model": model})
    assert "random_uniform" in str(captured.graph)
    execute = reference_executor(captured.graph)
    first, second = (captured.run(execute, x)[0] for _ in range(2))
    assert not np.array_equal(first, second)
    for out in (first, second):
        assert set(np.unique(out)) == {0.0, 2.0}
        assert abs((out == 0).mean() - 0.5) < 0.02


def test_eval_mode_uses_running_statistics_and_updates_nothing():
    model, _, _ = make_setup("sgd")
    model.eval()
    captured = capture(lambda x: model(x), [np.zeros((4, 6), np.float32)], roots={"model": model})
    assert captured.graph.updates == {}
    x = batches(1)[0][0][:4]
    (out,) = captured.run(reference_executor(captured.graph), x)
    np.testing.assert_allclose(out, model(ndl.Tensor(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_replacing_a_state_tensor_with_a_non_tensor_is_an_error():
    model = nn.BatchNorm1d(3)

    def bad(x):
        model.running_mean = 0.0
        return x

    with pytest.raises(ndl.TraceError, match="model.running_mean held a Tensor before the step and a float after"):
        capture(bad, [np.zeros((2, 3), np.float32)], roots={"model": model})
    assert isinstance(model.running_mean, ndl.Tensor)
