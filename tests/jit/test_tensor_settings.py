"""An optimizer's number set as a 0-d Tensor (`opt.lr = ndl.Tensor(0.01)`), which eager needle
takes: compiled, it is read as its number, a runtime input like a float lr."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc.jit.capture import number_of

nn = ndl.nn


def _training_step(model, opt):
    """One step of `opt` on the sum of `model`'s squared outputs."""
    def step(x):
        opt.reset_grad()
        loss = (model(x) ** 2).sum()
        loss.backward()
        opt.step()
        return loss
    return step


def _run(compiled, lrs, make_optimizer):
    """Losses and parameters after one step per lr, set before it; and the compilations."""
    np.random.seed(0)
    model = nn.Linear(3, 2)
    opt = make_optimizer(model.parameters())
    step = _training_step(model, opt)
    run = ndl.compile(step) if compiled else step
    x = ndl.Tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3))
    losses = []
    for lr in lrs:
        opt.lr = lr
        losses.append(run(x).numpy())
    return losses, [p.numpy() for p in model.parameters()], run.compilations if compiled else 0


OPTIMIZERS = {"SGD": lambda params: ndl.optim.SGD(params, lr=0.1, momentum=0.9),
              "Adam": lambda params: ndl.optim.Adam(params, lr=0.1)}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_a_tensor_lr_is_read_as_its_number_every_call(optimizer):
    floats = [0.1, 0.01, 0.01, 0.5]  # the first as constructed: a float, then 0-d Tensors
    tensors = [0.1] + [ndl.Tensor(np.float32(lr)) for lr in floats[1:]]
    eager, eager_floats = _run(False, tensors, OPTIMIZERS[optimizer]), _run(False, floats, OPTIMIZERS[optimizer])
    compiled, compiled_floats = _run(True, tensors, OPTIMIZERS[optimizer]), _run(True, floats, OPTIMIZERS[optimizer])
    assert compiled[2] == 1  # a new lr, float or Tensor, is a runtime input: no recompile
    for tensor_run, float_run in ((eager, eager_floats), (compiled, compiled_floats)):
        for got, want in zip(tensor_run[0] + tensor_run[1], float_run[0] + float_run[1]):
            np.testing.assert_array_equal(got, want)  # the same bits as with the float
    for got, want in zip(compiled[0] + compiled[1], eager[0] + eager[1]):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)  # as float lrs do (test_op_input_fuzz)
    assert len(set(map(float, compiled[0]))) == 4  # each lr took effect


def test_a_tensor_lr_changed_in_place_takes_effect_and_a_vector_is_refused():
    np.random.seed(0)
    model = nn.Linear(3, 2)
    opt = ndl.optim.SGD(model.parameters(), lr=ndl.Tensor(np.float32(0.0)))
    compiled, x = ndl.compile(_training_step(model, opt)), np.ones((4, 3), np.float32)
    first, second = compiled(x).numpy(), compiled(x).numpy()
    assert first == second  # lr 0: nothing moves
    opt.lr.data = ndl.Tensor(np.float32(0.1))
    assert compiled(x).numpy() == second and compiled(x).numpy() != second
    assert compiled.compilations == 1
    assert number_of(ndl.Tensor(np.float32(0.25))) == np.float32(0.25)
    assert number_of(np.array(3)) == 3 and isinstance(number_of(ndl.Tensor(np.ones(2))), ndl.Tensor)
