"""Direct convolutions over wide rows (ir/ops/conv.py: _direct_planes): each padded row carries p
zeros on its left only, a window past a row's end reading the next row's left zeros as its right
padding; compiled forward and gradients against PyTorch, and the rows the decomposition picks.
Convolutions over NCHW rows (row_conv) in register tiles, ragged or not, against numpy."""
import numpy as np
import pytest

import ndlc as ndl
from gradcheck import compiled_conv_step
from ndlc import nn


def compiled_step(conv):
    def step(t, c):
        t.requires_grad = True
        y = conv(t)
        (y * c).sum().backward()
        return y, t.grad, conv.weight.grad, conv.bias.grad
    return ndl.compile(step, state=[conv])


# (Cin, Cout, K, padding, H): LeNet's conv1 (its forward over NCHW rows, its gradients over wide rows)
# and conv2 (its input gradient over wide rows of the adjoint padded by 4), a padding past K - 1 (the
# weight gradient's rows padded on the right too), and K - 1 - p = 0
@pytest.mark.parametrize("cin,cout,k,p,h", [(1, 6, 5, 2, 28), (6, 16, 5, 0, 14), (1, 4, 3, 3, 12), (1, 8, 5, 4, 10)])
def test_direct_conv_and_its_gradients_match_torch(cin, cout, k, p, h):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    np.random.seed(3)
    conv = nn.Conv(cin, cout, k, padding=p)
    x = rng.standard_normal((3, cin, h, h)).astype(np.float32)
    c = rng.standard_normal((3, cout, h + 2 * p - k + 1, h + 2 * p - k + 1)).astype(np.float32)
    step = compiled_step(conv)
    got = [a.numpy() for a in step(x, c)]
    decomposed = step.ir("decomposed")
    assert "plane_conv" in decomposed or "plane_correlate" in decomposed
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(conv.weight.numpy()).permute(3, 2, 0, 1).detach().requires_grad_()
    tb = torch.tensor(conv.bias.numpy(), requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=p)
    (ty * torch.tensor(c)).sum().backward()
    want = [ty.detach(), tx.grad, tw.grad.permute(2, 3, 1, 0), tb.grad]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-4 * np.abs(b.numpy()).max())


def test_lenet_conv2_input_gradient_computes_no_garbage_columns():
    """The adjoint (10x10) padded by K - 1 = 4 on the left of its rows only: rows of 14, the
    input's width, so the wide rows are 14 x 14 = 196 outputs (rounded to 224), not 14 x 18."""
    np.random.seed(0)
    conv = nn.Conv(6, 16, 5, padding=0)
    step = compiled_step(conv)
    step(np.zeros((2, 6, 14, 14), np.float32), np.zeros((2, 16, 10, 10), np.float32))
    wide = [line for line in step.ir("decomposed").splitlines() if "plane_conv(" in line]
    assert len(wide) == 1 and "kernel=5, row=14, length=224" in wide[0], wide


def test_a_compiled_conv_over_rows_writes_nchw_from_its_tiles(avx2_tiles):
    """nn.Conv(4, 8, 3) over 16 x 16 images: the input padded channels-first, then one kernel
    (row_conv, NCHW, its channels' loop moved next to the pixels for tiles of channels x pixels,
    the bias its epilogue); the output equals numpy's."""
    rng = np.random.default_rng(0)
    conv = ndl.nn.Conv(4, 8, 3)
    x = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    step = ndl.compile(lambda t: conv(t), state=[conv])
    out = step(x).numpy()
    w, b = conv.weight.numpy(), conv.bias.numpy()
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    expect = np.einsum("nchwij,ijcd->ndhw", windows, w) + b[:, None, None]
    np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-4)
    fused = step.ir("fused")
    assert fused.count("\nkernel ") == 2 and "in another order" not in fused
    assert "blocks of 16 i3 by 4 i2" in step.ir("scheduled")


def test_a_compiled_conv_over_ragged_rows_stores_only_the_row():
    """nn.Conv(16, 8, 3) over 14 x 14 images: rows of 14 in tiles of 8 pixels, the last block
    computing 8 to store 6 from planes padded past the row, the bias in its stores;
    forward and gradients equal numpy's (the gradients take the conv rule, not the rows')."""
    rng = np.random.default_rng(1)
    conv = ndl.nn.Conv(16, 8, 3)
    x = rng.standard_normal((2, 16, 14, 14)).astype(np.float32)
    c = rng.standard_normal((2, 8, 14, 14)).astype(np.float32)
    compiled = compiled_conv_step(conv, output=True)
    out, dx, dw = (a.numpy() for a in compiled(x, c))
    w, b = conv.weight.numpy(), conv.bias.numpy()
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    np.testing.assert_allclose(out, np.einsum("nchwij,ijcd->ndhw", windows, w) + b[:, None, None], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, np.einsum("nchwij,ndhw->ijcd", windows, c), rtol=1e-4, atol=1e-3)
    flipped = np.lib.stride_tricks.sliding_window_view(np.pad(c, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    np.testing.assert_allclose(dx, np.einsum("ndhwij,ijcd->nchw", flipped, w[::-1, ::-1]), rtol=1e-4, atol=1e-3)
    assert "row_conv(" in compiled.ir("decomposed")
    assert "blocks of 8 i3 by 8 i2 accumulate side by side, the last computing 8 to store 6" in compiled.ir("scheduled")


def test_lenet_conv1_forward_runs_over_ragged_nchw_rows_with_its_bias():
    """LeNet's conv1 (1 -> 6, K 5, padding 2, 28 x 28): rows fill a tile of 6 channels x 16 pixels
    (28 = 16 + 12), so the forward is the padding and one kernel writing NCHW with the bias, its
    channels' loop moved next to the pixels, where wide rows left a crop kernel; equal to numpy."""
    rng = np.random.default_rng(2)
    np.random.seed(2)
    conv = nn.Conv(1, 6, 5, padding=2)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    step = ndl.compile(lambda t: conv(t), state=[conv])
    out = step(x).numpy()
    w, b = conv.weight.numpy(), conv.bias.numpy()
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), (5, 5), axis=(2, 3))
    np.testing.assert_allclose(out, np.einsum("nchwij,ijcd->ndhw", windows, w) + b[:, None, None], rtol=1e-4, atol=1e-4)
    assert "row_conv(" in step.ir("decomposed") and "plane_conv(" not in step.ir("decomposed")
    scheduled = step.ir("scheduled")
    assert scheduled.count("\nkernel ") == 2 and "loops: i0<2 i1<28 i2<6 i3<28 | i4<5 i5<5" in scheduled
    assert "blocks of 16 i3 by 6 i2 accumulate side by side, the last computing 16 to store 12" in scheduled
