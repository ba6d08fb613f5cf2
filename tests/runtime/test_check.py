"""Check mode names the kernel that computes a wrong value, its graph nodes and their source lines."""
import re

import numpy as np
import pytest

from ndlc.ir import get_op, parse
from ndlc.ir import scalar as S
from ndlc.jit.compile import compile_graph

GRAPH = """
graph @mlp(%x: f32[8,4], %w: f32[4,3], %b: f32[3]) {
  %0 = matmul(%x, %w) : f32[8,3]
  %1 = broadcast_to(%b, shape=(8, 3)) : f32[8,3]
  %2 = add(%0, %1) : f32[8,3]
  %3 = tanh(%2) : f32[8,3]
  %4 = summation(%3, axes=(1,)) : f32[8]
  %5 = exp(%4) : f32[8]
  return %5, %3
}"""


def inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32) for s in [(8, 4), (4, 3), (3,)]]


def test_a_correct_program_reports_nothing_and_its_results_are_unchanged():
    program = compile_graph(parse(GRAPH))
    before = [r.copy() for r in program.run(*inputs())]
    assert program.check(*inputs()) is None
    for got, want in zip(program.run(*inputs()), before):
        np.testing.assert_array_equal(got, want)


def test_a_planted_wrong_lowering_is_named(monkeypatch):
    monkeypatch.setenv("NDLC_PROGRAM_CACHE", "0")  # the same graph, compiled before the fault, is cached
    monkeypatch.setattr(get_op("tanh"), "scalar", lambda x: S.tanh(x) * 1.5)
    program = compile_graph(parse(GRAPH))
    divergence = program.check(*inputs())
    assert divergence is not None and divergence.buffer == "3"
    report = str(divergence)
    assert report.startswith(f"kernel {divergence.kernel.name} computes %3 wrong")
    assert "%3 tanh" in report and "store %3[" in report


def test_check_mode_names_the_wrong_kernel_of_a_training_step_and_the_users_line(monkeypatch):
    import ndlc as ndl
    from ndlc.examples.train_mlp import build_mlp, training_step
    np.random.seed(0)
    model = build_mlp(6, (8,), 3)
    step = ndl.compile(training_step(model, ndl.optim.SGD(model.parameters(), lr=0.1)), check=True)
    x, y = np.random.rand(16, 6).astype(np.float32), np.random.randint(0, 3, 16)
    step(x, y)  # no fault: nothing reported, training proceeds
    monkeypatch.setattr(get_op("relu"), "scalar", lambda v: S.maximum(v, 0.0) * 1.25)
    step = ndl.compile(training_step(model, ndl.optim.SGD(model.parameters(), lr=0.1)), check=True)
    with pytest.raises(ndl.CheckError, match=r"kernel k\d+ computes %\d+ wrong") as error:
        step(x, y)
    assert re.search(r"%\d+ relu \(at .*test_check.py:\d+\)", str(error.value)), str(error.value)


def _mlp_step(check, seed=0):
    """A compiled MLP training step defined here, so that check mode's user lines point into this file."""
    import ndlc as ndl
    np.random.seed(seed)
    model = ndl.nn.Sequential(ndl.nn.Linear(6, 8), ndl.nn.ReLU(), ndl.nn.Linear(8, 3))
    optimizer = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = ndl.nn.SoftmaxLoss()

    def train_step(x, y):
        optimizer.reset_grad()
        loss = loss_fn(model(x), y)  # MODEL LINE
        loss.backward()
        optimizer.step()
        return loss
    return ndl.compile(train_step, check=check), model


def _batch():
    rng = np.random.default_rng(1)
    return rng.random((16, 6), dtype=np.float32), rng.integers(0, 3, 16)


def test_check_mode_leaves_a_correct_steps_results_and_state_unchanged():
    checked, checked_model = _mlp_step(check=True)
    plain, plain_model = _mlp_step(check=False)
    for _ in range(3):
        assert float(checked(*_batch()).numpy()) == float(plain(*_batch()).numpy())
    for got, want in zip(checked_model.parameters(), plain_model.parameters()):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_check_mode_names_the_kernel_holding_the_planted_fault_its_node_and_the_users_line(monkeypatch):
    import ndlc as ndl
    monkeypatch.setattr(get_op("relu"), "scalar", lambda v: S.maximum(v, 0.0) * 1.25)
    step, model = _mlp_step(check=True)
    before = [p.numpy().copy() for p in model.parameters()]
    with pytest.raises(ndl.CheckError) as error:
        step(*_batch())
    report = str(error.value)
    kernel, node = re.search(r"kernel (k\d+) computes %(\d+) wrong", report).groups()
    fuses = re.search(rf"^kernel {kernel} -> .*\n  fuses: (.*)$", step.ir("fused"), re.M).group(1)
    relu = re.search(r"%(\d+) relu", fuses).group(1)
    assert node == relu and f"%{relu} relu" in report.split("it fuses: ")[1].splitlines()[0]
    line = next(i for i, text in enumerate(open(__file__), 1) if text.rstrip().endswith("# MODEL LINE"))
    assert re.search(rf"%{relu} relu \(at .*test_check.py:{line}\)", report), report
    for got, want in zip(model.parameters(), before):  # a failed check runs nothing for real
        np.testing.assert_array_equal(got.numpy(), want)


def _healthy_steps_pass(make, batches):
    """Builds a seeded model and its training step twice (`make() -> (step function, model)`) and
    runs it compiled with check mode and without: no CheckError, and the same losses and weights."""
    import ndlc as ndl
    results = []
    for check in (True, False):
        fn, model = make()
        step = ndl.compile(fn, check=check)
        losses = [float(step(*batch).numpy()) for batch in batches]
        results.append((losses, [p.numpy().copy() for p in model.parameters()]))
    (checked, checked_weights), (plain, plain_weights) = results
    assert checked == plain
    for got, want in zip(checked_weights, plain_weights):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_batchnorm_mlp_step_passes_check_mode(optimizer):
    """Linear -> BatchNorm1d -> ReLU -> Linear: the first Linear's bias gradient is analytically zero
    (BatchNorm subtracts the mean), so it is rounding noise that Adam (without weight decay) turns
    into +-lr; any summation order makes other noise, and check mode must not call that wrong."""
    import ndlc as ndl
    from ndlc.examples.train_mlp import training_step
    from training_cases import batches
    nn = ndl.nn

    def make():
        np.random.seed(0)
        model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
        opt = (ndl.optim.Adam(model.parameters(), lr=1e-3) if optimizer == "adam"
               else ndl.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
        return training_step(model, opt), model
    _healthy_steps_pass(make, batches(4))
    with pytest.MonkeyPatch.context() as patch:  # a wrong ReLU in the same model is still named
        patch.setattr(get_op("relu"), "scalar", lambda v: S.maximum(v, 0.0) * 1.25)
        fn, _ = make()
        with pytest.raises(ndl.CheckError, match=r"kernel k\d+ computes %\d+ wrong") as error:
            ndl.compile(fn, check=True)(*batches(1)[0])
    assert re.search(r"%\d+ relu \(at ", str(error.value)), str(error.value)


def test_lenet_bn_steps_pass_check_mode():
    import ndlc as ndl
    from ndlc.examples.lenet import build_lenet
    from ndlc.examples.train_mlp import training_step
    rng = np.random.default_rng(0)
    data = [(rng.random((4, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 4)) for _ in range(2)]

    def make():
        np.random.seed(0)
        model = build_lenet()
        return training_step(model, ndl.optim.SGD(model.parameters(), lr=0.5)), model
    _healthy_steps_pass(make, data)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_sequence_model_steps_pass_check_mode(kind):
    """An embedding, a 2-layer LSTM or Transformer and a linear layer over the vocabulary, trained
    by Adam (the Transformer's key bias gradient is analytically zero: softmax ignores it)."""
    import ndlc as ndl
    rng = np.random.default_rng(0)
    data = [(rng.integers(0, 11, (5, 2)), rng.integers(0, 11, 10)) for _ in range(3)]

    def make():
        np.random.seed(0)
        model = _SequenceModel(kind)
        opt = ndl.optim.Adam(model.parameters(), lr=0.01)
        loss_fn = ndl.nn.SoftmaxLoss()

        def step(x, y):
            opt.reset_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return step, model
    _healthy_steps_pass(make, data)


def _SequenceModel(kind):
    """needle's hw4 language model over 11 ids: embedding, 2 layers, a linear layer per position."""
    import ndlc as ndl
    nn = ndl.nn

    class SequenceModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(11, 8)
            self.body = (nn.LSTM(8, 8, num_layers=2) if kind == "lstm"
                         else nn.Transformer(8, 16, 2, num_head=2, dim_head=4, sequence_len=8))
            self.linear = nn.Linear(8, 11)

        def forward(self, x):
            out, _ = self.body(self.embedding(x))
            return self.linear(out.reshape((out.shape[0] * out.shape[1], 8)))
    return SequenceModel()
