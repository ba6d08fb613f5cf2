"""Files under mutation: checkpoints (`ndl.save`) and the on-disk compilation cache, truncated,
bit-flipped, overwritten or emptied. A mutated checkpoint loads back equal to what was saved or is
a CheckpointError naming the file, never another exception and never other numbers; a mutated cache
entry is rebuilt (a fresh process computes the same numbers as with the intact cache), never a
crash and never wrong numbers. FUZZ_EXAMPLES sets how many are drawn (`-m slow`: many more)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import ndlc as ndl

nn = ndl.nn
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))


def fast(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])


def slow(examples):
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


POSITION = st.integers(0, 2**24)  # a byte of the file: this modulo its size


@st.composite
def corruptions(draw):
    """(what, how) a file is changed: cut at a byte, bits flipped, bytes overwritten or appended."""
    kind = draw(st.sampled_from(("truncate", "flip", "overwrite", "empty", "append")))
    if kind == "truncate":
        return kind, draw(POSITION)
    if kind == "flip":
        return kind, draw(st.lists(st.tuples(POSITION, st.integers(0, 7)), min_size=1, max_size=3))
    if kind == "overwrite":
        return kind, (draw(POSITION), draw(st.binary(min_size=1, max_size=16)))
    if kind == "append":
        return kind, draw(st.binary(min_size=1, max_size=16))
    return kind, None


def corrupt(data: bytes, corruption) -> bytes:
    kind, how = corruption
    if kind == "append":
        return data + how
    if kind == "empty" or not data:
        return b""
    if kind == "truncate":
        return data[:how % len(data)]
    if kind == "flip":
        out = bytearray(data)
        for at, bit in how:
            out[at % len(data)] ^= 1 << bit
        return bytes(out)
    at, junk = how
    at %= len(data)
    return data[:at] + junk + data[at + len(junk):]


# checkpoints

def checkpoint():
    """A model's and an optimizer's state dicts after a step, with a few plain values."""
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    opt = ndl.optim.Adam(model.parameters(), lr=0.01)
    loss = nn.SoftmaxLoss()(model(ndl.Tensor(np.ones((5, 3), np.float32))), ndl.Tensor(np.zeros(5, np.int64)))
    loss.backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
            "rng": np.random.get_state()[1][:4], "name": "run", "history": [0.5, (1, None)]}


def same(a, b):
    """Whether two loaded objects hold the same values of the same kinds, bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, ndl.Tensor):
        return isinstance(b, ndl.Tensor) and a.requires_grad == b.requires_grad and same(a.numpy(), b.numpy())
    if isinstance(a, (np.ndarray, np.generic)):
        return (isinstance(b, type(a)) and a.dtype == b.dtype and a.shape == b.shape
                and a.tobytes() == b.tobytes())
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "intact.npz"
    ndl.save(checkpoint(), path)
    return path.read_bytes(), ndl.load(path)


def check_checkpoint(saved, corruption, folder):
    data, original = saved
    path = folder / "mutated.npz"
    path.write_bytes(corrupt(data, corruption))
    try:
        loaded = ndl.load(path)
    except ndl.CheckpointError as e:
        assert str(path) in str(e), f"{e} does not name the file, after {corruption}"
        return
    assert same(original, loaded), f"a checkpoint mutated by {corruption} loaded other values"


def test_the_intact_checkpoint_loads_back_equal(saved):
    assert same(saved[1], checkpoint())


def test_a_checkpoint_of_another_format_version_is_refused_with_both_versions(tmp_path):
    path = tmp_path / "c.npz"
    ndl.save({"w": np.ones(2)}, path)
    with np.load(path) as written:
        header, array = json.loads(str(written["__ndlc__"])), written["a0"]
    header["format"] = 2
    np.savez(path, __ndlc__=np.array(json.dumps(header)), a0=array)
    with pytest.raises(ndl.CheckpointError, match=r"c.npz is checkpoint format version 2 .*reads version 1"):
        ndl.load(path)


@pytest.mark.parametrize("examples", [pytest.param(EXAMPLES), pytest.param(2000, marks=pytest.mark.slow)])
def test_a_mutated_checkpoint_loads_equal_or_is_refused_naming_the_file(saved, tmp_path, examples):
    @(fast if examples == EXAMPLES else slow)(examples)
    @given(corruption=corruptions())
    def run(corruption):
        check_checkpoint(saved, corruption, tmp_path)
    run()


# the compilation cache: every run is a fresh process on a copy of a populated cache

RUN = textwrap.dedent("""
    import sys, numpy as np, ndlc as ndl
    np.random.seed(0)
    model = ndl.nn.Sequential(ndl.nn.Linear(3, 4), ndl.nn.ReLU(), ndl.nn.Linear(4, 2))
    opt = ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    def step(x, y):
        opt.reset_grad()
        loss = ndl.nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        opt.step()
        return loss
    step = ndl.compile(step)
    x = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    y = np.array([0, 1, 1, 0, 1])
    losses = [float(step(x, y).numpy()) for _ in range(3)]
    np.save(sys.argv[1], np.array(losses + [float(v) for p in model.parameters() for v in p.numpy().ravel()]))
""")


def run_in(cache, out):
    env = dict(os.environ, NDLC_CACHE_DIR=str(cache), PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", RUN, str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"exit status {done.returncode}:\n{done.stderr[-3000:]}"
    return np.load(out), done.stderr


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    numbers, _ = run_in(cache, cache.parent / "intact.npy")
    assert run_in(cache, cache.parent / "warm.npy")[0].tobytes() == numbers.tobytes()  # read from the cache
    files = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert any(f.endswith(".program") for f in files) and any(f.endswith(".so") for f in files), files
    return cache, numbers, files


def check_cache(populated, pick, corruption, folder):
    cache, numbers, files = populated
    copy = folder / "cache"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(cache, copy)
    target = copy / files[pick % len(files)]
    target.write_bytes(corrupt(target.read_bytes(), corruption))
    got, _ = run_in(copy, folder / "out.npy")
    assert got.tobytes() == numbers.tobytes(), f"{files[pick % len(files)]} mutated by {corruption}: other numbers"


@pytest.mark.parametrize("examples", [pytest.param(4), pytest.param(60, marks=pytest.mark.slow)])
def test_a_mutated_cache_entry_is_rebuilt_to_the_same_numbers(populated, tmp_path, examples):
    @(fast if examples == 4 else slow)(examples)
    @given(pick=st.integers(0, 1000), corruption=corruptions())
    def run(pick, corruption):
        check_cache(populated, pick, corruption, tmp_path)
    run()


# data files: an idx file (gzipped, as Fashion-MNIST ships) and a CIFAR-10 python batch

def idx_file():
    images = (np.arange(3 * 28 * 28) % 251).astype(np.uint8).reshape(3, 28, 28)
    import gzip
    import struct
    return gzip.compress(struct.pack(">HBB3I", 0, 8, 3, 3, 28, 28) + images.tobytes()), images


def cifar_batch():
    import pickle
    data = (np.arange(2 * 3072) % 253).astype(np.uint8).reshape(2, 3072)
    return pickle.dumps({b"data": data, b"labels": [3, 7]}), data


def check_data_file(kind, corruption, folder):
    """A mutated data file is a ValueError naming the file, or reads back: as written where the
    format has a checksum (gzip's CRC), as some images where it has none (a pickle's bytes)."""
    data, original = idx_file() if kind == "idx" else cifar_batch()
    path = folder / ("images.gz" if kind == "idx" else "test_batch")
    path.write_bytes(corrupt(data, corruption))
    try:
        loaded = (ndl.data.read_idx(str(path), 3) if kind == "idx"
                  else (ndl.data.CIFAR10Dataset(str(folder), train=False).X * 255).round().astype(np.uint8))
    except ValueError as e:
        assert str(path) in str(e), f"{e} does not name the file, after {corruption}"
        return
    assert loaded.shape == original.shape if kind == "idx" else loaded.shape[1:] == (3, 32, 32), corruption
    if kind == "idx":
        assert loaded.tobytes() == original.tobytes(), f"an idx file mutated by {corruption} read other values"


@pytest.mark.parametrize("kind", ["idx", "cifar"])
@pytest.mark.parametrize("examples", [pytest.param(EXAMPLES), pytest.param(1000, marks=pytest.mark.slow)])
def test_a_mutated_data_file_reads_back_or_is_refused_naming_it(kind, tmp_path, examples):
    @(fast if examples == EXAMPLES else slow)(examples)
    @given(corruption=corruptions())
    def run(corruption):
        check_data_file(kind, corruption, tmp_path)
    run()
