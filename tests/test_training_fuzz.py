"""Random training programs: drawn compositions of needle's layers (Linear, BatchNorm1d/2d,
LayerNorm1d, Dropout in eval mode, ReLU/Tanh/Sigmoid, Conv, pooling, Residual, Sequential), a loss
(SoftmaxLoss or a squared error) and an optimizer (SGD with momentum and weight decay, or Adam),
trained for a few steps compiled and eagerly from the same seed: every loss, parameter, running
statistic and optimizer slot agree, and so does the trained model's compiled forward in eval mode.
FUZZ_EXAMPLES sets how many programs are drawn (`-m slow` runs 40)."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import ndlc as ndl

nn = ndl.nn
CLASSES = 3
STEPS = 3
ACTIVATIONS = ("ReLU", "Tanh", "Sigmoid")
# built with eps 1e-2: a feature whose few values nearly agree has a variance far below the default
# eps, and normalising it magnifies float32 rounding past any tolerance (test_entry_fuzz.py)
NORMS = ("BatchNorm1d", "BatchNorm2d", "LayerNorm1d")


@st.composite
def dense_layers(draw, width):
    """Layers over (batch, width) features; (their descriptions, the width they end with)."""
    layers = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("Linear", "BatchNorm1d", "LayerNorm1d", "activation", "Dropout", "Residual")))
        if kind == "Linear":
            out = draw(st.sampled_from((2, 5, 8)))
            layers.append(("Linear", width, out))
            width = out
        elif kind == "activation":
            layers.append((draw(st.sampled_from(ACTIVATIONS)),))
        elif kind == "Residual":
            layers.append(("Residual", width, draw(st.sampled_from(ACTIVATIONS))))
        elif kind == "Dropout":
            layers.append(("Dropout", 0.5))
        else:
            layers.append((kind, width))
    return layers, width


@st.composite
def image_layers(draw, channels, size):
    """Layers over NCHW images, then Flatten; (descriptions, the flattened width)."""
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(("Conv", "BatchNorm2d", "activation", "pool", "Residual")))
        if kind == "Conv":
            out, k = draw(st.sampled_from((1, 2, 4))), draw(st.sampled_from((1, 3)))
            stride = draw(st.sampled_from((1, 2)))
            layers.append(("Conv", channels, out, k, stride))
            channels, size = out, (size - 1) // stride + 1
        elif kind == "pool" and size >= 2:
            layers.append((draw(st.sampled_from(("MaxPool2d", "AvgPool2d"))), 2))
            size //= 2
        elif kind == "Residual":
            layers.append(("ResidualConv", channels))
        elif kind == "BatchNorm2d":
            layers.append(("BatchNorm2d", channels))
        else:
            layers.append((draw(st.sampled_from(ACTIVATIONS)),))
    return layers + [("Flatten",)], channels * size * size


@st.composite
def programs(draw):
    if draw(st.booleans()):
        channels, size = draw(st.sampled_from((1, 2))), draw(st.sampled_from((4, 5, 6)))
        layers, width = draw(image_layers(channels, size))
        shape = (channels, size, size)
    else:
        features = draw(st.sampled_from((3, 6)))
        layers, width = draw(dense_layers(features))
        shape = (features,)
    # Adam's eps well above float32 noise: a parameter the loss does not depend on (a BatchNorm's
    # bias before another BatchNorm) has a gradient of rounding noise, which m/sqrt(v) turns into
    # steps of +-lr whose signs the two runs need not share
    optimizer = draw(st.sampled_from((
        ("SGD", {"lr": 0.05}), ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
        ("Adam", {"lr": 0.01, "eps": 1e-3}), ("Adam", {"lr": 0.01, "weight_decay": 1e-3, "eps": 1e-3}))))
    return {"layers": layers + [("Linear", width, CLASSES)], "input": shape, "optimizer": optimizer,
            "loss": draw(st.sampled_from(("softmax", "squared"))), "batch": draw(st.sampled_from((1, 4, 7))),
            "seed": draw(st.integers(0, 2**16))}


def build(description):
    """One layer from its description."""
    kind, *args = description
    if kind == "Residual":
        width, activation = args
        return nn.Residual(nn.Sequential(nn.Linear(width, width), getattr(nn, activation)()))
    if kind == "ResidualConv":
        return nn.Residual(nn.Sequential(nn.Conv(args[0], args[0], 3), nn.ReLU()))
    if kind == "Conv":
        channels, out, k, stride = args
        return nn.Conv(channels, out, k, stride=stride)
    if kind in NORMS:
        return getattr(nn, kind)(*args, eps=1e-2)
    return getattr(nn, kind)(*args)


def squared_error(out, y):
    """Half the mean squared distance of the outputs from the labels' one-hot rows."""
    target = ndl.init.one_hot(CLASSES, y, dtype=out.dtype)
    return ((out - target) ** 2).sum() / (2 * out.shape[0])


def unconstrained(program):
    """The layers whose bias has a gradient of 0 in exact arithmetic, rounding noise in float32 (Adam
    makes steps of it: a Conv's bias before a BatchNorm2d differed by 2e-5 after 3 steps at batch 1,
    the same on older trees): those a BatchNorm follows (a Conv, a Linear or another norm), which
    subtracts each feature's batch mean."""
    layers = program["layers"]
    return [i for i in range(len(layers) - 1)
            if layers[i][0] in ("Conv", "Linear") + NORMS and layers[i + 1][0] in ("BatchNorm1d", "BatchNorm2d")]


def train(program, compiled):
    """Steps of the program, compiled or eager: (losses, the final state, the optimizer's slots (each
    with its parameter's index), an eval-mode forward, the `unconstrained` biases' indices among the
    parameters)."""
    np.random.seed(program["seed"])
    model = nn.Sequential(*[build(d) for d in program["layers"]])
    model.train()
    for m in model.modules:
        if isinstance(m, nn.Dropout):
            m.eval()  # eager dropout draws from numpy, a compiled one from its own counter
    name, options = program["optimizer"]
    opt = getattr(ndl.optim, name)(model.parameters(), **options)
    loss_fn = nn.SoftmaxLoss() if program["loss"] == "softmax" else squared_error

    def step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    step = ndl.compile(step) if compiled else step
    rng = np.random.default_rng(program["seed"])
    losses = []
    for _ in range(STEPS):
        x = ndl.Tensor(rng.standard_normal((program["batch"],) + program["input"]), requires_grad=False)
        losses.append(step(x, rng.integers(0, CLASSES, program["batch"])).numpy().copy())
    model.eval()
    x = ndl.Tensor(rng.standard_normal((5,) + program["input"]), requires_grad=False)
    forward = (ndl.compile(model) if compiled else model)(x).numpy().copy()
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    slots = [(i, t.numpy().copy()) for i, s in opt_state["state"].items() for t in s.values()]
    biases = [model.modules[i].bias for i in unconstrained(program)]
    noise = [i for i, p in enumerate(model.parameters()) if any(p is b for b in biases)]
    return losses, state, slots, forward, noise


def check(program):
    """Compiled agrees with eager: losses and parameters as tests/jit/test_compile_training.py
    compares them, optimizer slots (Adam's squared gradients magnify rounding) a little looser; the
    `unconstrained` biases and their slots are left out."""
    eager, compiled = train(program, False), train(program, True)
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-4, atol=1e-6, err_msg=f"losses of {program}")
    assert compiled[1].keys() == eager[1].keys()
    noise = {f"modules.{i}.bias" for i in unconstrained(program)}
    for name in eager[1]:
        if name not in noise:
            np.testing.assert_allclose(compiled[1][name], eager[1][name], rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} of {program}")
    for i, ((param, got), (_, want)) in enumerate(zip(compiled[2], eager[2])):
        if param not in compiled[4]:
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6, err_msg=f"optimizer slot {i} of {program}")
    # the unconstrained biases feed the running statistics: the eval forwards differ by rounding times their scale
    np.testing.assert_allclose(compiled[3], eager[3], rtol=1e-4, atol=1e-5 + 1e-4 * np.abs(eager[3]).max(),
                               err_msg=f"eval forward of {program}")


EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
@given(program=programs())
def test_random_training_programs_train_as_eager(program):
    check(program)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(program=programs())
def test_many_random_training_programs_train_as_eager(program):
    check(program)
