"""ndl.optim against numpy implementations of needle's update rules (DESIGN §8), and PyTorch's
Adam/SGD where their rules coincide with needle's."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc import nn


def make_params(shapes=((3, 2), (4,))):
    return [nn.Parameter(np.random.randn(*s).astype(np.float32)) for s in shapes]


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = ndl.Tensor(g.astype(np.float32), requires_grad=False)


def run_steps(optimizer, params, steps=3):
    """Apply `steps` updates with fixed random gradients; returns [(weights after each step)] and grads."""
    grads = [[np.random.randn(*p.shape) for p in params] for _ in range(steps)]
    history = []
    for gs in grads:
        set_grads(params, gs)
        optimizer.step()
        history.append([p.numpy().copy() for p in params])
    return history, grads


def numpy_sgd(w, grads, lr, momentum, wd):
    u, out = np.zeros_like(w), []
    for g in grads:
        g = g + wd * w
        u = momentum * u + (1 - momentum) * g
        w = w - lr * u
        out.append(w)
    return out


def numpy_adam(w, grads, lr, b1, b2, eps, wd):
    m, v, out = np.zeros_like(w), np.zeros_like(w), []
    for t, g in enumerate(grads, start=1):
        g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        out.append(w)
    return out


@pytest.mark.parametrize("momentum, wd", [(0.0, 0.0), (0.9, 0.0), (0.5, 0.01)])
def test_sgd_matches_needles_rule(momentum, wd):
    params = make_params()
    start = [p.numpy().astype(np.float64) for p in params]
    history, grads = run_steps(ndl.optim.SGD(params, lr=0.1, momentum=momentum, weight_decay=wd), params)
    for i, w0 in enumerate(start):
        expected = numpy_sgd(w0, [gs[i] for gs in grads], 0.1, momentum, wd)
        for step, w in enumerate(expected):
            np.testing.assert_allclose(history[step][i], w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_bias_correction_at_t_1_2_3(wd):
    params = make_params()
    start = [p.numpy().astype(np.float64) for p in params]
    opt = ndl.optim.Adam(params, lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=wd)
    history, grads = run_steps(opt, params)
    assert float(opt.t) == 3
    for i, w0 in enumerate(start):
        expected = numpy_adam(w0, [gs[i] for gs in grads], 0.01, 0.8, 0.95, 1e-6, wd)
        for step, w in enumerate(expected):
            np.testing.assert_allclose(history[step][i], w, rtol=1e-5, atol=1e-6)


def test_first_adam_step_moves_each_weight_by_lr():
    (p,) = make_params([(5,)])
    w0 = p.numpy().copy()
    set_grads([p], [np.array([1e-3, -2.0, 5.0, -1e-2, 3.0])])
    ndl.optim.Adam([p], lr=0.01).step()
    np.testing.assert_allclose(p.numpy() - w0, -0.01 * np.sign([1, -1, 1, -1, 1]), rtol=1e-3)


@pytest.mark.parametrize("make", [lambda ps: ndl.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
                                  lambda ps: ndl.optim.Adam(ps, lr=0.1, weight_decay=0.1)],
                         ids=["sgd", "adam"])
def test_step_keeps_float32_grows_no_graph_and_leaves_grad_alone(make):
    params = make_params()
    x = ndl.Tensor(np.random.randn(4, 3).astype(np.float32), requires_grad=False)
    loss = (x @ params[0]).sum() + params[1].sum()
    loss.backward()
    grads = [p.grad for p in params]
    grad_values = [g.numpy().copy() for g in grads]
    opt = make(params)
    for _ in range(2):
        opt.step()
    for p, g, value in zip(params, grads, grad_values):
        assert p.grad is g
        np.testing.assert_array_equal(g.numpy(), value)
        assert p.is_leaf() and p.dtype == "float32" and p.requires_grad
    slots = [t for store in (getattr(opt, n, {}) for n in ("u", "m", "v")) for t in store.values()]
    assert slots and all(t.is_leaf() and t.dtype == "float32" and not t.requires_grad for t in slots)


@pytest.mark.parametrize("make", [lambda ps: ndl.optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: ndl.optim.Adam(ps, lr=0.1)], ids=["sgd", "adam"])
def test_step_skips_parameters_without_grad(make):
    params = make_params()
    before = [p.numpy().copy() for p in params]
    set_grads(params[:1], [np.ones((3, 2))])
    opt = make(params)
    opt.step()
    np.testing.assert_array_equal(params[1].numpy(), before[1])
    assert np.all(params[0].numpy() < before[0])


def test_reset_grad_clears_every_gradient():
    params = make_params()
    set_grads(params, [np.ones(p.shape) for p in params])
    ndl.optim.SGD(params).reset_grad()
    assert all(p.grad is None for p in params)


# ---- PyTorch as an oracle ---------------------------------------------------------------
@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("name, kwargs, torch_kwargs", [
    ("Adam", dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-7, weight_decay=0.05),
     dict(lr=0.01, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.05)),
    # PyTorch's momentum buffer is u = m*u + g (needle: m*u + (1-m)*g), so compare plain SGD only.
    ("SGD", dict(lr=0.1, weight_decay=0.05), dict(lr=0.1, weight_decay=0.05)),
])
def test_matches_torch_where_the_rules_coincide(torch, name, kwargs, torch_kwargs):
    params = make_params()
    ref_params = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in params]
    opt = getattr(ndl.optim, name)(params, **kwargs)
    ref_opt = getattr(torch.optim, name)(ref_params, **torch_kwargs)
    for _ in range(3):
        grads = [np.random.randn(*p.shape).astype(np.float32) for p in params]
        set_grads(params, grads)
        for rp, g in zip(ref_params, grads):
            rp.grad = torch.tensor(g)
        opt.step()
        ref_opt.step()
        for p, rp in zip(params, ref_params):
            np.testing.assert_allclose(p.numpy(), rp.detach().numpy(), rtol=1e-5, atol=1e-6)
