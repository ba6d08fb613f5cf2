"""A strided conv's input gradient as one stride-1 conv over its s·s phases (ir/ops/conv_adjoint.py:
conv_input_phases): the graph it builds as text, its values against a scatter of the windows in
numpy and finite differences, and compiled gradients against PyTorch."""
import re

import numpy as np
import pytest

import ndlc as ndl
from gradcheck import check_gradients, compiled_conv_step
from ndlc import nn
from ndlc.ir import Builder, Graph, TensorType, interpret, print_graph
from ndlc.ir.ops.conv_adjoint import PHASE_WASTE, conv_input_phases, phase_waste
from oracle import assert_close


def phases_graph(x, w, g, s, p):
    graph = Graph("dx")
    args = [graph.add_input(TensorType(shape, "f64"), name) for shape, name in ((x, "x"), (w, "w"), (g, "g"))]
    graph.outputs = [conv_input_phases(Builder(graph), *args, s, p)]
    return graph


def scattered(w, g, s, p, size):
    """The reference: each output pixel's adjoint times the weight, added back over its window."""
    k = w.shape[:2]
    batch, ho, wo, _ = g.shape
    height, width = size[0] + 2 * p, size[1] + 2 * p
    dx = np.zeros((batch, height, width, w.shape[2]))
    for i in range(k[0]):
        for j in range(k[1]):
            dx[:, i:i + s * ho:s, j:j + s * wo:s] += g @ w[i, j].T
    return dx[:, p:p + size[0], p:p + size[1]]


def test_stride_2_3x3_padded_is_one_conv_of_four_phases():
    graph = phases_graph((1, 5, 5, 2), (3, 3, 2, 4), (1, 3, 3, 4), 2, 1)
    assert print_graph(graph) == """\
graph @dx(%x: f64[1,5,5,2], %w: f64[3,3,2,4], %g: f64[1,3,3,4]) {
  %0 = pad(%w, widths=((0, 1), (0, 1), (0, 0), (0, 0))) : f64[4,4,2,4]
  %1 = reshape(%0, shape=(2, 2, 2, 2, 2, 4)) : f64[2,2,2,2,2,4]
  %2 = flip(%1, axes=(0, 2)) : f64[2,2,2,2,2,4]
  %3 = permute(%2, axes=(0, 2, 5, 1, 3, 4)) : f64[2,2,4,2,2,2]
  %4 = reshape(%3, shape=(2, 2, 4, 8)) : f64[2,2,4,8]
  %5 = pad(%g, widths=((0, 0), (1, 0), (1, 0), (0, 0))) : f64[1,4,4,4]
  %6 = conv(%5, %4, stride=1, padding=0) : f64[1,3,3,8]
  %7 = reshape(%6, shape=(1, 3, 3, 2, 2, 2)) : f64[1,3,3,2,2,2]
  %8 = permute(%7, axes=(0, 1, 3, 2, 4, 5)) : f64[1,3,2,3,2,2]
  %9 = reshape(%8, shape=(1, 6, 6, 2)) : f64[1,6,6,2]
  %10 = slice(%9, start=(0, 1, 1, 0), stop=(1, 6, 6, 2)) : f64[1,5,5,2]
  return %10
}"""


def test_a_stride_past_the_kernel_pads_the_phases_no_tap_reads():
    """K = 2 < s = 3 (and 1 across): the kernel is its phases as they are (no zero taps), and the
    phase rows 2 and columns 1, 2, which read no tap, are zeros padded in after the conv."""
    graph = phases_graph((1, 7, 4, 1), (2, 1, 1, 3), (1, 2, 2, 3), 3, 0)
    text = print_graph(graph)
    assert "%0 = reshape(%w, shape=(1, 2, 1, 1, 1, 3))" in text, text
    assert "conv(%4, %3, stride=1, padding=0) : f64[1,3,2,2]" in text, text
    assert "pad(%7, widths=((0, 0), (0, 0), (0, 1), (0, 0), (0, 2), (0, 0))) : f64[1,3,3,2,3,1]" in text, text


def test_phase_waste_counts_phase_rows_past_the_image_and_zero_taps():
    """3x3 stride 2 padded by 1: 4x4 images take 3 x 3 phase rows of 2 x 2 taps and 4 phases per
    2 x 2 outputs of 9 taps (4.0: col2im); 2x2 images 2 x 2 rows per output (7.1: col2im); a 5x5
    kernel at stride 2 over 9x9 images 1.44 (the phases)."""
    assert phase_waste((64, 4, 4, 32), (3, 3, 32, 64), 2, 1) == 4.0 > PHASE_WASTE
    assert phase_waste((64, 2, 2, 64), (3, 3, 64, 128), 2, 1) == 64 / 9 > PHASE_WASTE
    assert phase_waste((64, 9, 9, 5), (5, 5, 5, 12), 2, 2) == 1.44 <= PHASE_WASTE


@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("p", [0, 1, 2, 4])
@pytest.mark.parametrize("k,size", [((3, 3), (9, 7)), ((5, 5), (9, 9)), ((2, 3), (8, 11)), ((1, 1), (5, 6)),
                                    ((4, 4), (10, 10))])
def test_phases_equal_the_scattered_windows(s, p, k, size):
    rng = np.random.default_rng(s * 100 + p * 10 + k[0])
    ho, wo = ((n + 2 * p - kk) // s + 1 for n, kk in zip(size, k))
    w = rng.standard_normal(k + (2, 3))
    g = rng.standard_normal((2, ho, wo, 3))
    graph = phases_graph((2,) + size + (2,), w.shape, g.shape, s, p)
    (dx,) = interpret(graph, np.zeros((2,) + size + (2,)), w, g)
    np.testing.assert_allclose(dx, scattered(w, g, s, p, size), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("s,p,k", [(2, 0, 3), (2, 1, 3), (3, 2, 5), (3, 0, 2)])
def test_strided_conv_gradients_match_finite_differences(s, p, k):
    rng = np.random.default_rng(s + p + k)
    x = rng.standard_normal((2, 7, 6, 2))
    w = rng.standard_normal((k, k, 2, 3))
    check_gradients(lambda x, w: ndl.conv(x, w, stride=s, padding=p), x, w)


# (Cin, Cout, K, stride, padding, H, phases): the sweep's two slow cases, shrunk in the batch, odd sizes,
# and images too small for phases (4x4 -> 1x1, unpadded, waste 7.1; ResNet9's 4x4 -> 2x2, 4.0, and
# 8x8 -> 4x4, 2.78: col2im at stride 2, by phases)
@pytest.mark.parametrize("cin,cout,k,s,p,h,phases", [
    (5, 12, 5, 2, 2, 9, True), (16, 32, 3, 2, 1, 16, True), (3, 8, 7, 2, 3, 13, True), (4, 6, 3, 3, 0, 11, True),
    (3, 5, 5, 3, 2, 10, True), (8, 8, 1, 2, 0, 9, True), (6, 4, 3, 2, 0, 4, False), (5, 6, 3, 2, 1, 4, False),
    (3, 4, 3, 2, 1, 8, False)])
def test_compiled_strided_conv_gradients_match_torch(cin, cout, k, s, p, h, phases):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(h)
    np.random.seed(h)
    conv = nn.Conv(cin, cout, k, stride=s, padding=p)
    ho = (h + 2 * p - k) // s + 1
    x = rng.standard_normal((3, cin, h, h)).astype(np.float32)
    c = rng.standard_normal((3, cout, ho, ho)).astype(np.float32)
    compiled = compiled_conv_step(conv)
    dx, dw = (a.numpy() for a in compiled(x, c))
    decomposed = compiled.ir("decomposed")
    col2im = rf"= matmul\(.*\) : f32\[{3 * ho * ho},{k * k * cin}\]"  # (N·Ho·Wo, K·K·Cin) windows' adjoint
    assert "dilate" not in decomposed and (re.search(col2im, decomposed) is None) == phases, decomposed
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(conv.weight.numpy()).permute(3, 2, 0, 1).detach().requires_grad_()
    (torch.nn.functional.conv2d(tx, tw, stride=s, padding=p) * torch.tensor(c)).sum().backward()
    assert_close(dx, tx.grad.numpy(), "input gradient")
    assert_close(dw, tw.grad.permute(2, 3, 1, 0).numpy(), "weight gradient")
