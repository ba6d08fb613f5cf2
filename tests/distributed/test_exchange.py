"""A step cut at an exchange, without MPI: the split of its graph, the two programs and the flat
buffers between them (a test hook stands for the all-reduce); DistributedSampler's split of an
epoch and DataLoader's use of it."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc.distributed import DistributedSampler
from ndlc.jit.capture import capture
from ndlc.jit.compile import compile_graph
from ndlc.jit.exchange import SplitSpecialisation
from ndlc.frontend.context import active_context
from ndlc.errors import NdlcError
from ndlc.ir.types import TensorType


class ScaledOptimizer(ndl.optim.Optimizer):
    """Exchanges the gradients through a hook that scales them by `factor` and records them."""

    def __init__(self, optimizer, factor):
        super().__init__(optimizer.params)
        self.optimizer, self.factor, self.seen, self.fingerprints = optimizer, factor, [], []

    def step(self):
        params = [p for p in self.params if p.grad is not None]
        for p, g in zip(params, active_context().exchanged([p.grad for p in params], self)):
            p.grad = g
        self.optimizer.step()

    def __call__(self, buffers):
        self.seen.append([b.copy() for b in buffers])
        for b in buffers:
            b *= self.factor

    def compiled(self, fingerprint):
        self.fingerprints.append(fingerprint)


def mlp():
    np.random.seed(0)
    return ndl.nn.Sequential(ndl.nn.Linear(6, 8), ndl.nn.ReLU(), ndl.nn.Linear(8, 3))


def step_of(model, optimizer):
    def train_step(x, y):
        optimizer.reset_grad()
        loss = ndl.nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return train_step


def data(n=16):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 6), dtype=np.float32), rng.integers(0, 3, n)


def test_the_hook_sees_the_gradients_in_one_flat_buffer_and_the_update_reads_its_result():
    x, y = data()
    model, reference = mlp(), mlp()
    eager = ndl.nn.SoftmaxLoss()(reference(ndl.Tensor(x)), ndl.Tensor(y))
    eager.backward()
    gradients = np.concatenate([p.grad.numpy().ravel() for p in reference.parameters()])
    optimizer = ScaledOptimizer(ndl.optim.SGD(model.parameters(), lr=0.1), 0.5)
    step = ndl.compile(step_of(model, optimizer))
    loss = step(x, y)
    np.testing.assert_allclose(float(loss.numpy()), float(eager.numpy()), rtol=1e-6)
    (flat,), = optimizer.seen
    np.testing.assert_allclose(flat, gradients, rtol=1e-5, atol=1e-7)
    for p, q in zip(model.parameters(), reference.parameters()):  # the update used the halved gradients
        np.testing.assert_allclose(p.numpy(), q.numpy() - 0.05 * q.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert len(optimizer.fingerprints) == 1


def test_the_gradient_program_writes_every_gradient_into_the_flat_buffer_itself():
    model = mlp()
    optimizer = ScaledOptimizer(ndl.optim.Adam(model.parameters(), lr=0.01), 1.0)
    step = ndl.compile(step_of(model, optimizer))
    step(*data())
    split = step.last
    gradients = split.programs[0].kernels
    assert [gradients.buffers[name].kind for name in split.into[0]] == ["output"] * 4
    assert "program @train_step_0" in step.ir("planned") and "program @train_step_1" in step.ir("planned")


def test_two_steps_through_an_identity_exchange_match_the_uncut_step():
    x, y = data()
    cut, whole = mlp(), mlp()
    steps = [ndl.compile(step_of(cut, ScaledOptimizer(ndl.optim.Adam(cut.parameters(), lr=0.01), 1.0))),
             ndl.compile(step_of(whole, ndl.optim.Adam(whole.parameters(), lr=0.01)))]
    for _ in range(3):
        losses = [float(s(x, y).numpy()) for s in steps]
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for p, q in zip(cut.parameters(), whole.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-5, atol=1e-6)


def test_what_follows_the_exchange_may_read_the_batch_and_values_computed_before_it():
    x, y = data()
    cut, whole = mlp(), mlp()

    def after_update(model, optimizer):
        def train_step(x, y):
            optimizer.reset_grad()
            logits = model(x)
            loss = ndl.nn.SoftmaxLoss()(logits, y)
            loss.backward()
            optimizer.step()
            return (model(x) - logits).sum()  # reads the batch and the logits after the update
        return train_step
    optimizer = ScaledOptimizer(ndl.optim.SGD(cut.parameters(), lr=0.1), 1.0)
    got = ndl.compile(after_update(cut, optimizer))(x, y)
    expected = ndl.compile(after_update(whole, ndl.optim.SGD(whole.parameters(), lr=0.1)))(x, y)
    np.testing.assert_allclose(float(got.numpy()), float(expected.numpy()), rtol=1e-4)
    assert float(got.numpy()) != 0.0


def test_check_mode_refuses_a_cut_step():
    model = mlp()
    optimizer = ScaledOptimizer(ndl.optim.SGD(model.parameters(), lr=0.1), 1.0)
    with pytest.raises(NdlcError, match="check mode does not run a step cut at an exchange"):
        ndl.compile(step_of(model, optimizer), check=True)(*data())


def test_a_cut_step_on_another_device_is_refused():
    model = mlp()
    optimizer = ScaledOptimizer(ndl.optim.SGD(model.parameters(), lr=0.1), 1.0)
    captured = capture(step_of(model, optimizer), [TensorType.of(a) for a in data()])
    with pytest.raises(NdlcError, match="runs on the CPU only, not device='cuda'"):
        SplitSpecialisation(captured, False, compile_graph, device="cuda")


def test_the_ranks_shares_partition_the_epoch_and_join_into_the_global_batches():
    dataset = list(range(100))
    shares = [list(DistributedSampler(dataset, r, 4, seed=3)) for r in range(4)]
    assert all(len(s) == 25 for s in shares)
    assert sorted(sum(shares, [])) == dataset
    order = [i for batch in zip(*[s[:5] for s in shares]) for i in batch]
    assert sorted(order) == sorted(np.random.default_rng([3, 0]).permutation(100)[:20].tolist())


def test_the_sampler_reshuffles_by_epoch_and_pads_by_repeating():
    dataset = list(range(10))
    sampler = DistributedSampler(dataset, 2, 4)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and len(first) == 3
    padded = sum((list(DistributedSampler(dataset, r, 4, shuffle=False)) for r in range(4)), [])
    assert sorted(padded) == [0, 0, 1, 1] + list(range(2, 10))


def test_without_padding_the_shares_hold_each_index_once():
    shares = [list(DistributedSampler(range(10), r, 4, pad=False)) for r in range(4)]
    assert [len(s) for s in shares] == [3, 3, 2, 2]
    assert sorted(sum(shares, [])) == list(range(10))


def test_a_sampler_with_a_rank_outside_the_world_is_refused():
    with pytest.raises(NdlcError, match=r"rank must be in \[0, size\)"):
        DistributedSampler(range(10), 2, 2)


def test_data_loader_batches_the_samplers_indices():
    dataset = ndl.data.NDArrayDataset(np.arange(10, dtype=np.float32).reshape(10, 1))
    loader = ndl.data.DataLoader(dataset, 2, sampler=DistributedSampler(dataset, 1, 2, shuffle=False))
    assert len(loader) == 3
    assert [b[0].numpy().ravel().tolist() for b in loader] == [[1, 3], [5, 7], [9]]
    with pytest.raises(ValueError, match="sampler and shuffle exclude each other"):
        ndl.data.DataLoader(dataset, 2, shuffle=True, sampler=[0])


def test_sync_batchnorm_without_distributed_is_refused(capsys):
    from ndlc.cli import main
    with pytest.raises(SystemExit):
        main(["train", "--sync-batchnorm"])
    assert "--sync-batchnorm needs --distributed" in capsys.readouterr().err
