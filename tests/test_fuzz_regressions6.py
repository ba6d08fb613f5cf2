"""What round six's red team found running needle's public homework suites against ndlc, needle
programs compiled with inputs users get wrong, and the command line with bad paths: each kept as
the smallest example that failed."""
import gc
import os
import pickle

import numpy as np
import pytest

import ndlc as ndl
from ndlc.cli import main
from test_cli import _fashion_like
from test_cli_errors import dumped, refused  # noqa: F401 (dumped: a fixture)

nn = ndl.nn


def test_train_refuses_a_checkpoint_folder_it_cannot_create_before_training(tmp_path, capsys):
    """`--checkpoint FILE/sub` (a folder under a file) was found only when the first epoch's
    checkpoint was saved, after that epoch's training, and the message did not name
    --checkpoint: the folder is now created and written to before the data loads."""
    _fashion_like(tmp_path, 64)
    (tmp_path / "file").write_text("")
    common = ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress"]
    refused(capsys, common + ["--checkpoint", str(tmp_path / "file" / "sub")], "--checkpoint", "file/sub",
            "cannot create the folder")
    assert capsys.readouterr().out == ""  # no epoch ran
    assert main(common + ["--checkpoint", str(tmp_path / "new" / "deeper")]) == 0
    assert (tmp_path / "new" / "deeper" / "last.npz").is_file()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no file can be created")
def test_outputs_in_a_folder_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys):
    """A folder that exists but takes no new file (/proc; a read-only mount) passed the up-front
    checks of --plot, --log-json and --checkpoint, so an epoch trained before the write failed."""
    _fashion_like(tmp_path, 64)
    common = ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress"]
    for option in ("--plot", "--log-json"):
        refused(capsys, common + [option, "/proc/curves.png"], option, "/proc/curves.png", "cannot write in /proc")
    refused(capsys, common + ["--checkpoint", "/proc/ndlc-checkpoints"], "--checkpoint", "cannot create the folder")
    refused(capsys, ["dump", "traced", "-o", "/proc/step.ir"], "--output", "cannot write in /proc")
    assert capsys.readouterr().out == ""


def test_train_refuses_a_plot_format_matplotlib_cannot_write_before_training(tmp_path, capsys):
    """`--plot curves.txt` trained an epoch, then matplotlib's ValueError ended the run with a
    traceback; the extension is now checked against matplotlib's formats first."""
    pytest.importorskip("matplotlib")
    _fashion_like(tmp_path, 64)
    common = ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress"]
    refused(capsys, common + ["--plot", str(tmp_path / "curves.txt")], "--plot", "cannot write .txt", "png")
    assert capsys.readouterr().out == ""


def test_a_cached_data_cast_with_astype_as_hw2s_tests_do():
    """hw2's optimizer tests cast `cached_data` (a numpy array under needle's numpy backend) with
    `.astype(np.uint8)`; ndlc's cached_data is needle's NDArray, which had no astype: 13 of hw2's
    tests stopped there. It is a compact copy in the new dtype, the original unchanged."""
    labels = ndl.Tensor(np.array([[3, 1], [0, 2]]))
    cast = labels.cached_data.astype(np.uint8)
    assert isinstance(cast, ndl.NDArray) and cast.dtype == "uint8" and cast.is_compact()
    np.testing.assert_array_equal(cast.numpy(), [[3, 1], [0, 2]])
    cast.numpy()[0, 0] = 7
    assert labels.numpy()[0, 0] == 3
    halves = ndl.Tensor(np.array([0.5, 1.5], np.float32)).cached_data[1:].astype("float64")
    assert halves.dtype == "float64" and halves.numpy().tolist() == [1.5]


def test_autograd_module_gives_needles_topological_order_and_live_tensor_count():
    """hw1's find_topo_sort tests and hw2's memory checks read `ndl.autograd`, which ndlc lacked."""
    a, b = ndl.Tensor(np.array([1.0, 2.0])), ndl.Tensor(np.array([3.0, 4.0]))
    c = a * b
    d = c + a
    e = ndl.exp(d) * c
    order = ndl.autograd.find_topo_sort([e])
    np.testing.assert_allclose(np.array([t.numpy() for t in order]),
                               [a.numpy(), b.numpy(), c.numpy(), d.numpy(), np.exp(d.numpy()), e.numpy()])
    gc.collect()
    before = ndl.autograd.TENSOR_COUNTER
    extra = [ndl.Tensor(np.ones(2)) for _ in range(5)]
    assert ndl.autograd.TENSOR_COUNTER == before + 5
    del extra
    gc.collect()
    assert ndl.autograd.TENSOR_COUNTER == before
    with pytest.raises(AttributeError, match="no attribute 'COUNTER'"):
        ndl.autograd.COUNTER


def test_a_scalar_given_as_an_array_of_one_number_is_that_number():
    """hw1 divides by `scalar=np.random.randn(1)`, which needle's numpy backend broadcasts; ndlc
    refused every array. One number whose broadcast keeps the operand's shape is that number,
    eagerly, its gradient and compiled; other arrays are still refused, naming their shape."""
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    t = ndl.Tensor(x, requires_grad=True)
    out = ndl.divide_scalar(t, np.array([4.0]))
    out.sum().backward()
    np.testing.assert_array_equal(out.numpy(), x / np.float32(4))
    np.testing.assert_array_equal(t.grad.numpy(), np.full((2, 3), 0.25, np.float32))
    compiled = ndl.compile(lambda v: ndl.add_scalar(v, np.array([[2]])))
    np.testing.assert_array_equal(compiled(x).numpy(), x + 2)
    for bad, shape in ((np.array([1.0, 2.0]), r"\(2,\)"), (np.ones((1, 1, 1)), r"\(1, 1, 1\)")):
        with pytest.raises(ndl.errors.AttrError, match=f"divide_scalar: .* array of shape {shape} for an operand of rank 2"):
            ndl.divide_scalar(t, bad)
    with pytest.raises(ndl.errors.AttrError, match="array of shape"):
        ndl.mul_scalar(t, np.array(["2"]))


def _cifar_batch(folder, labels):
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((len(labels), 3072), np.uint8), b"labels": labels}, f)


def test_a_cifar_batch_with_a_label_outside_its_ten_classes_is_refused_naming_the_file(tmp_path):
    """A label of 12 (a corrupt or foreign batch) loaded silently and surfaced, if ever, as a
    SoftmaxLoss error far from the file; labels are now checked where the batch is read."""
    _cifar_batch(tmp_path, [1, 12])
    with pytest.raises(ValueError, match=r"test_batch: label 12 of image 1 is outside \[0, 10\)"):
        ndl.data.CIFAR10Dataset(str(tmp_path), train=False)
    _cifar_batch(tmp_path, [1.5, 2.0])
    with pytest.raises(ValueError, match="test_batch: labels must be integers in .* float64 labels"):
        ndl.data.CIFAR10Dataset(str(tmp_path), train=False)
    _cifar_batch(tmp_path, [0, 9])
    assert [int(ndl.data.CIFAR10Dataset(str(tmp_path), train=False)[i][1]) for i in (0, 1)] == [0, 9]


def test_a_corpus_file_that_is_not_utf8_is_a_valueerror_naming_it(tmp_path):
    """A test.txt holding bytes that are not UTF-8 raised UnicodeDecodeError from inside the
    reader, naming neither the file nor the corpus; a negative max_lines read nothing silently."""
    (tmp_path / "train.txt").write_text("the cat sat\n")
    (tmp_path / "test.txt").write_bytes(b"the dog \xff\xfe sat\n")
    with pytest.raises(ValueError, match=r"Corpus: .*test.txt is not UTF-8 text \(byte 0xff"):
        ndl.data.Corpus(str(tmp_path))
    (tmp_path / "test.txt").write_text("the caf\u00e9 sat\n", encoding="utf-8")
    corpus = ndl.data.Corpus(str(tmp_path))
    assert corpus.dictionary.idx2word[corpus.test[1]] == "caf\u00e9"
    for bad in (-1, 1.5, "3"):
        with pytest.raises(ValueError, match="Corpus: max_lines must be an integer >= 0"):
            ndl.data.Corpus(str(tmp_path), max_lines=bad)


def _trained(optimizer, **settings):
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = optimizer(model.parameters(), **settings)

    def step(x, y):
        opt.reset_grad()
        loss = nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return model, opt, step


@pytest.mark.parametrize("optimizer, settings", [(ndl.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
                                                 (ndl.optim.Adam, {"lr": 0.01})])
def test_a_hyperparameter_set_after_construction_is_checked_as_the_constructor_checks_it(optimizer, settings):
    """`opt.lr = True` trained eagerly with lr 1 while the compiled step refused it; `'0.1'` and
    None failed inside the update with a dtype error naming no hyperparameter; a negative lr
    ascended. Each is now the constructor's ValueError naming it, the optimizer unchanged; a
    0-d numpy array is its number, eagerly and compiled alike (compiled refused it)."""
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0, 2])
    eager_model, eager_opt, eager_step = _trained(optimizer, **settings)
    model, opt, step = _trained(optimizer, **settings)
    compiled = ndl.compile(step)
    eager_step(ndl.Tensor(x), ndl.Tensor(y))
    compiled(x, y)
    for bad in (True, "0.1", None, -0.1, float("nan"), np.array([0.05])):
        with pytest.raises(ValueError, match=f"{optimizer.__name__}: lr must be a number in"):
            opt.lr = bad
    assert opt.lr == settings["lr"]
    eager_opt.lr = opt.lr = np.array(0.05)
    assert opt.lr == 0.05 and not isinstance(opt.lr, np.ndarray)
    np.testing.assert_allclose(compiled(x, y).numpy(), eager_step(ndl.Tensor(x), ndl.Tensor(y)).numpy(), rtol=1e-6)
    for mine, theirs in zip(model.parameters(), eager_model.parameters()):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)


def _ones(*shape):
    return ndl.Tensor(np.ones(shape, np.float32))


def test_a_recurrent_state_of_the_wrong_form_is_a_valueerror_naming_the_module():
    """LSTM given a lone tensor (or a 1-tuple, or a None half) for (h0, c0) failed unpacking it
    with Python's TypeError; RNNCell given (h,) broadcast the tuple as a tensor and returned a
    (1, batch, hidden) state silently; RNN given a pair died on `tuple.ndim`. Each now names the
    module and what it got, eagerly and compiled; the forms that work are unchanged."""
    x = _ones(5, 2, 3)
    for module, state, message in (
            (nn.LSTM(3, 4), _ones(1, 2, 4), r"LSTM\(3, 4, num_layers=1\): the state must be a pair \(h0, c0\) of "
                                             r"tensors, or None, got a tensor of shape \(1, 2, 4\)"),
            (nn.LSTM(3, 4), (_ones(1, 2, 4),), "got a tuple of 1"),
            (nn.LSTM(3, 4), (_ones(1, 2, 4), None), r"got a tuple of 2 \(a tensor of shape \(1, 2, 4\), NoneType\)"),
            (nn.RNN(3, 4), (_ones(1, 2, 4), _ones(1, 2, 4)), r"RNN\(3, 4, num_layers=1\): h0 must be a tensor of shape"),
    ):
        with pytest.raises(ValueError, match=message):
            module(x, state)
    with pytest.raises(ValueError, match=r"LSTM\(3, 4, num_layers=1\): the state must be a pair"):
        ndl.compile(nn.LSTM(3, 4))(np.ones((5, 2, 3), np.float32), np.ones((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"RNNCell\(3, 4\): h must be a tensor of shape \(2, 4\), got a tuple of 1"):
        nn.RNNCell(3, 4)(_ones(2, 3), (_ones(2, 4),))
    with pytest.raises(ValueError, match=r"LSTMCell\(3, 4\): the state must be a pair"):
        nn.LSTMCell(3, 4)(_ones(2, 3), _ones(2, 4))
    lstm = nn.LSTM(3, 4)
    pair = [_ones(1, 2, 4), _ones(1, 2, 4)]
    np.testing.assert_array_equal(lstm(x, pair)[0].numpy(), lstm(x, tuple(pair))[0].numpy())
    assert nn.LSTMCell(3, 4)(_ones(2, 3), tuple(p.reshape((2, 4)) for p in pair))[1].shape == (2, 4)


@pytest.mark.parametrize("make", [lambda: nn.RNN(3, 4), lambda: nn.LSTM(3, 4, num_layers=2)])
def test_an_empty_sequence_is_refused_by_the_module_eagerly_and_compiled(make):
    """A (0, batch, features) sequence was refused by `ndl.scan` inside the module, naming the
    gates' internal shape (0, 2, 16), not the module or the input; PyTorch refuses it too."""
    message = r"\(3, 4, num_layers=\d\): the input sequence is empty \(shape \(0, 2, 3\)\)"
    with pytest.raises(ValueError, match=message):
        make()(_ones(0, 2, 3))
    with pytest.raises(ValueError, match=message):
        ndl.compile(make())(np.ones((0, 2, 3), np.float32))


def test_ndlc_run_reads_a_graph_file_saved_with_a_byte_order_mark(dumped, tmp_path, capsys):
    """A stage edited in an editor that writes UTF-8 with a byte-order mark was refused at line 1,
    column 1 (`unexpected character '\\ufeff'`); the mark is not part of the text."""
    text = (dumped / "step.ir").read_text()
    (tmp_path / "bom.ir").write_bytes(b"\xef\xbb\xbf" + text.encode())
    for name in ("step", "bom"):
        source = dumped / "step.ir" if name == "step" else tmp_path / "bom.ir"
        assert main(["run", str(source), "--input", str(dumped / "step.npz"), "--output",
                     str(tmp_path / f"{name}.npz")]) == 0
    with np.load(tmp_path / "step.npz") as plain, np.load(tmp_path / "bom.npz") as marked:
        assert plain.files == marked.files
        for key in plain.files:
            np.testing.assert_array_equal(plain[key], marked[key])


def test_compiling_a_module_class_instead_of_a_module_names_the_mistake():
    """`ndl.compile(nn.Linear)(4, 3)` traced the constructor with its arguments as tensors and
    failed with `in_features must be a positive integer, got ndlc.Tensor(<symbolic i64[]>)`."""
    with pytest.raises(ndl.NdlcError, match=r"not the class Linear \(compile an instance: ndl.compile\(Linear\(...\)\)\)"):
        ndl.compile(nn.Linear)
    assert ndl.compile(nn.Linear(4, 3))(np.ones((2, 4), np.float32)).shape == (2, 3)


@pytest.mark.parametrize("make, name, value", [
    (lambda: nn.Dropout(0.5), "p", 1.0), (lambda: nn.Dropout(0.5), "p", -0.5), (lambda: nn.Dropout(0.5), "p", None),
    (lambda: nn.BatchNorm1d(3), "eps", -1.0), (lambda: nn.BatchNorm1d(3), "eps", "x"),
    (lambda: nn.BatchNorm1d(3), "momentum", 2.0), (lambda: nn.LayerNorm1d(3), "eps", float("nan"))])
def test_a_module_setting_set_later_is_checked_where_forward_reads_it(make, name, value):
    """Dropout checked p only when made, BatchNorm and LayerNorm never: `drop.p = 1.0` gave NaN,
    `bn.eps = -1` NaN, `bn.momentum = 2` running statistics extrapolated past the batch's, and
    text a dtype error naming no setting, eagerly and compiled alike. Each is now a ValueError
    naming the module and setting, eagerly and compiled, and when made with it."""
    x = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    module = make()
    compiled = ndl.compile(module)
    compiled(x)
    setattr(module, name, value)
    message = rf"{type(module).__name__}: {name} must be in \["
    with pytest.raises(ValueError, match=message):
        module(ndl.Tensor(x))
    with pytest.raises(ValueError, match=message):
        compiled(x)
    with pytest.raises(ValueError, match=message):
        type(module)(**{name: value}) if isinstance(module, nn.Dropout) else type(module)(3, **{name: value})


def test_batchnorm_in_eval_mode_reads_no_momentum():
    """The momentum only moves the running statistics in training mode: eval mode takes any."""
    norm = nn.BatchNorm1d(3)
    norm.eval()
    norm.momentum = float("nan")
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(ndl.compile(norm)(x).numpy(), norm(ndl.Tensor(x)).numpy())


def test_a_missing_mnist_file_is_not_answered_with_advice_that_does_not_apply(tmp_path, monkeypatch):
    """hw2's MNISTDataset("data/train-images-idx3-ubyte.gz", ...) with the file missing advised
    setting NDLC_DATA, which MNISTDataset never reads (FashionMNIST does): with it set to a folder
    holding the files, the same error came back."""
    missing = tmp_path / "data" / "train-images-idx3-ubyte.gz"
    monkeypatch.setenv("NDLC_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz \(MNISTDataset reads the paths it "
                                                r"is given: NDLC_DATA applies to FashionMNIST\)") as refused:
        ndl.data.MNISTDataset(str(missing), str(missing))
    assert "set NDLC_DATA" not in str(refused.value)
