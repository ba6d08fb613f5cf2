"""Test-wide settings: the verifier runs after every pass, numpy's random state is seeded, caches
in fresh folders; the `two_threads`, `avx2_tiles` and `fresh_machine` fixtures."""
import os
import tempfile

import numpy as np
import pytest

os.environ.setdefault("NDLC_VERIFY", "1")


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)


# Native code compiled by the tests goes to a fresh cache, not the user's ~/.cache/ndlc, and so
# does ndlc's per-machine code (runtime/machine.py: $XDG_CACHE_HOME/ndlc/machine).
os.environ.setdefault("NDLC_CACHE_DIR", tempfile.mkdtemp(prefix="ndlc-test-cache-"))
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ndlc-test-xdg-")


@pytest.fixture
def fresh_machine(monkeypatch, tmp_path_factory):
    """An empty per-machine folder (runtime/machine.py; its path): the runner, the imports object
    and the team's library are compiled again, as on a new machine."""
    folder = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder / "ndlc" / "machine"


@pytest.fixture
def avx2_tiles(monkeypatch):
    """Register tiles within AVX2's 16 vector registers whatever the host (ir/tiles.py `registers`),
    for tests that pin those tiles."""
    from ndlc.ir import tiles
    monkeypatch.setattr(tiles, "registers", lambda: 15)


@pytest.fixture
def two_threads(monkeypatch):
    """A budget of two threads, every program on its whole budget unless a test sets its team."""
    from ndlc.runtime import libraries
    monkeypatch.setenv("NDLC_THREADS", "2")
    monkeypatch.setenv("NDLC_TEAM", "budget")
    yield
    monkeypatch.delenv("NDLC_THREADS")
    libraries.threads()  # OpenBLAS back to the default budget
