"""Test-wide settings: the verifier runs after every pass, numpy's random state is seeded."""
import os

import numpy as np
import pytest

os.environ.setdefault("NDLC_VERIFY", "1")


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
