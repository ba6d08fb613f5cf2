"""What fusion must achieve on the mission's kernels, read from the `fused` stage: BatchNorm,
LayerNorm, softmax cross-entropy, the relu chain and optimizer updates in few passes, each
compiled result equal to eager execution."""
import re

import numpy as np
import pytest

import ndlc as ndl

N, D = 64, 48


def compiled_equals_eager(make, *arrays):
    """Compile the step `make()` returns and run it, run a fresh copy eagerly, compare; return the
    compiled step."""
    np.random.seed(0)
    step = ndl.compile(make())
    got = step(*arrays)
    np.random.seed(0)
    want = make()(*[ndl.Tensor(a, requires_grad=False) for a in arrays])
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=2e-5, atol=2e-5)
    return step


def kernels(step):
    return step.ir("fused").count("\nkernel ")


def data(*shapes):
    rng = np.random.default_rng(1)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def norm_step(module, backward):
    def make():
        norm = module(D)

        def step(x, c):
            if not backward:
                return norm(x) * c
            x.requires_grad = True
            (norm(x) * c).sum().backward()
            return x.grad, norm.weight.grad, norm.bias.grad
        return step
    return make


@pytest.mark.parametrize("module", [ndl.nn.BatchNorm1d, ndl.nn.LayerNorm1d], ids=["batchnorm1d", "layernorm1d"])
def test_normalisation_forward_is_at_most_two_kernels_and_backward_two_more(module):
    x, c = data((N, D), (N, D))
    assert kernels(compiled_equals_eager(norm_step(module, False), x, c)) <= 2
    assert kernels(compiled_equals_eager(norm_step(module, True), x, c)) <= 4


def test_batchnorm_running_statistics_join_the_statistics_kernel():
    bn = ndl.nn.BatchNorm1d(D)
    step = ndl.compile(lambda x: bn(x))
    step(data((N, D))[0])
    (kernel,) = step.ir("fused").split("\n\nkernel ")[1:]
    assert "%bn.running_mean" in kernel and "%bn.running_var" in kernel


def test_softmax_cross_entropy_forward_and_backward_is_two_kernels():
    def make():
        loss_fn = ndl.nn.SoftmaxLoss()

        def step(z, y):
            z.requires_grad = True
            loss = loss_fn(z, y)
            loss.backward()
            return loss, z.grad
        return step
    z = data((N, 10))[0]
    y = np.random.default_rng(2).integers(0, 10, N)
    assert kernels(compiled_equals_eager(make, z, y)) <= 2


def test_relu_chain_forward_and_backward_is_at_most_two_kernels():
    def make():
        def step(x, a, b, c):
            for t in (x, a, b, c):
                t.requires_grad = True
            (ndl.relu(x * a + b) * c).sum().backward()
            return x.grad, a.grad, b.grad, c.grad
        return step
    assert kernels(compiled_equals_eager(make, *data(*[(N * D,)] * 4))) <= 2


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_each_parameter_is_updated_by_one_kernel(optimizer):
    shapes = [(D, 16), (16,), (16, 5)]

    def make():
        params = [ndl.nn.Parameter(np.random.standard_normal(s).astype(np.float32)) for s in shapes]
        opt = ndl.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01) if optimizer == "sgd" \
            else ndl.optim.Adam(params, lr=0.01, weight_decay=0.01)

        def step(x):
            opt.reset_grad()
            loss = (ndl.relu(x @ opt.params[0] + opt.params[1].broadcast_to((N, 16))) @ opt.params[2]).sum()
            loss.backward()
            opt.step()
            return loss
        return step
    step = compiled_equals_eager(make, data((N, D))[0])
    writers = {}
    for header in re.findall(r"^kernel \S+ -> (.*)$", step.ir("fused"), re.M):
        for name in header.split(", "):
            writers[name.lstrip("%")] = header
    program = step.last.program.kernels
    new = dict(zip(program.updated, program.outputs[len(program.outputs) - program.updates:]))
    slots = ("u",) if optimizer == "sgd" else ("m", "v")
    for i in range(len(shapes)):
        group = [f"opt.params.{i}"] + [f"opt.{slot}.{i}" for slot in slots]
        assert len({writers[new[state]] for state in group}) == 1, step.ir("fused")


def test_batchnorm2d_forward_is_at_most_two_kernels_and_backward_two_more():
    def make(backward):
        def build():
            bn = ndl.nn.BatchNorm2d(16)  # at least MIN_OUTER_POINTS channels

            def step(x, c):
                if not backward:
                    return bn(x)
                x.requires_grad = True
                (bn(x) * c).sum().backward()
                return x.grad, bn.weight.grad, bn.bias.grad
            return step
        return build
    x, c = data((2, 16, 5, 6), (2, 16, 5, 6))
    assert kernels(compiled_equals_eager(make(False), x, c)) <= 2
    assert kernels(compiled_equals_eager(make(True), x, c)) <= 4
