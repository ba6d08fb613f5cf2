"""ndl.data: idx reading, datasets, transforms and the DataLoader, on small files the tests write."""
import gzip
import struct

import numpy as np
import pytest

import ndlc as ndl
from ndlc.examples import train_mlp

FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def write_idx(path, array, compress=True):
    """Write a uint8 array as an MNIST idx file (gzipped when `compress`)."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + array.tobytes())
    return str(path)


def synthetic_mnist(n, seed=0, size=28):
    """Images whose brightest block says the label (learnable), and their uint8 labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        images[i, row * 10:row * 10 + 8, col * 5:col * 5 + 5] += 150
    return images, labels


def write_fashion_dir(directory, n_train=300, n_test=100):
    for split, n, seed in [("train", n_train, 1), ("test", n_test, 2)]:
        images, labels = synthetic_mnist(n, seed)
        write_idx(directory / FASHION_FILES[split][0], images)
        write_idx(directory / FASHION_FILES[split][1], labels)
    return directory


# ---- idx files --------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False])
def test_mnist_dataset_reads_idx_files(tmp_path, compress):
    images, labels = synthetic_mnist(5)
    data = ndl.data.MNISTDataset(write_idx(tmp_path / "img", images, compress),
                                 write_idx(tmp_path / "lbl", labels, compress))
    assert len(data) == 5
    x, y = data[3]
    assert x.shape == (784,) and x.dtype == np.float32 and y.dtype == np.uint8 and y == labels[3]
    np.testing.assert_allclose(x, images[3].reshape(-1) / 255.0, rtol=1e-6)
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0


def test_missing_file_names_the_path_and_how_to_get_the_data(tmp_path):
    missing = tmp_path / "nothing.gz"
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*apt-get install dataset-fashion-mnist"):
        ndl.data.MNISTDataset(str(missing), str(missing))


@pytest.mark.parametrize("content, message", [
    (b"\x00\x00\x08\x01" + struct.pack(">I", 10) + bytes(4), r"promises shape \(10,\).*holds 4"),
    (b"\x00\x00\x0d\x01" + struct.pack(">I", 2) + bytes(2), r"not an idx file.*magic 00000d01"),
    (b"\x00\x00\x08", r"not an idx file"),
    (b"\x00\x00\x08\x03\x00", r"truncated idx header"),
])
def test_bad_idx_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        ndl.data.read_idx(str(path), content[3] if len(content) > 3 else 1)


def test_truncated_gzip_is_refused(tmp_path):
    good = write_idx(tmp_path / "good.gz", synthetic_mnist(50)[0])
    bad = tmp_path / "bad.gz"
    bad.write_bytes(open(good, "rb").read()[:100])
    with pytest.raises(ValueError, match="not a readable idx file"):
        ndl.data.read_idx(str(bad), 3)


def test_image_and_label_counts_must_agree(tmp_path):
    images, labels = synthetic_mnist(4)
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        ndl.data.MNISTDataset(write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", labels[:3]))


def test_fashion_mnist_finds_files_under_ndlc_data(tmp_path, monkeypatch):
    write_fashion_dir(tmp_path, n_train=7, n_test=3)
    monkeypatch.setenv("NDLC_DATA", str(tmp_path))
    assert len(ndl.data.FashionMNIST(train=True)) == 7
    assert len(ndl.data.FashionMNIST(train=False)) == 3


def test_fashion_mnist_explains_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"not found in {tmp_path}.*dataset-fashion-mnist.*NDLC_DATA"):
        ndl.data.FashionMNIST(root=str(tmp_path))


# ---- transforms -------------------------------------------------------------------------
def test_random_flip_follows_one_draw_per_image():
    img = np.arange(12.0).reshape(2, 3, 2)
    flip = ndl.data.RandomFlipHorizontal(p=0.5)
    for seed in range(6):
        np.random.seed(seed)
        expected = img[:, ::-1] if np.random.rand() < 0.5 else img
        np.random.seed(seed)
        np.testing.assert_array_equal(flip(img), expected)


def test_random_crop_shifts_a_zero_padded_image():
    img = np.arange(1.0, 26.0).reshape(5, 5, 1)
    for seed in range(6):
        np.random.seed(seed)
        dx, dy = np.random.randint(-2, 3, size=2)
        expected = np.pad(img, ((2, 2), (2, 2), (0, 0)))[2 + dx:7 + dx, 2 + dy:7 + dy]
        np.random.seed(seed)
        np.testing.assert_array_equal(ndl.data.RandomCrop(2)(img), expected)


@pytest.mark.parametrize("make", [lambda: ndl.data.RandomFlipHorizontal(-0.1),
                                  lambda: ndl.data.RandomFlipHorizontal(1.5),
                                  lambda: ndl.data.RandomCrop(-1)])
def test_transforms_refuse_bad_settings(make):
    with pytest.raises(ValueError):
        make()


def test_mnist_transforms_run_per_image(tmp_path):
    images, labels = synthetic_mnist(3)
    data = ndl.data.MNISTDataset(write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", labels),
                                 transforms=[ndl.data.RandomFlipHorizontal(1.0)])
    x, y = data[np.array([0, 2])]
    expected = images[[0, 2], :, ::-1].reshape(2, -1) / 255.0
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    np.testing.assert_array_equal(y, labels[[0, 2]])


# ---- DataLoader -------------------------------------------------------------------------
def test_loader_batches_in_order_with_a_short_last_batch():
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    batches = list(ndl.data.DataLoader(ndl.data.NDArrayDataset(x, y), batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 2), (4, 2), (2, 2)]
    assert all(isinstance(t, ndl.Tensor) for b in batches for t in b) and isinstance(batches[0], tuple)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), y)
    assert batches[0][0].dtype == "float32"


def test_shuffled_loader_draws_a_fresh_permutation_each_epoch():
    y = np.arange(10)
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(y), batch_size=3, shuffle=True)
    np.random.seed(4)
    epochs = [np.concatenate([b[0].numpy() for b in loader]) for _ in range(2)]
    np.random.seed(4)
    expected = [np.random.permutation(10), np.random.permutation(10)]
    np.testing.assert_array_equal(epochs, expected)
    assert not np.array_equal(*epochs)


def test_loader_stacks_samples_of_a_plain_dataset():
    class Squares(ndl.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.array([i, i * i], dtype=np.float32), np.int64(i)

    xs, ys = zip(*ndl.data.DataLoader(Squares(), batch_size=2))
    np.testing.assert_array_equal(xs[1].numpy(), [[2, 4], [3, 9]])
    np.testing.assert_array_equal(ys[2].numpy(), [4])


@pytest.mark.parametrize("batch_size", [0, -3, 1.5])
def test_loader_refuses_bad_batch_sizes(batch_size):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        ndl.data.DataLoader(ndl.data.NDArrayDataset(np.zeros(3)), batch_size=batch_size)


def test_ndarray_dataset_needs_equal_lengths():
    with pytest.raises(ValueError, match="one length"):
        ndl.data.NDArrayDataset(np.zeros(3), np.zeros(4))


# ---- the example ------------------------------------------------------------------------
def test_example_mlp_has_needles_architecture():
    model = train_mlp.build_mlp()
    widths = [(m.in_features, m.out_features) for m in model.modules if isinstance(m, ndl.nn.Linear)]
    assert widths == [(784, 512), (512, 256), (256, 10)]
    assert sum(isinstance(m, ndl.nn.BatchNorm1d) for m in model.modules) == 2


def test_example_learns_synthetic_idx_data(tmp_path, capsys):
    write_fashion_dir(tmp_path, n_train=600, n_test=200)
    train_mlp.main(["--data", str(tmp_path), "--epochs", "2", "--batch-size", "64"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1: loss")
    assert float(lines[-1].split("test accuracy")[1].split()[0]) > 0.9


@pytest.mark.slow
def test_example_reaches_83_percent_on_fashion_mnist_in_one_epoch():
    try:
        train_set, test_set = ndl.data.FashionMNIST(train=True), ndl.data.FashionMNIST(train=False)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    _, history = train_mlp.train(train_set, test_set, epochs=1, batch_size=256, lr=1e-3)
    assert history[-1][2] >= 0.83


# ---- CIFAR-10 python batches ------------------------------------------------------------
def write_cifar_dir(directory, per_batch=4):
    """The python version's six batch files, each `per_batch` random images; returns the images
    (N, 3072) and labels of the training batches, then of the test batch."""
    import pickle
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(directory / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        written[name] = (data, labels)
    return written


def test_cifar10_reads_the_python_batches(tmp_path):
    written = write_cifar_dir(tmp_path)
    train = ndl.data.CIFAR10Dataset(str(tmp_path), train=True)
    test = ndl.data.CIFAR10Dataset(str(tmp_path), train=False)
    assert len(train) == 20 and len(test) == 4
    assert train.X.shape == (20, 3, 32, 32) and train.X.dtype == np.float32
    assert 0.0 <= train.X.min() and train.X.max() <= 1.0
    x, y = train[5]
    data, labels = written["data_batch_2"]
    np.testing.assert_allclose(x, data[1].reshape(3, 32, 32) / 255, rtol=1e-6)
    assert y == labels[1]
    xs, ys = test.get_batch([0, 3])
    assert xs.shape == (2, 3, 32, 32) and list(ys) == [written["test_batch"][1][i] for i in (0, 3)]


def test_cifar10_transforms_see_height_width_channels(tmp_path):
    write_cifar_dir(tmp_path)
    flipped = ndl.data.CIFAR10Dataset(str(tmp_path), train=False,
                                      transforms=[ndl.data.RandomFlipHorizontal(p=1.0)])
    plain = ndl.data.CIFAR10Dataset(str(tmp_path), train=False)
    np.testing.assert_array_equal(flipped[2][0], plain[2][0][:, :, ::-1])
    batch, _ = next(iter(ndl.data.DataLoader(flipped, batch_size=4)))
    assert batch.shape == (4, 3, 32, 32)


def test_cifar10_missing_batches_are_named(tmp_path):
    write_cifar_dir(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=rf"CIFAR-10 batches missing in {tmp_path}: data_batch_3"):
        ndl.data.CIFAR10Dataset(str(tmp_path), train=True)
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch: not a CIFAR-10 python batch"):
        ndl.data.CIFAR10Dataset(str(tmp_path), train=False)


# ---- text: Dictionary, Corpus, batchify, get_batch --------------------------------------
def write_corpus(directory):
    (directory / "train.txt").write_text(" the cat sat \n the dog sat on the cat \n a b \n")
    (directory / "test.txt").write_text(" the bird \n")
    return directory


def test_corpus_tokenizes_lines_with_eos_into_one_dictionary(tmp_path):
    corpus = ndl.data.Corpus(str(write_corpus(tmp_path)))
    words = corpus.dictionary.idx2word
    assert words[:4] == ["the", "cat", "sat", "<eos>"]
    assert [words[i] for i in corpus.train] == "the cat sat <eos> the dog sat on the cat <eos> a b <eos>".split()
    assert [words[i] for i in corpus.test] == ["the", "bird", "<eos>"]
    assert corpus.dictionary.word2idx["bird"] == len(corpus.dictionary) - 1
    assert corpus.dictionary.add_word("cat") == 1
    short = ndl.data.Corpus(str(tmp_path), max_lines=1)
    assert len(short.train) == 4 and len(short.test) == 3


def test_corpus_names_the_missing_files(tmp_path):
    (tmp_path / "train.txt").write_text("a\n")
    with pytest.raises(FileNotFoundError, match=rf"Corpus: test.txt not found in {tmp_path}"):
        ndl.data.Corpus(str(tmp_path))


def test_batchify_makes_columns_and_get_batch_cuts_bptt_rows():
    batches = ndl.data.batchify(list(range(26)), 4, device=None, dtype="float32")
    assert batches.shape == (6, 4)
    np.testing.assert_array_equal(batches[:, 1], np.arange(6, 12))  # column j: a contiguous stretch
    data, target = ndl.data.get_batch(batches, 1, 3)
    np.testing.assert_array_equal(data.numpy(), batches[1:4])
    np.testing.assert_array_equal(target.numpy(), batches[2:5].reshape(-1))
    assert data.shape == (3, 4) and target.shape == (12,) and data.dtype == "int64"
    data, target = ndl.data.get_batch(batches, 3, 5, dtype="float32")  # near the end: fewer rows
    assert data.shape == (2, 4) and target.shape == (8,) and data.dtype == "float32"
    with pytest.raises(ValueError, match="fewer than batch_size=4"):
        ndl.data.batchify([1, 2], 4, None, None)
