"""Test-wide settings: the verifier runs after every pass, numpy's random state is seeded; the
`two_threads` fixture."""
import os
import tempfile

import numpy as np
import pytest

os.environ.setdefault("NDLC_VERIFY", "1")


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)


# Native code compiled by the tests goes to a fresh cache, not the user's ~/.cache/ndlc.
os.environ.setdefault("NDLC_CACHE_DIR", tempfile.mkdtemp(prefix="ndlc-test-cache-"))


@pytest.fixture
def two_threads(monkeypatch):
    """A budget of two threads, every program on its whole budget unless a test sets its team."""
    from ndlc.runtime import libraries
    monkeypatch.setenv("NDLC_THREADS", "2")
    monkeypatch.setenv("NDLC_TEAM", "budget")
    yield
    monkeypatch.delenv("NDLC_THREADS")
    libraries.threads()  # OpenBLAS back to the default budget
