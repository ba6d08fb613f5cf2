"""Test-wide settings: the verifier runs after every pass, numpy's random state is seeded."""
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
