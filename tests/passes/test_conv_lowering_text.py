"""Each conv's lowering says which rule chose it and that rule's numbers (ir/ops/conv.py `_say`):
a '#' line above the nodes it made in the graph stages, which the parser skips, and a `lowered:`
line beside the kernel that runs them, which the kernel parser reads back."""
import numpy as np

import ndlc as ndl
from ndlc import nn
from ndlc.ir import parse, parse_kernels, print_graph
from ndlc.jit.compile import compile_graph
from ndlc.passes.decompose import decompose
from gradcheck import compiled_conv_step


def _conv(n, cin, h, cout, k, s, p):
    o = (h + 2 * p - k) // s + 1
    return parse(f"""
graph @c(%x: f32[{n},{h},{h},{cin}], %w: f32[{k},{k},{cin},{cout}]) {{
  %0 = conv(%x, %w, stride={s}, padding={p}) : f32[{n},{o},{o},{cout}]
  return %0
}}""")


def _round_trips(graph):
    """The graph's text, checked to parse back to an equal graph (its '#' lines skipped)."""
    text = print_graph(graph)
    again = parse(text)
    assert again == graph and "#" not in print_graph(again), text
    return text


def _kernel_of(scheduled, node):
    """The scheduled kernel's text that fuses `node` (e.g. '%8 matmul')."""
    kernels = scheduled.split("\nkernel ")
    (found,) = [k for k in kernels if "  fuses: " in k and node in k.split("  fuses: ")[1].split("\n")[0]]
    return found


def test_a_stride_1_conv_whose_rows_fill_tiles_says_why_it_is_a_row_conv(avx2_tiles):
    text = _round_trips(decompose(_conv(8, 6, 14, 16, 5, 1, 2)))
    assert text == """\
graph @c(%x: f32[8,14,14,6], %w: f32[5,5,6,16]) {
  # conv 6->16 k5 s1 p2 on 8x14x14: row_conv over NCHW planes in register tiles of 8 channels x 8 pixels: \
stride 1, 196 output pixels >= FOLD_PIXELS 64; im2col packs 0.94 MB for a gemm
  %0 = permute(%x, axes=(0, 3, 1, 2)) : f32[8,6,14,14]
  %1 = pad(%0, widths=((0, 0), (0, 0), (2, 2), (2, 4))) : f32[8,6,18,20]
  %2 = row_conv(%1, %w, width=14) : f32[8,16,14,14]
  %3 = permute(%2, axes=(0, 2, 3, 1)) : f32[8,14,14,16]
  return %3
}"""


def test_a_strided_conv_of_five_channels_says_why_it_is_im2col_and_a_gemm(avx2_tiles):
    why = ("conv 16->5 k3 s2 p1 on 4x20x20: im2col + a gemm per image (5x144 @ 144x100): stride 2, Cin*K*K 144 > "
           "DIRECT_MAX 32, no register tile for Wo 10 x Cout 5; im2col packs 0.23 MB")
    graph = _conv(4, 16, 20, 5, 3, 2, 1)
    text = _round_trips(decompose(graph))
    assert text.split("\n")[1:3] == [
        f"  # {why}", "  %0 = pad(%x, widths=((0, 0), (1, 1), (1, 1), (0, 0))) : f32[4,22,22,16]"], text
    scheduled = compile_graph(graph).ir("scheduled")
    assert f"  lowered: {why}\n" in _kernel_of(scheduled, "matmul"), scheduled
    assert str(parse_kernels(scheduled)) == scheduled


def test_small_images_fold_the_batch_into_one_gemm_and_say_so(avx2_tiles):
    text = _round_trips(decompose(_conv(4, 64, 4, 10, 3, 1, 1)))
    assert ("  # conv 64->10 k3 s1 p1 on 4x4x4: im2col of the batch + one gemm (64x576 @ 576x10): 16 output pixels "
            "< FOLD_PIXELS 64, no register tile for Wo 4 x Cout 10; im2col packs 0.15 MB\n") in text, text


def _step_stages(cin, cout, k, s, n, h):
    """The decomposed and scheduled stages of `nn.Conv(cin, cout, k, stride=s)`'s gradients on n x cin x h x h."""
    conv = nn.Conv(cin, cout, k, stride=s)
    step = compiled_conv_step(conv)
    rng = np.random.default_rng(0)
    x = ndl.Tensor(rng.standard_normal((n, cin, h, h), dtype=np.float32))
    c = ndl.Tensor(rng.standard_normal(conv(x).shape, dtype=np.float32))
    step(x, c)
    return step.ir("decomposed"), step.ir("scheduled")


def test_the_gradients_of_a_conv_of_small_images_say_why_they_are_gemms_and_col2im(avx2_tiles):
    decomposed, scheduled = _step_stages(64, 128, 3, 2, 4, 8)
    input_why = ("input gradient of conv 64->128 k3 s2 p1 on 4x8x8: one gemm over the batch (64x128 @ 128x576), "
                 "then col2im: 16 output pixels < FOLD_PIXELS 64, stride 2")
    weight_why = ("weight gradient of conv 64->128 k3 s2 p1 on 4x8x8: one gemm over the batch (576x64 @ 64x128) of "
                  "its windows: 16 output pixels < FOLD_PIXELS 64")
    assert f"  # {input_why}\n" in decomposed and f"  # {weight_why}\n" in decomposed, decomposed
    gemms = [k for k in scheduled.split("\nkernel ") if "call sgemm(" in k]
    assert {w for k in gemms for w in k.split("\n") if w.startswith("  lowered: ")} == {
        f"  lowered: {input_why}", f"  lowered: {weight_why}"}, scheduled


def test_the_gradients_of_a_direct_conv_say_why_they_run_over_wide_rows(avx2_tiles):
    decomposed, scheduled = _step_stages(1, 6, 5, 1, 8, 28)
    input_why = ("input gradient of conv 1->6 k5 s1 p2 on 8x28x28: plane_conv of the adjoint with the flipped kernel "
                 "over wide rows: Cout*K*K 150 <= DIRECT_ADJOINT_MAX 150, its forward direct")
    weight_why = ("weight gradient of conv 1->6 k5 s1 p2 on 8x28x28: plane_correlate of the forward's wide rows with "
                  "the adjoint, summed over images: Cin*K*K 25 <= DIRECT_MAX 32, its forward direct")
    assert f"  # {input_why}\n" in decomposed and f"  # {weight_why}\n" in decomposed, decomposed
    assert f"  lowered: {input_why}\n" in _kernel_of(scheduled, "plane_conv"), scheduled
    assert f"  lowered: {weight_why}\n" in _kernel_of(scheduled, "plane_correlate"), scheduled


def test_the_convs_of_a_scan_body_and_of_its_gradient_say_why(avx2_tiles):
    """A recurrence over a conv (ndl.scan): the passes that copy its body's nodes (scans.py shares
    the gradient's forward loop, scan_hoist.py, split.py) keep each conv's reason (Node.remade)."""
    rng = np.random.default_rng(0)
    w = ndl.Tensor(rng.standard_normal((3, 3, 4, 4), dtype=np.float32), requires_grad=True)

    def step(h0, xs):
        loss = ndl.scan(lambda h, x: (ndl.tanh(ndl.conv(h, w, stride=1, padding=1) + x),) * 2, h0, xs)[0].sum()
        loss.backward()
        return w.grad

    compiled = ndl.compile(step)
    compiled(ndl.Tensor(rng.standard_normal((2, 6, 6, 4), dtype=np.float32)),
             ndl.Tensor(rng.standard_normal((3, 2, 6, 6, 4), dtype=np.float32)))
    decomposed = compiled.ir("decomposed")
    conv = "conv 4->4 k3 s1 p1 on 2x6x6: "
    assert [line.split(conv)[0] for line in decomposed.splitlines() if conv in line] == [
        "    # ", "    # input gradient of ", "    # weight gradient of "], decomposed
