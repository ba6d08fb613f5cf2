"""Helpers for the frontend tests: idx file writing and Tensor/numpy conversion."""
import gzip
import struct

import numpy as np
import pytest

import ndlc as ndl


def write_idx(path, array, compress=True):
    """Write a uint8 array as an MNIST idx file (gzipped when `compress`)."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + array.tobytes())
    return str(path)


@pytest.fixture
def idx_writer():
    return write_idx


def tensor(array, requires_grad=True):
    """A float32 Tensor of `array` (needle's default float dtype)."""
    return ndl.Tensor(np.asarray(array, dtype=np.float32), requires_grad=requires_grad)
