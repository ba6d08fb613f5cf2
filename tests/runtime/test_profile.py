"""NDLC_PROFILE=1: the native code records the cycle counter around each kernel."""
import re

import numpy as np
import pytest

import ndlc as ndl


def test_profile_lists_every_kernel_with_its_share(monkeypatch):
    monkeypatch.setenv("NDLC_PROFILE", "1")
    compiled = ndl.compile(lambda x, w: ndl.logsumexp(ndl.relu(x @ w), axes=(1,)).sum())
    x, w = np.ones((64, 32), np.float32), np.ones((32, 16), np.float32)
    for _ in range(3):
        out = compiled(x, w)
    np.testing.assert_allclose(out.numpy(), 64 * (32 + np.log(16)), rtol=1e-5)
    text = compiled.profile()
    kernels = compiled.ir("planned").count("\nkernel k")
    assert text.startswith("@lambda: ") and f"over 3 runs, {kernels} kernels" in text
    shares = [float(s) for s in re.findall(r"(\d+\.\d)%", text)]
    assert len(shares) == kernels and abs(sum(shares) - 100) < 1
    assert "llvm.readcyclecounter" in compiled.ir("llvm")
    assert len(compiled.profile(top=1).splitlines()) == 3


def test_profile_needs_a_profiling_build(monkeypatch):
    monkeypatch.delenv("NDLC_PROFILE", raising=False)
    compiled = ndl.compile(lambda x: x * 2.0)
    compiled(np.ones(3, np.float32))
    assert "readcyclecounter" not in compiled.ir("llvm")
    with pytest.raises(ndl.NdlcError, match="not compiled for profiling \\(set NDLC_PROFILE=1\\)"):
        compiled.profile()
