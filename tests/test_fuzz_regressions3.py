"""What round three of the fuzzers (test_call_fuzz, test_storage_fuzz, test_optimizer_fuzz, and
the three bugs round two left open) found, each kept as the smallest example that failed."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc import backend_ndarray as nd

nn = ndl.nn


def embedding_step():
    """(embedding, optimizer, step): a step that shifts its indices and labels by a tensor."""
    np.random.seed(0)
    emb, linear = nn.Embedding(5, 3), nn.Linear(3, 4)
    opt = ndl.optim.Adam(emb.parameters() + linear.parameters(), lr=0.1)

    def step(x, y, shift):
        opt.reset_grad()
        loss = nn.SoftmaxLoss()(linear(emb(x + shift).sum((1,))), y + shift)
        loss.backward()
        opt.step()
        return loss
    return emb, opt, step


def test_a_computed_gather_index_outside_the_table_raises_as_eager_and_keeps_the_state():
    """An index computed inside a compiled step (x + shift) selected a zero row where eager raised
    IndexError, and the step trained on it; only indices that were inputs were checked. Now the
    program counts them, keeps its state unless the count is 0, and the call raises."""
    emb, opt, step = embedding_step()
    compiled = ndl.compile(step)
    x, y = np.array([[0, 1], [2, 3]]), np.array([0, 1])
    for _ in range(4):  # the third call on builds the entry: both paths check
        compiled(x, y, np.array(0))
    weight, t = emb.weight.numpy().copy(), float(opt.t.numpy())
    for shift in (4, -1):
        with pytest.raises(IndexError, match=r"step: [1-4] of the indices it computed for its gather from 5 "
                                             r"rows \(at .*test_fuzz_regressions3.py:\d+\) are outside \[0, 5\)"):
            compiled(x, y, np.array(shift))
        with pytest.raises(IndexError, match=r"gather: index"):
            step(ndl.Tensor(x), ndl.Tensor(y), ndl.Tensor(np.array(shift)))
        emb.weight.data = ndl.Tensor(weight.copy())  # the eager step raised before changing it too
    np.testing.assert_array_equal(emb.weight.numpy(), weight)
    assert float(opt.t.numpy()) == t
    compiled(x, y, np.array(1))
    assert float(opt.t.numpy()) == t + 1


@pytest.mark.parametrize("values", [[1.0, 2.0], [np.nan, 0.0], [np.inf, 2.0], [-2.0, 0.0], [2.0, 20.0]])
def test_a_computed_float_index_that_is_not_a_row_raises_as_eager(values):
    """emb(a / 2) with a = 1 (a fraction), NaN, Inf, -2 or 20 selected row 0 or a zero row
    compiled (the cast truncated it), where eager raises."""
    np.random.seed(0)
    emb = nn.Embedding(5, 3)
    compiled = ndl.compile(lambda a: emb(a / 2))
    np.testing.assert_array_equal(compiled(np.array([0.0, 2.0], np.float32)).numpy(), emb.weight.numpy()[[0, 1]])
    with pytest.raises(IndexError, match=r"1 of the indices it computed for its gather from 5 rows"):
        compiled(np.array(values, np.float32))
    with pytest.raises(IndexError, match=r"gather: index"):
        emb(ndl.Tensor(np.array(values, np.float32)) / 2)


def test_computed_labels_past_the_last_class_raise_as_eager():
    """SoftmaxLoss(logits, y + 1) with a label reaching the class count: a zero one-hot row
    compiled, dropping the sample from the loss silently."""
    f = lambda z, y: nn.SoftmaxLoss()(z, y + 1)  # noqa: E731
    z = np.zeros((2, 3), np.float32)
    compiled = ndl.compile(f)
    assert compiled(z, np.array([0, 1])).numpy() == pytest.approx(np.log(3))
    with pytest.raises(ValueError, match=r"1 of the indices it computed for its one_hot over 3 classes"):
        compiled(z, np.array([0, 2]))
    with pytest.raises(ValueError, match=r"one_hot: label 3 is outside \[0, 3\)"):
        f(ndl.Tensor(z), ndl.Tensor(np.array([0, 2])))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("use, error, message", [
    (lambda: nn.Embedding(4, 2), IndexError, r"(index|holds) 0.5(,| is) not an integer"),
    (lambda: (lambda y: nn.SoftmaxLoss()(ndl.Tensor(np.zeros((2, 3), np.float32)), y)), ValueError,
     r"(label|holds) 0.5(,| is) not an integer"),
    (lambda: (lambda y: ndl.init.one_hot(3, y)), ValueError, r"(label|holds) 0.5(,| is) not an integer"),
], ids=["embedding", "softmax-loss", "one-hot"])
def test_fractional_indices_and_labels_are_refused_not_truncated(compiled, use, error, message):
    """Embedding indices and labels of 0.5 were truncated to 0, alike eagerly and compiled;
    PyTorch refuses float indices. Floats holding integers (needle's float batches) still work."""
    f = use()
    call = ndl.compile(f) if compiled else (lambda a: f(ndl.Tensor(a)))
    with pytest.raises(error, match=message):
        call(np.array([0.5, 1.0], np.float32))
    assert np.isfinite(call(np.array([0.0, 1.0], np.float32)).numpy()).all()


def test_ndarray_comparisons_with_nan_follow_needle():
    """NDArray `nan < 1` gives 1: needle builds < <= != from == and >= (1 - (a >= b)), and the
    NDArray backend keeps needle's definitions; Tensor comparisons follow IEEE (all false)."""
    a, b = nd.array(np.array([np.nan, 1.0], np.float32)), nd.array(np.array([1.0, np.nan], np.float32))
    got = {op: (getattr(a, op)(b)).numpy().tolist() for op in ("__lt__", "__le__", "__ne__", "__gt__", "__ge__")}
    assert got == {"__lt__": [1, 1], "__le__": [1, 1], "__ne__": [1, 1], "__gt__": [0, 0], "__ge__": [0, 0]}
    t, u = ndl.Tensor(a.numpy()), ndl.Tensor(b.numpy())
    assert not (t < u).numpy().any() and not (t <= u).numpy().any()


# files: a full disk is simulated by RLIMIT_FSIZE in a child process (writes past it fail with EFBIG)

FULL_DISK = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
import numpy as np, ndlc as ndl
"""


def run_full(code, limit, tmp_path, **env):
    import os
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", FULL_DISK + code, str(limit)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env),
                          cwd=tmp_path)
    return done.returncode, done.stdout, done.stderr


def test_a_checkpoint_saved_onto_a_full_disk_is_a_checkpoint_error_and_keeps_the_old_file(tmp_path):
    """np.savez's OSError (EFBIG, ENOSPC) escaped ndl.save unnamed; the old file was kept."""
    ndl.save({"w": np.zeros(3)}, tmp_path / "c.npz")
    before = (tmp_path / "c.npz").read_bytes()
    code = ("try:\n    ndl.save({'w': np.ones((100, 100))}, 'c.npz')\n"
            "except ndl.CheckpointError as e:\n    print('refused:', e)\n")
    rc, out, err = run_full(code, 20000, tmp_path)
    assert rc == 0, err
    assert "refused: cannot write checkpoint c.npz: File too large; any file there is left as it was" in out
    assert (tmp_path / "c.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temporary file left


def test_a_checkpoint_saved_onto_a_folder_is_a_checkpoint_error(tmp_path):
    """os.replace's IsADirectoryError named the temporary file, not the checkpoint."""
    with pytest.raises(ndl.CheckpointError, match=r"cannot write checkpoint .*: Is a directory"):
        ndl.save({"w": np.ones(2)}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_compiling_on_a_full_disk_runs_without_its_cache(tmp_path):
    """Writing the linker's objects raised EFBIG through shared.link (the thread team's library is
    linked at the first compile): a crash instead of MCJIT; the cache left its partial .tmp files."""
    code = """
np.random.seed(0)
model = ndl.nn.Linear(3, 2)
opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
def step(x, y):
    opt.reset_grad()
    loss = ndl.nn.SoftmaxLoss()(model(x), y)
    loss.backward()
    opt.step()
    return loss
step = ndl.compile(step)
x, y = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0, 1])
print(repr([float(step(x, y).numpy()) for _ in range(3)]))
"""
    rc, out, err = run_full(code, 1000, tmp_path, NDLC_CACHE_DIR=str(tmp_path / "cache"))
    assert rc == 0, err[-3000:]
    assert "continuing without it" in err  # (and "loading with MCJIT" where a linker is installed)
    rc, intact, err = run_full(code, 2**40, tmp_path, NDLC_CACHE_DIR=str(tmp_path / "other"))
    assert rc == 0 and out == intact, err[-3000:]
    assert not list((tmp_path / "cache").rglob("*.tmp"))


# data

@pytest.mark.parametrize("call, message", [
    (lambda: ndl.data.batchify(list(range(20)), 0), r"batchify: batch_size must be an integer >= 1, got 0"),
    (lambda: ndl.data.batchify(list(range(20)), 2.5), r"batchify: batch_size must be an integer >= 1, got 2.5"),
    (lambda: ndl.data.get_batch(np.zeros((10, 2)), -1, 3), r"get_batch: row i must be an integer >= 0, got -1"),
    (lambda: ndl.data.get_batch(np.zeros((10, 2)), 0, 2.5), r"get_batch: bptt must be an integer >= 1, got 2.5"),
    (lambda: ndl.data.RandomCrop(1.5), r"RandomCrop: padding must be an integer >= 0, got 1.5"),
    (lambda: ndl.data.RandomFlipHorizontal("0.5"), r"p must be a number in \[0, 1\], got '0.5'"),
    (lambda: ndl.data.NDArrayDataset(np.float32(1)), r"NDArrayDataset: array 0 is a float32 of no length"),
    (lambda: ndl.data.DataLoader(ndl.data.NDArrayDataset(np.ones(3)), batch_size=True),
     r"DataLoader: batch_size must be an integer >= 1, got True"),
    (lambda: list(ndl.data.DataLoader(ndl.data.NDArrayDataset(np.ones(3)), sampler=[0.5])),
     r"DataLoader: the sampler gave index 0.5; indices must be integers in \[0, 3\)"),
    (lambda: list(ndl.data.DataLoader(ndl.data.NDArrayDataset(np.ones(3)), sampler=[-1])),
     r"DataLoader: the sampler gave index -1"),
], ids=["batchify-0", "batchify-float", "get_batch-negative-row", "get_batch-float-bptt", "crop-float",
        "flip-text", "dataset-scalar", "loader-bool-batch", "sampler-float", "sampler-negative"])
def test_data_sizes_rows_and_indices_that_are_not_integers_in_range_are_refused(call, message):
    """batchify(data, 0) was a ZeroDivisionError, a float batch size or bptt a TypeError from a
    slice; get_batch(batches, -1, 3) returned 0 rows of data for 6 targets; RandomCrop(1.5) failed
    in np.pad at the first image; a sampler's 0.5 read sample 0 and its -1 the last sample."""
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("structure", [[], {"dict": [[[1], 2]]}, {"dict": [[None, 2]]}],
                         ids=["bare-list", "list-key", "none-key"])
def test_a_checkpoint_header_with_what_save_never_writes_is_corrupt(tmp_path, structure):
    """A bare JSON list loaded as [], a dict key that is a list was a TypeError (unhashable), None
    a key: ndl.save writes lists as {"list": ...} and keys as str or int only."""
    import json
    np.savez(tmp_path / "c.npz", __ndlc__=np.array(json.dumps({"format": 1, "structure": structure})))
    with pytest.raises(ndl.CheckpointError, match=r"c.npz is corrupt: its header describes"):
        ndl.load(tmp_path / "c.npz")


@pytest.mark.parametrize("make, message", [
    (lambda p: ndl.optim.SGD(p, lr=-0.1), r"SGD: lr must be a number in \[0, inf\), got -0.1"),
    (lambda p: ndl.optim.SGD(p, lr="0.1"), r"SGD: lr must be a number in \[0, inf\), got '0.1'"),
    (lambda p: ndl.optim.SGD(p, momentum=1.5), r"SGD: momentum must be a number in \[0, 1\), got 1.5"),
    (lambda p: ndl.optim.Adam(p, beta1=1.0), r"Adam: beta1 must be a number in \[0, 1\), got 1.0"),
    (lambda p: ndl.optim.Adam(p, lr=float("nan")), r"Adam: lr must be a number in \[0, inf\), got nan"),
    (lambda p: ndl.optim.Adam(p, eps=None), r"Adam: eps must be a number in \[0, inf\), got None"),
], ids=["negative-lr", "text-lr", "momentum-1.5", "beta1-1", "nan-lr", "none-eps"])
def test_an_optimizer_refuses_hyperparameters_pytorch_refuses(make, message):
    """A beta1 of 1 or a NaN lr trained on NaN without a word, eagerly and compiled; a text lr
    failed at the first step as "unsupported dtype str96"; a momentum of 1.5 diverged."""
    with pytest.raises(ValueError, match=message):
        make(nn.Linear(2, 2).parameters())


SCALES, LAYERS, WEIGHTS = [1.0, 2.0], [], {}


@pytest.mark.parametrize("change", [
    lambda: SCALES.__setitem__(1, 5.0),
    lambda: globals().__setitem__("SCALES", [1.0, 7.0]),
    lambda: setattr(LAYERS[0].weight, "data", ndl.Tensor(np.ones((3, 3), np.float32))),
    lambda: LAYERS[0].bias.numpy().__setitem__(..., 4.0),
    lambda: WEIGHTS["w"].numpy().__setitem__(0, 8.0),
    lambda: WEIGHTS.__setitem__("w", ndl.Tensor(np.full(3, 2.0, np.float32))),
], ids=["number-in-a-list", "list-rebound", "module-in-a-list", "in-place-in-a-list", "tensor-in-a-dict",
        "tensor-replaced-in-a-dict"])
def test_a_compiled_function_sees_what_changed_in_the_lists_and_dicts_it_reads(change):
    """Numbers in a global list and tensors or modules reached through a global list or dict were
    compiled in as constants and never guarded: after `SCALES[1] = 5.0`, `LAYERS[0].weight.data =
    ...` or `WEIGHTS["w"].numpy()[0] = 8`, the compiled function (full path and entry alike) went on
    with the old values. Now such containers are state roots or guarded by their items."""
    np.random.seed(0)
    SCALES[:] = [1.0, 2.0]
    LAYERS[:] = [nn.Linear(3, 3)]
    WEIGHTS["w"] = ndl.Tensor(np.ones(3, np.float32), requires_grad=False)
    f = lambda a: LAYERS[0](a) * SCALES[1] + WEIGHTS["w"]  # noqa: E731
    compiled, x = ndl.compile(f), np.arange(6, dtype=np.float32).reshape(2, 3)
    for i in range(5):
        if i == 3:  # the third call ran through the entry
            change()
        np.testing.assert_allclose(compiled(x).numpy(), f(ndl.Tensor(x)).numpy(), rtol=1e-5, atol=1e-6)
    SCALES[:] = [1.0, 2.0]
