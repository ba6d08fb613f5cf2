"""Helpers of the tests that compare ndlc with PyTorch: float32 Tensors, and closeness relative to
the reference's largest magnitude."""
import numpy as np

import ndlc as ndl

RTOL = 1e-5


def tensor(array, requires_grad=True):
    """A float32 Tensor of `array`."""
    return ndl.Tensor(np.asarray(array, dtype=np.float32), requires_grad=requires_grad)


def assert_close(ours, theirs, what, rtol=RTOL):
    """Equal within `rtol` of the largest magnitude of `theirs`; returns the relative error."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, expected {theirs.shape}"
    error = np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30)
    assert error <= rtol, f"{what}: relative error {error:.2e}"
    return error
