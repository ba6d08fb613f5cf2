"""fusion: a product with one row or one column stays a loop nest (a vectorised row or column
reduction beats OpenBLAS's sgemm there), and so does an outer product (k of 1: elementwise, split
over the threads); others call BLAS."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc.ir import parse
from ndlc.passes.fusion import fuse


def product(a, b):
    m, k = a
    n = b[1]
    return fuse(parse(f"""
graph @p(%a: f32[{m},{k}], %b: f32[{k},{n}]) {{
  %0 = matmul(%a, %b) : f32[{m},{n}]
  return %0
}}"""), use_blas=True)


def test_a_matrix_times_a_column_is_a_row_reduction():
    (kernel,) = product((7, 5), (5, 1)).kernels
    assert kernel.gemm is None
    assert str(kernel).splitlines()[-2:] == ["    acc0 = add of mul($0, $1)", "    store %0[i0] = acc0"]


def test_a_row_times_a_matrix_is_a_column_reduction():
    (kernel,) = product((1, 5), (5, 3)).kernels
    assert kernel.gemm is None and "acc0 = add of mul($0, $1)" in str(kernel)


def test_an_outer_product_is_a_loop_nest():
    (kernel,) = product((7, 1), (1, 3)).kernels
    assert kernel.gemm is None and "loops: i0<7 i1<3 | i2<1" in str(kernel)


@pytest.mark.parametrize("a, b", [((2, 5), (5, 3)), ((7, 2), (2, 3))])
def test_other_products_call_blas(a, b):
    (kernel,) = product(a, b).kernels
    assert f"call sgemm(%a, %b) -> %0  ({a[0]}x{a[1]} @ {b[0]}x{b[1]})" in str(kernel)


@pytest.mark.parametrize("a, b", [((33, 17), (17, 1)), ((1, 17), (17, 9)), ((4, 1, 17), (4, 17, 9))])
def test_matrix_vector_products_and_their_gradients_agree_with_numpy(a, b):
    rng = np.random.default_rng(0)
    out_shape = np.broadcast_shapes(a[:-2], b[:-2]) + (a[-2], b[-1])
    x, y, c = (rng.standard_normal(s, dtype=np.float32) for s in (a, b, out_shape))

    def step(x, y):
        x.requires_grad = y.requires_grad = True
        out = x @ y
        (out * ndl.Tensor(c)).sum().backward()
        return out, x.grad, y.grad
    out, dx, dy = ndl.compile(step)(x, y)
    np.testing.assert_allclose(out.numpy(), x @ y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx.numpy(), c @ np.swapaxes(y, -1, -2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dy.numpy(), np.swapaxes(x, -1, -2) @ c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_an_outer_product_gives_numpys_bits_on_one_and_two_threads(threads, monkeypatch):
    """Each element one rounded product, as sgemm's: Linear's weight gradient at a batch of 1."""
    monkeypatch.setenv("NDLC_THREADS", threads)
    monkeypatch.setenv("NDLC_TEAM", "budget")
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((1024, 1), dtype=np.float32), rng.standard_normal((1, 1000), dtype=np.float32)
    out = ndl.compile(lambda x, g: x @ g)(x, g)
    assert out.numpy().tobytes() == (x @ g).tobytes()
