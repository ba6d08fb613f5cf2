"""needle's data loading (`ndl.data`): datasets, transforms, the DataLoader, an idx(.gz) reader
for MNIST-format files (Fashion-MNIST from Debian's `dataset-fashion-mnist`), CIFAR-10's python
batches, and the text helpers of needle's language models (Dictionary, Corpus, batchify,
get_batch)."""
import gzip
import numbers
import os
import pickle
import zlib

import numpy as np

from .nn.module import check_flags
from .tensor import Tensor

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
_FASHION_FILES = {True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_CLASSES = 10
_HOW_TO_GET = ("install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) "
               "or set NDLC_DATA to a directory holding the idx .gz files")


def _integer(where, name, value, low):
    """`value` as an int, where it is an integer (not a bool) >= `low`; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{where}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


# ---- transforms -------------------------------------------------------------------------
class Transform:
    """A random augmentation of one H x W x C image (numpy)."""

    def __call__(self, img):
        raise NotImplementedError


class RandomFlipHorizontal(Transform):
    """Mirror the image left-right with probability p (one draw per image, as in needle)."""

    def __init__(self, p=0.5):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"RandomFlipHorizontal: p must be a number in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, img):
        return np.flip(img, axis=1) if np.random.rand() < self.p else img


class RandomCrop(Transform):
    """Zero-pad by `padding` and cut the original size at a random shift in [-padding, padding]."""

    def __init__(self, padding=3):
        self.padding = _integer("RandomCrop", "padding", padding, 0)

    def __call__(self, img):
        p = self.padding
        shift_x, shift_y = np.random.randint(low=-p, high=p + 1, size=2)
        h, w = img.shape[:2]
        padded = np.pad(img, ((p, p), (p, p)) + ((0, 0),) * (img.ndim - 2))
        return padded[p + shift_x:p + shift_x + h, p + shift_y:p + shift_y + w]


# ---- datasets ---------------------------------------------------------------------------
class Dataset:
    """An indexable collection of samples (tuples of arrays), with optional transforms."""

    def __init__(self, transforms=None):
        self.transforms = transforms

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def apply_transforms(self, x):
        for transform in self.transforms or ():
            x = transform(x)
        return x

    def get_batch(self, indices):
        """The samples at `indices`, each field stacked along a new first axis."""
        samples = [self[int(i)] for i in indices]
        samples = [s if isinstance(s, tuple) else (s,) for s in samples]
        return tuple(np.stack(field) for field in zip(*samples))


class NDArrayDataset(Dataset):
    """Samples are the rows of one or more arrays of equal length."""

    def __init__(self, *arrays):
        super().__init__()
        flat = [i for i, a in enumerate(arrays) if np.ndim(a) == 0]
        if flat:
            raise ValueError(f"NDArrayDataset: array {flat[0]} is a {type(arrays[flat[0]]).__name__} of no "
                             "length (each array holds one sample per row)")
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1:
            raise ValueError(f"NDArrayDataset: arrays must have one length, got lengths {sorted(lengths)}")
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)

    def get_batch(self, indices):
        return self[np.asarray(indices)]


def _open_idx(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"MNIST data file not found: {path} (MNISTDataset reads the paths it is "
                                "given: NDLC_DATA applies to FashionMNIST); Fashion-MNIST's idx files come "
                                "with Debian's package: apt-get install dataset-fashion-mnist")
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: not a readable idx file ({e})") from None


def read_idx(path, expected_ndim):
    """The uint8 array in an idx file (raw or gzipped), checked against its header."""
    raw = _open_idx(path)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] != expected_ndim:
        raise ValueError(f"{path}: not an idx file of {expected_ndim}-d unsigned bytes "
                         f"(magic {raw[:4].hex() or 'missing'}, expected 000008{expected_ndim:02x})")
    header = 4 + 4 * expected_ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(expected_ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise ValueError(f"{path}: idx header promises shape {shape} ({size} bytes of data), "
                         f"the file holds {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


class _ImageDataset(Dataset):
    """`images` and `labels`; an index or an array of indices gives images (through the
    transforms, one image at a time: `_transformed`) and labels. `image_ndim`: one image's rank."""

    image_ndim = 1

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image, label = self.images[index], self.labels[index]
        if not self.transforms:
            return image, label
        if image.ndim == self.image_ndim:
            return self._transformed(image), label
        return np.stack([self._transformed(x) for x in image]), label

    def get_batch(self, indices):
        return self[np.asarray(indices)]


class MNISTDataset(_ImageDataset):
    """MNIST-format idx files: images as (784,) float32 in [0, 1], labels uint8.

    Transforms see each image as 28 x 28 x 1 and run per image."""

    def __init__(self, image_filename, label_filename, transforms=None):
        super().__init__(transforms)
        images = read_idx(image_filename, 3)
        self.labels = read_idx(label_filename, 1)
        if len(images) != len(self.labels):
            raise ValueError(f"{image_filename} holds {len(images)} images but {label_filename} "
                             f"{len(self.labels)} labels")
        self.image_shape = images.shape[1:] + (1,)
        self.images = images.reshape(len(images), int(np.prod(images.shape[1:]))).astype(np.float32) / 255.0

    def _transformed(self, image):
        return self.apply_transforms(image.reshape(self.image_shape)).reshape(-1)


def fashion_mnist_dir(root=None):
    """The directory holding Fashion-MNIST's four files: `root` if given, else $NDLC_DATA if set
    (or its fashion-mnist/), else Debian's. A directory that was given but lacks files is an
    error naming it and them, never a silent fall back to another data set."""
    files = _FASHION_FILES[True] + _FASHION_FILES[False]
    if root or os.environ.get("NDLC_DATA"):
        given, source = (root, "--data") if root else (os.environ["NDLC_DATA"], "NDLC_DATA")
        candidates = [given, os.path.join(given, "fashion-mnist")]
    else:
        candidates, source = list(FASHION_MNIST_DIRS), None
    for directory in candidates:
        if all(os.path.exists(os.path.join(directory, f)) for f in files):
            return directory
    if source is None:
        raise FileNotFoundError(f"Fashion-MNIST not found in {', '.join(candidates)} "
                                f"(looked for {', '.join(files)}); {_HOW_TO_GET}")
    if not os.path.isdir(given):
        raise FileNotFoundError(f"Fashion-MNIST not found in {given} (from {source}): no such directory; "
                                f"{_HOW_TO_GET}")
    missing = [f for f in files if not os.path.exists(os.path.join(given, f))]
    raise FileNotFoundError(f"Fashion-MNIST not found in {given} (from {source}): it lacks "
                            f"{', '.join(missing)}, nor does its fashion-mnist/ hold all four files; {_HOW_TO_GET}")


def FashionMNIST(train=True, root=None, transforms=None):
    """The Fashion-MNIST training (or test) set as an MNISTDataset: at least one 28 x 28 image,
    each labelled with one of its 10 classes (ValueError naming the file otherwise)."""
    directory = fashion_mnist_dir(root)
    images, labels = (os.path.join(directory, name) for name in _FASHION_FILES[bool(train)])
    dataset = MNISTDataset(images, labels, transforms)
    if not len(dataset):
        raise ValueError(f"{images} holds 0 images: Fashion-MNIST's files hold 60000 (train) and 10000 (t10k)")
    if dataset.image_shape != (28, 28, 1):
        raise ValueError(f"{images} holds {dataset.image_shape[0]}x{dataset.image_shape[1]} images; "
                         "Fashion-MNIST's are 28x28")
    outside = np.flatnonzero(dataset.labels >= FASHION_CLASSES)
    if len(outside):
        raise ValueError(f"{labels}: label {int(dataset.labels[outside[0]])} (of sample {int(outside[0])}) "
                         f"is not one of Fashion-MNIST's {FASHION_CLASSES} classes 0..{FASHION_CLASSES - 1}"
                         + (f", nor are {len(outside) - 1} more" if len(outside) > 1 else ""))
    return dataset


class CIFAR10Dataset(_ImageDataset):
    """CIFAR-10 from its python-pickle batches in `base_folder` (cifar-10-batches-py):
    data_batch_1..5 for training, test_batch otherwise. `X` holds the images (N, 3, 32, 32) as
    float32 in [0, 1], `y` the labels (int64). Transforms (which take H x W x C images) run per
    image. `p` is accepted for needle's signature and unused, as in needle."""

    def __init__(self, base_folder, train, p=0.5, transforms=None):
        super().__init__(transforms)
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        paths = [os.path.join(base_folder, name) for name in names]
        missing = [name for name, path in zip(names, paths) if not os.path.exists(path)]
        if missing:
            raise FileNotFoundError(f"CIFAR-10 batches missing in {base_folder}: {', '.join(missing)} "
                                    f"(expected the python version's {', '.join(names)})")
        batches = [_read_cifar_batch(path) for path in paths]
        self.X = np.concatenate([x for x, _ in batches]).reshape(-1, 3, 32, 32).astype(np.float32) / 255
        self.y = np.concatenate([y for _, y in batches]).astype(np.int64)

    image_ndim = 3

    @property
    def images(self):
        return self.X

    @property
    def labels(self):
        return self.y

    def _transformed(self, image):
        """One (3, 32, 32) image through the transforms, which see it as (32, 32, 3)."""
        return self.apply_transforms(image.transpose(1, 2, 0)).transpose(2, 0, 1)


def _read_cifar_batch(path):
    """(data (N, 3072) uint8, labels (N,)) from one CIFAR-10 python batch file."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = np.asarray(batch[b"data"], np.uint8), np.asarray(batch[b"labels"])
    except Exception as e:  # a corrupt pickle raises "other exceptions, including (but not necessarily
        # limited to) AttributeError, EOFError, ImportError, and IndexError" (pickle's docs), MemoryError too
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a pickled dict with b'data' and "
                         f"b'labels'): {type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != data.shape[:1]:
        raise ValueError(f"{path}: data must be (N, 3072) with N labels, got data {data.shape} "
                         f"and labels {labels.shape}")
    if labels.size and labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: labels must be integers in [0, 10), got {labels.dtype} labels")
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise ValueError(f"{path}: label {int(labels[bad[0]])} of image {bad[0]} is outside [0, 10)")
    return data, labels


# ---- text -------------------------------------------------------------------------------
class Dictionary:
    """Words and their ids: `word2idx` (word -> id) and `idx2word` (id -> word), in order of arrival."""

    def __init__(self):
        self.word2idx = {}
        self.idx2word = []

    def add_word(self, word):
        """The word's id, a new one (the next integer) for a word not seen before."""
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def __len__(self):
        return len(self.idx2word)


class Corpus:
    """A Penn-Treebank-style corpus: `base_dir`/train.txt and test.txt, each line's words (split on
    whitespace) followed by '<eos>', as lists of ids (`train`, `test`) of one `dictionary`.
    `max_lines`: read at most that many lines of each file."""

    FILES = ("train.txt", "test.txt")

    def __init__(self, base_dir, max_lines=None):
        missing = [name for name in self.FILES if not os.path.exists(os.path.join(base_dir, name))]
        if missing:
            raise FileNotFoundError(f"Corpus: {', '.join(missing)} not found in {base_dir} "
                                    f"(it needs {' and '.join(self.FILES)})")
        self.dictionary = Dictionary()
        self.train = self.tokenize(os.path.join(base_dir, "train.txt"), max_lines)
        self.test = self.tokenize(os.path.join(base_dir, "test.txt"), max_lines)

    def tokenize(self, path, max_lines=None):
        """The ids of the words of the first `max_lines` lines of `path` (all if None), each line
        ending with '<eos>'; new words join the dictionary."""
        if max_lines is not None:
            max_lines = _integer("Corpus", "max_lines", max_lines, 0)
        ids = []
        with open(path, encoding="utf-8") as f:
            try:
                for number, line in enumerate(f):
                    if max_lines is not None and number >= max_lines:
                        break
                    ids += [self.dictionary.add_word(word) for word in line.split() + ["<eos>"]]
            except UnicodeDecodeError as e:
                raise ValueError(f"Corpus: {path} is not UTF-8 text (byte 0x{e.object[e.start:e.start + 1].hex()}: "
                                 f"{e.reason})") from None
        return ids


def batchify(data, batch_size, device=None, dtype=None):
    """A sequence of ids cut into `batch_size` contiguous columns: an (n // batch_size, batch_size)
    array whose column j is data[j*rows:(j+1)*rows] (the remainder is dropped). needle's
    signature; `device` and `dtype` are unused here (get_batch makes the Tensors)."""
    rows = len(data) // _integer("batchify", "batch_size", batch_size, 1)
    if rows < 1:
        raise ValueError(f"batchify: {len(data)} ids are fewer than batch_size={batch_size}")
    return np.array(data[:rows * batch_size]).reshape(batch_size, rows).T


def get_batch(batches, i, bptt, device=None, dtype=None):
    """Rows i .. i+bptt-1 of a batchify array (fewer near its end) as `data` (seq_len, batch), and
    the next id of each as `target`, flattened to (seq_len * batch,): Tensors of `dtype` (the
    array's own dtype when None)."""
    i, bptt = _integer("get_batch", "row i", i, 0), _integer("get_batch", "bptt", bptt, 1)
    seq_len = min(bptt, len(batches) - 1 - i)
    if seq_len < 1:
        raise ValueError(f"get_batch: row {i} leaves no target in {len(batches)} rows")
    data = batches[i:i + seq_len]
    target = batches[i + 1:i + 1 + seq_len].reshape(-1)
    return (Tensor(data, device=device, dtype=dtype, requires_grad=False),
            Tensor(target, device=device, dtype=dtype, requires_grad=False))


# ---- loader -----------------------------------------------------------------------------
class DataLoader:
    """Batches of a dataset as tuples of Tensors; a fresh permutation each epoch when shuffling.
    `sampler` (PyTorch's): an iterable of the indices to batch instead (a DistributedSampler's
    share of the epoch); it excludes `shuffle`."""

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None):
        batch_size = _integer("DataLoader", "batch_size", batch_size, 1)
        check_flags("DataLoader", shuffle=shuffle)
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler and shuffle exclude each other (the sampler orders the data)")
        self.dataset, self.batch_size, self.shuffle = dataset, int(batch_size), shuffle
        self.sampler = sampler

    def _ordering(self):
        if self.sampler is not None:
            index = np.array(list(self.sampler))
            size = len(self.dataset)
            bad = [v for v in index.tolist() if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < size]
            if bad:  # a float would be truncated, a negative index count from the end
                raise ValueError(f"DataLoader: the sampler gave index {bad[0]!r}; indices must be integers in "
                                 f"[0, {size}) (the dataset's length)")
            index = index.astype(np.int64)
        else:
            index = np.random.permutation(len(self.dataset)) if self.shuffle else np.arange(len(self.dataset))
        return np.array_split(index, range(self.batch_size, len(index), self.batch_size))

    def __len__(self):
        count = len(self.dataset) if self.sampler is None else len(self.sampler)
        return -(-count // self.batch_size)

    def __iter__(self):
        get_batch = getattr(self.dataset, "get_batch", None) or (lambda idx: Dataset.get_batch(self.dataset, idx))
        for indices in self._ordering():
            if len(indices):
                yield tuple(Tensor(field, requires_grad=False) for field in get_batch(indices))


__all__ = ["CIFAR10Dataset", "Corpus", "DataLoader", "Dataset", "Dictionary", "FashionMNIST",
           "MNISTDataset", "NDArrayDataset", "RandomCrop", "RandomFlipHorizontal", "Transform",
           "batchify", "fashion_mnist_dir", "get_batch", "read_idx"]
