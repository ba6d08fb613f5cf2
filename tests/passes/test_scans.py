"""Scans readied for fusion and fused as step kernels: text in, text out."""
import numpy as np

from ndlc.ir import interpret, parse, parse_kernels, print_graph
from ndlc.passes.decompose import decompose
from ndlc.passes.fusion import fuse
from ndlc.passes.scans import share_scans, with_bodies
from ndlc.passes.simplify import simplify

BODY = """graph @body(%h: f32[2], %x: f32[2], %v: f32[2]) {
    %0 = multiply(%h, %v) : f32[2]
    %1 = add(%0, %x) : f32[2]
    return %1"""

TWICE = f"""
graph @g(%h0: f32[2], %xs: f32[3,2], %w: f32[2]) {{
  %0 = scan(%h0, %xs, %w, carries=1, xs=1, length=3, reverse=false, body={BODY}
  }}) : f32[2]
  %1 = part(%0, offset=0, shape=(2,)) : f32[2]
  %2 = exp(%1) : f32[2]
  %3 = scan(%h0, %xs, %w, carries=1, xs=1, length=3, reverse=false, body={BODY}, %0
  }}) : f32[8]
  %4 = part(%3, offset=2, shape=(3, 2)) : f32[3,2]
  return %2, %4
}}"""


def test_a_scan_that_a_later_one_repeats_is_replaced_by_it():
    graph = parse(TWICE)
    got = share_scans(graph)
    assert print_graph(got) == f"""\
graph @g(%h0: f32[2], %xs: f32[3,2], %w: f32[2]) {{
  %0 = scan(%h0, %xs, %w, carries=1, xs=1, length=3, reverse=false, body={BODY}, %0
  }}) : f32[8]
  %1 = part(%0, offset=0, shape=(2,)) : f32[2]
  %2 = exp(%1) : f32[2]
  %3 = part(%0, offset=2, shape=(3, 2)) : f32[3,2]
  return %2, %3
}}"""
    inputs = [np.arange(2, dtype=np.float32), np.ones((3, 2), np.float32), np.full(2, 0.5, np.float32)]
    for a, b in zip(interpret(graph, *inputs), interpret(got, *inputs)):
        np.testing.assert_array_equal(a, b)


def test_scans_of_other_operands_or_bodies_stay_apart():
    head, tail = TWICE.split("  %3 = scan", 1)
    other = head + "  %3 = scan" + tail.replace("add(%0, %x)", "multiply(%0, %x)", 1)
    for text in (TWICE.replace("%3 = scan(%h0, %xs, %w", "%3 = scan(%w, %xs, %h0"), other):
        graph = parse(text)
        assert share_scans(graph) is graph


def test_the_graph_passes_run_on_each_body():
    graph = parse("""
graph @g(%h0: f32[2], %xs: f32[3,2]) {
  %0 = scan(%h0, %xs, carries=1, xs=1, length=3, reverse=false, body=graph @body(%h: f32[2], %x: f32[2]) {
    %0 = multiply(%h, %x) : f32[2]
    %1 = multiply(%h, %x) : f32[2]
    %2 = add(%0, %1) : f32[2]
    return %2
  }) : f32[2]
  return %0
}""")
    got = with_bodies(graph, simplify)
    assert print_graph(got.nodes[0].attrs["body"]) == """\
graph @body(%h: f32[2], %x: f32[2]) {
  %0 = multiply(%h, %x) : f32[2]
  %1 = add(%0, %0) : f32[2]
  return %1
}"""
    assert with_bodies(got.nodes[0].attrs["body"], simplify) is got.nodes[0].attrs["body"]  # no scan: itself


def test_each_step_runs_the_bodys_kernels_at_its_offsets():
    program = fuse(decompose(share_scans(parse(TWICE))))
    steps = [k for k in program.kernels if k.step]
    assert [k.step for k in steps] == [f"{t} of %0 scan" for t in range(3)]
    assert [k.step for k in parse_kernels(str(program)).kernels if k.step] == [k.step for k in steps]
    assert "\n".join(str(k) for k in steps) == """\
kernel k0 -> %0.0.1, %0
  fuses: %0 scan, body %0 multiply, body %1 add
  stored because: %0.0.1: in the body, graph output; %0: in the body, graph output
  recomputes: %0 multiply (used by 2 nodes, cost 1 <= 6)
  merged: %0 (in the pass of phase 0)
  step: 0 of %0 scan
  loops: i0<2
  $0 = %h0[i0]
  $1 = %w[i0]
  $2 = %xs[i0]
  store %0.0.1[i0] = add(mul($0, $1), $2)
  store %0[i0 + 2] = mul($0, $1)
kernel k1 -> %0.1.1, %0
  fuses: %0 scan, body %0 multiply, body %1 add
  stored because: %0.1.1: in the body, graph output; %0: in the body, graph output
  recomputes: %0 multiply (used by 2 nodes, cost 1 <= 6)
  merged: %0 (in the pass of phase 0)
  step: 1 of %0 scan
  loops: i0<2
  $0 = %0.0.1[i0]
  $1 = %w[i0]
  $2 = %xs[i0 + 2]
  store %0.1.1[i0] = add(mul($0, $1), $2)
  store %0[i0 + 4] = mul($0, $1)
kernel k2 -> %0
  fuses: %0 scan, body %0 multiply, body %1 add
  stored because: %0: in the body, graph output; %0: in the body, graph output
  recomputes: %0 multiply (used by 2 nodes, cost 1 <= 6)
  merged: %0 (in the pass of phase 0)
  step: 2 of %0 scan
  loops: i0<2
  $0 = %0.1.1[i0]
  $1 = %w[i0]
  $2 = %xs[i0 + 4]
  store %0[i0] = add(mul($0, $1), $2)
  store %0[i0 + 6] = mul($0, $1)"""
