"""Training loops under drawn settings: SGD or Adam with drawn hyperparameters (valid ones, and
sometimes one that is not: negative, NaN, Inf, a momentum or beta of 1 or more, text, None, a
bool) train a small model for a few steps eagerly and compiled; at a drawn step a drawn
hyperparameter is set (`opt.lr = ...`: a valid value, as a number or a 0-d numpy array, or an
invalid one, a ValueError naming it where it is set, the optimizer unchanged); mid-way the compiled run's model and optimizer are saved with ndl.save, loaded into
fresh objects (ndl.load, load_state_dict) and a new compiled step goes on from there. An invalid
setting is a ValueError naming it (a StateDictError when a checkpoint holds it, the optimizer left
as it was); valid ones train to eager's losses, parameters and optimizer slots. Then DataLoaders
and the text helpers with drawn arguments: every sample once, or a ValueError naming the argument.
FUZZ_EXAMPLES sets how many are drawn (`-m slow`: many more)."""
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import ndlc as ndl

nn = ndl.nn
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
VALID = {"lr": (0.0, 1e-3, 0.05, 0.3), "momentum": (0.0, 0.5, 0.9), "weight_decay": (0.0, 1e-3, 0.1),
         "beta1": (0.0, 0.5, 0.9), "beta2": (0.5, 0.9, 0.999), "eps": (1e-3, 1e-2, 0.1)}
# Adam's eps stays >= 1e-3: below, m/sqrt(v) of a gradient that is float32 noise is +-1 with signs
# the two runs need not share (test_training_fuzz.py)
INVALID = (-0.1, math.nan, math.inf, 1.0, 1.5, "0.1", None, True)
NAMES = {"SGD": ("lr", "momentum", "weight_decay"), "Adam": ("lr", "beta1", "beta2", "eps", "weight_decay")}


def fast(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])


def slow(examples):
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


def invalid(name, value):
    """Whether `value` is refused for hyperparameter `name` (PyTorch's ranges)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return not 0 <= value < (1 if name in ("momentum", "beta1", "beta2") else math.inf)


def schedule(draw, kind, steps):
    """(step, hyperparameter, value): a valid value (a number or a 0-d numpy array) or an invalid one."""
    name = draw(st.sampled_from(NAMES[kind]))
    value = draw(st.sampled_from(VALID[name] + INVALID))
    if not invalid(name, value) and draw(st.booleans()):
        value = np.array(value)
    return draw(st.integers(0, steps - 1)), name, value


@st.composite
def loops(draw):
    kind = draw(st.sampled_from(("SGD", "Adam")))
    options = {name: draw(st.sampled_from(VALID[name])) for name in NAMES[kind] if draw(st.booleans())}
    if kind == "Adam":  # eps always drawn (>= 1e-3, above): its default, 1e-8, drew eager and compiled
        options.setdefault("eps", draw(st.sampled_from(VALID["eps"])))  # weights 1.2e-3 apart (lr 0.3, beta1 0.5)
    if draw(st.integers(0, 3)) == 0:
        options[draw(st.sampled_from(NAMES[kind]))] = draw(st.sampled_from(INVALID))
    steps = draw(st.integers(2, 5))
    return {"kind": kind, "options": options, "steps": steps, "restore": draw(st.integers(1, steps - 1)),
            "schedule": schedule(draw, kind, steps),
            "batchnorm": draw(st.booleans()), "seed": draw(st.integers(0, 2**16))}


def build(loop, seed):
    np.random.seed(seed)
    # no bias before a BatchNorm: its gradient is 0 but for rounding, which Adam scales up to lr a
    # step in whichever direction the rounding went (eager and compiled differed by 5.8e-5 there)
    layers = [nn.Linear(4, 5, bias=not loop["batchnorm"])] + ([nn.BatchNorm1d(5, eps=1e-2)] if loop["batchnorm"] else []) \
        + [nn.ReLU(), nn.Linear(5, 3)]
    model = nn.Sequential(*layers)
    opt = getattr(ndl.optim, loop["kind"])(model.parameters(), **loop["options"])

    def step(x, y):
        opt.reset_grad()
        loss = nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return model, opt, step


def state(model, opt):
    arrays = [v.numpy() for v in model.state_dict().values()]
    saved = opt.state_dict()
    return arrays + [t.numpy() for s in saved["state"].values() for t in s.values()] + \
        [saved[name].numpy() for name in opt.counters]


def run(loop, folder, compiled):
    """(losses, final state): eagerly in one go, or compiled and restored from a checkpoint mid-way."""
    model, opt, step = build(loop, loop["seed"])
    step = ndl.compile(step) if compiled else step
    rng = np.random.default_rng(loop["seed"])
    losses = []
    for i in range(loop["steps"]):
        if compiled and i == loop["restore"]:
            ndl.save({"model": model.state_dict(), "opt": opt.state_dict()}, folder / "checkpoint.npz")
            model, opt, step = build(loop, loop["seed"] + 1)  # other initial values: the load must replace them
            saved = ndl.load(folder / "checkpoint.npz")
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            step = ndl.compile(step)
        at, name, value = loop["schedule"]
        if i == at and invalid(name, value):
            before = getattr(opt, name)
            with pytest.raises(ValueError, match=rf"{loop['kind']}: {name} must be a number in \[0, (1|inf)\), got"):
                setattr(opt, name, value)
            assert getattr(opt, name) is before
        elif i == at:
            setattr(opt, name, value)
        x, y = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 3, 6)
        losses.append(float(step(x, y).numpy()))
    return losses, state(model, opt)


def check_loop(loop, folder):
    bad = [(name, value) for name, value in loop["options"].items() if invalid(name, value)]
    if bad:
        name, value = bad[0]
        with pytest.raises(ValueError, match=rf"{loop['kind']}: {name} must be a number in \[0, (1|inf)\), got"):
            build(loop, 0)
        return
    (eager, eager_state), (compiled, compiled_state) = run(loop, folder, False), run(loop, folder, True)
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5, err_msg=f"losses of {loop}")
    for i, (got, want) in enumerate(zip(compiled_state, eager_state)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5, err_msg=f"state {i} of {loop}")


@pytest.mark.parametrize("examples", [pytest.param(EXAMPLES), pytest.param(100, marks=pytest.mark.slow)])
def test_training_loops_with_drawn_hyperparameters_and_a_restore_agree_with_eager(tmp_path, examples):
    @(fast if examples == EXAMPLES else slow)(examples)
    @given(loop=loops())
    def go(loop):
        check_loop(loop, tmp_path)
    go()


@pytest.mark.parametrize("examples", [pytest.param(EXAMPLES * 4), pytest.param(500, marks=pytest.mark.slow)])
def test_a_checkpoint_holding_an_invalid_hyperparameter_is_refused_leaving_the_optimizer(tmp_path, examples):
    @(fast if examples == EXAMPLES * 4 else slow)(examples)
    @given(kind=st.sampled_from(("SGD", "Adam")), value=st.sampled_from(INVALID), pick=st.integers(0, 4))
    def go(kind, value, pick):
        name = NAMES[kind][pick % len(NAMES[kind])]
        if not invalid(name, value):  # a learning rate of 1.0
            return
        model, opt, _ = build({"kind": kind, "options": {}, "batchnorm": False}, 0)
        saved = opt.state_dict()
        saved["param_groups"][0][name] = value
        ndl.save(saved, tmp_path / "opt.npz")
        before = {n: getattr(opt, n) for n in NAMES[kind]}
        with pytest.raises(ndl.errors.StateDictError, match=rf"param_groups\[0\]: {kind}: {name} must be a number"):
            opt.load_state_dict(ndl.load(tmp_path / "opt.npz"))
        assert {n: getattr(opt, n) for n in NAMES[kind]} == before
    go()


# data: loaders and the language-model helpers with drawn arguments

SIZES = st.one_of(st.integers(-2, 8), st.sampled_from((2.5, "2", None, True, np.int64(3))))


def is_size(value, low):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low


@st.composite
def loaders(draw):
    n = draw(st.integers(0, 9))
    sampler = None
    if draw(st.booleans()):
        sampler = list(np.random.default_rng(n).permutation(n))
        if draw(st.booleans()):
            sampler.append(draw(st.sampled_from((n, -1, 0.5, np.int64(0)))))
    return n, draw(SIZES), draw(st.booleans()) and sampler is None, sampler


def check_loader(n, batch_size, shuffle, sampler):
    dataset = ndl.data.NDArrayDataset(np.arange(n, dtype=np.float32).reshape(n, 1), np.arange(n))
    indices = list(range(n)) if sampler is None else sampler
    bad = next((v for v in indices if isinstance(v, (bool, float)) or not 0 <= v < n), None)
    try:
        batches = list(ndl.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler))
    except ValueError as e:
        assert not is_size(batch_size, 1) or bad is not None, f"{e}: refused a valid loader"
        assert "batch_size" in str(e) if not is_size(batch_size, 1) else "sampler gave index" in str(e), e
        return
    assert is_size(batch_size, 1) and bad is None, f"accepted batch_size={batch_size!r}, sampler {sampler}"
    seen = [int(v) for _, labels in batches for v in labels.numpy()]
    assert all(len(b[0].shape) == 2 and len(b[1].numpy()) <= batch_size for b in batches)
    assert (sorted(seen) if shuffle else seen) == [int(v) for v in indices], (seen, indices)


@pytest.mark.parametrize("examples", [pytest.param(EXAMPLES * 10), pytest.param(2000, marks=pytest.mark.slow)])
def test_data_loaders_with_drawn_arguments_give_every_sample_once_or_refuse_by_name(examples):
    @(fast if examples == EXAMPLES * 10 else slow)(examples)
    @given(loader=loaders())
    def go(loader):
        check_loader(*loader)
    go()


@pytest.mark.parametrize("examples", [pytest.param(EXAMPLES * 10), pytest.param(2000, marks=pytest.mark.slow)])
def test_batchify_and_get_batch_with_drawn_arguments_slice_as_numpy_or_refuse_by_name(examples):
    @(fast if examples == EXAMPLES * 10 else slow)(examples)
    @given(length=st.integers(0, 12), batch_size=SIZES, i=SIZES, bptt=SIZES)
    def go(length, batch_size, i, bptt):
        ids = list(range(length))
        try:
            batches = ndl.data.batchify(ids, batch_size)
        except ValueError as e:
            assert not is_size(batch_size, 1) or length < batch_size, e
            return
        rows = length // batch_size
        np.testing.assert_array_equal(batches, np.array(ids[:rows * batch_size]).reshape(batch_size, rows).T)
        try:
            data, target = ndl.data.get_batch(batches, i, bptt)
        except ValueError as e:
            assert not is_size(i, 0) or not is_size(bptt, 1) or i + 1 >= rows, e
            return
        seq = min(bptt, rows - 1 - i)
        np.testing.assert_array_equal(data.numpy(), batches[i:i + seq])
        np.testing.assert_array_equal(target.numpy(), batches[i + 1:i + 1 + seq].reshape(-1))
    go()
