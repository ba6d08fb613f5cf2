"""A conv and its gradients (ir/ops/conv.py) over the kernel taps that read the image only
(conv_adjoint.py: live_taps), and the weight gradient as one product over the batch where the
forward packs no windows; the graphs' products, and compiled gradients against numpy."""
import re

import numpy as np
import pytest

import ndlc as ndl
from ndlc import nn
from ndlc.ir import get_op
from ndlc.ir.ops.conv_adjoint import live_taps
from gradcheck import compiled_conv_step
from oracle import assert_close


def compiled_gradients(conv, x, c):
    """The compiled input and weight gradients of sum(conv(x) * c), and the compiled step."""
    compiled = compiled_conv_step(conv)
    dx, dw = (a.numpy() for a in compiled(x, c))
    return dx, dw, compiled


def test_a_1x1_image_reads_the_middle_tap_of_a_3x3_kernel_only():
    """ResNet9's 128-channel layers: one tap of nine, unpadded; its 2x2 -> 1x1 layer: four."""
    assert live_taps((256, 1, 1, 128), (3, 3, 128, 128), 1, 1) == ([(1, 2), (1, 2)], 0)
    assert live_taps((256, 2, 2, 64), (3, 3, 64, 128), 2, 1) == ([(1, 3), (1, 3)], 0)


def test_no_crop_where_every_tap_reads_or_the_padding_would_differ():
    assert live_taps((8, 4, 4, 32), (3, 3, 32, 32), 1, 1) is None  # every tap reads the image
    assert live_taps((8, 8, 8, 3), (7, 7, 3, 16), 4, 3) is None  # ResNet9's first layer
    assert live_taps((2, 1, 3, 2), (3, 3, 2, 2), 1, 1) is None  # rows crop to 1, columns keep 3
    assert live_taps((2, 2, 2, 2), (5, 5, 2, 2), 1, 3) is None  # no tap of row 0: the crop starts past p


def reference_gradients(x, w, c, s, p):
    """d/dx and d/dw of sum(conv(x, w) * c) in float64: each output's window scattered back."""
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho, wo = c.shape[1:3]
    dx, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(k):
        for j in range(k):
            window = xp[:, i:i + s * ho:s, j:j + s * wo:s]
            dw[i, j] = np.einsum("nyxc,nyxo->co", window, c)
            dx[:, i:i + s * ho:s, j:j + s * wo:s] += c @ w[i, j].T
    return dx[:, p:p + x.shape[1], p:p + x.shape[2]], dw


# (Cin, Cout, H, stride): ResNet9's 1x1 layers and its 2x2 -> 1x1 layer, shrunk in the channels
@pytest.mark.parametrize("cin,cout,h,s", [(8, 8, 1, 1), (4, 8, 2, 2)])
def test_cropped_gradients_equal_numpy_and_multiply_live_taps_only(cin, cout, h, s):
    rng = np.random.default_rng(h)
    np.random.seed(h)
    conv = nn.Conv(cin, cout, 3, stride=s)
    x = rng.standard_normal((5, cin, h, h)).astype(np.float32)
    c = rng.standard_normal((5, cout, 1, 1)).astype(np.float32)

    dx, dw, compiled = compiled_gradients(conv, x, c)
    text = compiled.ir("decomposed")
    live = h * h * cin  # a live tap per input pixel: the products' inner size, not the 3x3 window's 9·Cin
    assert re.findall(r"= matmul\(.*\) : (f32\[.*\])", text) == [f"f32[5,{live}]", f"f32[{live},{cout}]"], text
    assert f"widths=((1, {2 - h}), (1, {2 - h}), (0, 0), (0, 0))) : f32[3,3,{cin},{cout}]" in text, text
    nhwc = x.transpose(0, 2, 3, 1).astype(np.float64)
    ref_dx, ref_dw = reference_gradients(nhwc, conv.weight.numpy().astype(np.float64),
                                         c.transpose(0, 2, 3, 1).astype(np.float64), s, 1)
    assert_close(dx, ref_dx.transpose(0, 3, 1, 2), "input gradient")
    assert_close(dw, ref_dw, "weight gradient")
    assert not dw[0].any() and not dw[:, 0].any()  # the taps over padding only: zero


def test_a_tiled_forward_s_weight_gradient_is_one_product_over_the_batch():
    """ResNet9's first layer (7x7 stride 4 onto 8x8, its forward a nest in register tiles): one
    (K·K·Cin, N·Ho·Wo) @ (N·Ho·Wo, Cout) product, no product per image summed afterwards."""
    rng = np.random.default_rng(7)
    np.random.seed(7)
    conv = nn.Conv(3, 16, 7, stride=4)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    c = rng.standard_normal((4, 16, 8, 8)).astype(np.float32)

    def step(t, c):
        (conv(t) * c).sum().backward()
        return conv.weight.grad
    compiled = ndl.compile(step, state=[conv])
    dw = compiled(x, c).numpy()
    text = compiled.ir("decomposed")
    assert re.findall(r"= matmul\(.*\) : (f32\[.*\])", text) == ["f32[147,16]"], text
    assert "summation" not in text, text
    _, ref_dw = reference_gradients(x.transpose(0, 2, 3, 1).astype(np.float64), conv.weight.numpy().astype(np.float64),
                                    c.transpose(0, 2, 3, 1).astype(np.float64), 4, 3)
    assert_close(dw, ref_dw, "weight gradient")


@pytest.mark.parametrize("cin,cout,h,s", [(8, 8, 1, 1), (4, 8, 2, 2)])
def test_the_forward_multiplies_live_taps_only(cin, cout, h, s):
    """ResNet9's 1x1 layers and its 2x2 -> 1x1 layer, forward: one product over the live taps."""
    rng = np.random.default_rng(h)
    np.random.seed(h)
    conv = nn.Conv(cin, cout, 3, stride=s)
    x = rng.standard_normal((5, cin, h, h)).astype(np.float32)
    compiled = ndl.compile(lambda t: conv(t), state=[conv])
    y = compiled(x).numpy()
    live = h * h * cin
    assert re.findall(r"= matmul\(.*\) : (f32\[.*\])", compiled.ir("decomposed")) == [f"f32[5,{cout}]"]
    assert f"f32[5,{live}]" in compiled.ir("decomposed") and f"f32[5,{9 * cin}]" not in compiled.ir("decomposed")
    expected = get_op("conv").reference(x.transpose(0, 2, 3, 1).astype(np.float64),
                                        conv.weight.numpy().astype(np.float64), stride=s, padding=1)
    assert_close(y, expected.transpose(0, 3, 1, 2) + conv.bias.numpy().reshape(1, -1, 1, 1), "output")


def test_a_small_image_s_input_gradient_is_the_adjoint_s_conv_in_register_tiles():
    """ResNet9's 4x4 32 -> 32 layers (TILED_PIXELS input pixels): the input gradient is the adjoint's
    padded conv with the flipped kernel, a nest in tiles of 4 pixels x 32 channels (no (N·16, 288)
    product, no col2im), beside the adjoint's NHWC copy that the weight gradient's product reads."""
    rng = np.random.default_rng(4)
    np.random.seed(4)
    conv = nn.Conv(32, 32, 3)
    x = rng.standard_normal((6, 32, 4, 4)).astype(np.float32)
    c = rng.standard_normal((6, 32, 4, 4)).astype(np.float32)

    dx, dw, compiled = compiled_gradients(conv, x, c)
    text = compiled.ir("decomposed")
    assert re.findall(r"= matmul\(.*\) : (f32\[.*\])", text) == ["f32[288,32]"], text  # the weight gradient's
    assert "unwindows" not in text, text
    scheduled = compiled.ir("scheduled")
    nest = next(k for k in scheduled.split("\n\n") if re.search(r"fuses: .*%\d+ conv\b", k) and "i0<6" in k)
    assert "loops: i0<6 i1<4 i2<4 i3<32 | i4<3 i5<3 i6<32\n  strategy: rows (blocks of 32 i3 by 4 i2" in nest, nest
    ref_dx, ref_dw = reference_gradients(x.transpose(0, 2, 3, 1).astype(np.float64),
                                         conv.weight.numpy().astype(np.float64),
                                         c.transpose(0, 2, 3, 1).astype(np.float64), 1, 1)
    assert_close(dx, ref_dx.transpose(0, 3, 1, 2), "input gradient")
    assert_close(dw, ref_dw, "weight gradient")


def test_a_32x32_adjoint_s_weight_gradient_runs_in_tiles_its_transpose_blocked_alone():
    """The bench's 3x3 16 -> 32 layer of 32x32 images at batch 32: its weight gradient is
    the input correlated with the adjoint in register tiles, no im2col and no gemms (its adjoint,
    32 x 32 x 32 elements an image, within TILED_WINDOWS_ADJOINT); the adjoint's copy for the tiles
    reads NCHW planes 4 KiB apart, so it stays out of the bias gradient's loops and is blocked a
    line at a time, 8 rows a block (passes/canonical.py)."""
    rng = np.random.default_rng(9)
    np.random.seed(9)
    conv = nn.Conv(16, 32, 3, bias=True)
    x = rng.standard_normal((32, 16, 32, 32)).astype(np.float32)
    c = rng.standard_normal((32, 32, 32, 32)).astype(np.float32)

    def step(t, c):
        t.requires_grad = True
        (conv(t) * c).sum().backward()
        return t.grad, conv.weight.grad, conv.bias.grad
    compiled = ndl.compile(step, state=[conv])
    dx, dw, db = (a.numpy() for a in compiled(x, c))
    assert "matmul" not in compiled.ir("decomposed")
    scheduled = compiled.ir("scheduled")
    assert "a transpose reading %c 4096 bytes apart along its last loop stays apart (blocked)" in scheduled, scheduled
    assert "loops: i0<32 i1<4 i2<32 i3<32 i4<8\n" in scheduled, scheduled
    ref_dx, ref_dw = reference_gradients(x.transpose(0, 2, 3, 1).astype(np.float64),
                                         conv.weight.numpy().astype(np.float64),
                                         c.transpose(0, 2, 3, 1).astype(np.float64), 1, 1)
    assert_close(dw, ref_dw, "weight gradient")
    assert_close(dx, ref_dx.transpose(0, 3, 1, 2), "input gradient")
    assert_close(db, c.astype(np.float64).sum((0, 2, 3)), "bias gradient")
