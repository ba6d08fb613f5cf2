"""Checkpoints and the compilation cache where the file system is in the way (test_files_fuzz.py
edits their bytes): a save onto a drawn place (nothing, an old checkpoint, someone else's file, a
folder, a missing folder, a file where the folder should be, a read-only folder) with the disk
full at a drawn size (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk); loads of
drawn foreign files (another format version, another program's .npz or .npy, a zip, text, a
folder). A save either writes a checkpoint that loads back equal or is a CheckpointError naming
the file, and never changes, removes or leaves beside it anything else; a load either reads back
or is a CheckpointError naming the file. The cache, in a fresh process, in a drawn place and with
a drawn disk limit: the same numbers as with a working cache, and no partial file left behind.
FUZZ_EXAMPLES sets how many are drawn (`-m slow`: many more)."""
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import ndlc as ndl
from test_files_fuzz import RUN, populated, same  # noqa: F401  (populated: a fixture)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
ROOT = os.geteuid() == 0  # root writes into read-only folders: that place is drawn only for others
PLACES = ("absent", "checkpoint", "foreign", "folder", "no parent", "parent is a file") + (() if ROOT else ("read-only",))
LIMITS = st.one_of(st.none(), st.integers(0, 4000), st.integers(4000, 200000))


def fast(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])


def slow(examples):
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


def save_on_a_full_disk(obj, target, size):
    """ndl.save(obj, target) in a forked child whose writes past `size` bytes of any file fail
    with EFBIG, as on a full disk (no limit if None; the limit is never set in the test process,
    whose own output files it would break): None, or the exception it raised (type name, text)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: save, report through the pipe (a pipe is not limited), leave at once
        outcome = ""
        try:
            os.close(read)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            if size is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            ndl.save(obj, target)
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which judges it
            outcome = f"{type(e).__name__}\n{e}"
        finally:
            os.write(write, outcome.encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    return tuple(outcome.split("\n", 1)) if outcome else None


def snapshot(folder):
    """Every path under `folder` with its bytes (None for a folder) and permissions."""
    found = {}
    for path in sorted(folder.rglob("*")):
        found[str(path.relative_to(folder))] = (None if path.is_dir() else path.read_bytes(), path.stat().st_mode)
    return found


def prepare(place, folder):
    """The path to save to, laid out as `place` in a clean `folder`."""
    target = folder / "run" / "model.npz"
    target.parent.mkdir(parents=True)
    if place == "checkpoint":
        ndl.save({"old": np.arange(3)}, target)
    elif place == "foreign":
        target.write_bytes(b"someone else's notes\n")
    elif place == "folder":
        target.mkdir()
        (target / "inside.txt").write_text("kept")
    elif place == "no parent":
        target = folder / "run" / "missing" / "model.npz"
    elif place == "parent is a file":
        (folder / "run" / "file").write_text("a file")
        target = folder / "run" / "file" / "model.npz"
    elif place == "read-only":
        target.parent.chmod(0o555)
    return target


OBJECTS = st.sampled_from((
    {"w": np.ones((40, 40), np.float32), "step": 3},
    [np.arange(5), "name", None, (1.5, True)],
    {"model": {"weight": np.zeros((200, 10))}, "epoch": 0},
))


def check_save(place, limit, obj, folder):
    folder.mkdir()
    target = prepare(place, folder)
    before = snapshot(folder)
    refused = save_on_a_full_disk(obj, target, limit)
    if place == "read-only":
        target.parent.chmod(0o755)
    if refused is not None:
        kind, message = refused
        assert kind == "CheckpointError", f"{kind}: {message} ({place}, disk full at {limit})"
        assert str(target) in message, f"{message} does not name {target} ({place}, disk full at {limit})"
        assert snapshot(folder) == before, f"a refused save ({place}, disk full at {limit}) changed the folder"
        return
    assert place in ("absent", "checkpoint", "foreign"), f"saved onto {place}"
    assert same(ndl.load(target), obj) if isinstance(obj, dict) else same(list(ndl.load(target)), obj)
    left = set(snapshot(folder)) - set(before) - {str(target.relative_to(folder))}
    assert not left, f"the save left {left} beside the checkpoint"


@pytest.mark.parametrize("examples", [pytest.param(EXAMPLES), pytest.param(1000, marks=pytest.mark.slow)])
def test_a_save_where_the_file_system_is_in_the_way_writes_whole_or_changes_nothing(tmp_path, examples):
    folders = itertools.count()

    @(fast if examples == EXAMPLES else slow)(examples)
    @given(place=st.sampled_from(PLACES), limit=LIMITS, obj=OBJECTS)
    def go(place, limit, obj):
        check_save(place, limit, obj, tmp_path / f"save{next(folders)}")
    go()


# loads of files ndl.save did not write

def header(**fields):
    return json.dumps({"format": 1, "ndlc": "0.1.0", "structure": {"array": "a0"}, **fields})


@st.composite
def foreign_files(draw):
    """(kind, how to write it at a path)."""
    kind = draw(st.sampled_from(("version", "no header", "npy", "zip", "text", "empty", "folder", "structure")))
    if kind == "version":
        version = draw(st.sampled_from((0, 2, 99, "1", None, 1.5, [1])))
        return kind, lambda p: np.savez(p, __ndlc__=np.array(header(format=version)), a0=np.ones(2))
    if kind == "structure":
        node = draw(st.sampled_from(({"array": "a9"}, {"tensor": 3}, {"dict": [[1]]}, {"list": "x"}, [], [1, 2],
                                     {"dict": [[[1], 2]]}, {"dict": [[None, 2]]}, {"dict": [[True, 2]]},
                                     {"array": "a0", "tensor": "a0"}, {"pickle": "a0"})))
        return kind, lambda p: np.savez(p, __ndlc__=np.array(header(structure=node)), a0=np.ones(2))
    if kind == "no header":
        return kind, lambda p: np.savez(p, weights=np.ones(3))
    if kind == "npy":
        return kind, lambda p: np.save(open(p, "wb"), np.ones(3))
    if kind == "zip":
        def write(p):
            with zipfile.ZipFile(p, "w") as z:
                z.writestr(draw(st.sampled_from(("notes.txt", "__ndlc__.npy", "a0.npy"))), b"not numpy")
        return kind, write
    if kind == "folder":
        return kind, lambda p: os.mkdir(p)
    data = b"" if kind == "empty" else draw(st.binary(min_size=1, max_size=64))
    return kind, lambda p: open(p, "wb").write(data)


@pytest.mark.parametrize("examples", [pytest.param(EXAMPLES), pytest.param(1000, marks=pytest.mark.slow)])
def test_a_foreign_file_loads_as_a_checkpoint_error_naming_it_and_stays_as_it_was(tmp_path, examples):
    @(fast if examples == EXAMPLES else slow)(examples)
    @given(foreign=foreign_files())
    def go(foreign):
        kind, write = foreign
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.npz"
        write(path)
        before = snapshot(tmp_path)
        with pytest.raises(ndl.CheckpointError) as caught:
            ndl.load(path)
        assert str(path) in str(caught.value), f"{caught.value} does not name the file ({kind})"
        assert snapshot(tmp_path) == before
    go()


# the compilation cache in a fresh process, in a drawn place, with a drawn disk limit

def run_limited(cache, out, limit):
    """test_files_fuzz's training run in a fresh process on `cache`, its writes limited to `limit`
    bytes a file until its results are computed (their own file is written without the limit)."""
    code = RUN.replace("np.save(", "resource.setrlimit(resource.RLIMIT_FSIZE, (HARD, HARD))\nnp.save(")
    code = ("import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "HARD = resource.getrlimit(resource.RLIMIT_FSIZE)[1]\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit if limit is not None else 'HARD'}, HARD))\n" + code)
    env = dict(os.environ, NDLC_CACHE_DIR=str(cache), PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit status {done.returncode}:\n{done.stderr[-3000:]}"
    return np.load(out)


@pytest.mark.parametrize("examples", [pytest.param(2), pytest.param(40, marks=pytest.mark.slow)])
def test_the_cache_in_the_way_or_on_a_full_disk_gives_the_same_numbers(populated, tmp_path, examples):  # noqa: F811
    numbers = populated[1]
    folders = itertools.count()

    @(fast if examples == 2 else slow)(examples)
    @given(place=st.sampled_from(("fresh", "a file", "no parent", "populated")), limit=LIMITS)
    def go(place, limit):
        folder = tmp_path / f"c{next(folders)}"
        folder.mkdir()
        cache = folder / "cache"
        if place == "a file":
            cache.write_text("not a folder")
        elif place == "no parent":
            cache = folder / "missing" / "cache"
        elif place == "populated":
            shutil.copytree(populated[0], cache)
        got = run_limited(cache, folder / "out.npy", limit)  # warm where the cache is 'populated'
        assert got.tobytes() == numbers.tobytes(), f"other numbers with the cache {place}, limit {limit}"
        if cache.is_dir():
            assert not list(cache.rglob("*.tmp")), f"partial files left in the cache ({place}, limit {limit})"
    go()
