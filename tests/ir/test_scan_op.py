"""The scan op: its region prints and parses back, verifies, and is interpreted as the loop it is;
malformed scans are refused with the reason."""
import re

import numpy as np
import pytest

from ndlc.errors import IRParseError, VerifyError
from ndlc.ir import interpret, parse, print_graph

RNN = """
graph @rnn(%h0: f32[2], %xs: f32[3,2], %w: f32[2]) {
  %0 = scan(%h0, %xs, %w, carries=1, xs=1, length=3, reverse=false, body=graph @body(%h: f32[2], %x: f32[2], %v: f32[2]) {
    %0 = multiply(%h, %v) : f32[2]
    %1 = add(%0, %x) : f32[2]
    %2 = tanh(%1) : f32[2]
    return %2, %2
  }) : f32[8]
  %1 = part(%0, offset=0, shape=(2,)) : f32[2]
  %2 = part(%0, offset=2, shape=(3, 2)) : f32[3,2]
  return %1, %2
}"""

ARGS = (np.array([1.0, -0.5], np.float32), np.arange(6, dtype=np.float32).reshape(3, 2) / 6,
        np.array([0.5, 2.0], np.float32))


def loop(h, xs, w, reverse=False):
    """The recurrence RNN's scan runs, as a numpy loop."""
    ys = [None] * len(xs)
    for t in reversed(range(len(xs))) if reverse else range(len(xs)):
        h = ys[t] = np.tanh(h * w + xs[t])
    return h, np.stack(ys)


def test_a_scan_prints_and_parses_back_to_the_same_text():
    assert print_graph(parse(RNN)) == RNN.strip("\n")


def test_the_interpreter_runs_the_body_once_per_step():
    final, ys = interpret(parse(RNN), *ARGS)
    want_final, want_ys = loop(*ARGS)
    np.testing.assert_allclose(final, want_final, rtol=1e-6)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-6)


def test_a_reverse_scan_runs_from_the_last_step_and_stacks_in_place():
    final, ys = interpret(parse(RNN.replace("reverse=false", "reverse=true")), *ARGS)
    want_final, want_ys = loop(*ARGS, reverse=True)
    np.testing.assert_allclose(final, want_final, rtol=1e-6)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-6)


@pytest.mark.parametrize("change, message", [
    (("%xs: f32[3,2]", "%xs: f32[4,2]"), "operand 1 is f32[4,2], the body's input 1 is f32[2], so the operand must be f32[3,2]"),
    (("return %2, %2\n", "%3 = summation(%2, axes=(0,)) : f32[]\n    return %3, %2\n"),
     "the body returns carry 0 as f32[], it takes it as f32[2]"),
    (("length=3", "length=0"), "length 0 must be at least 1"),
    (("%2 = part(%0, offset=2", "%2 = part(%0, offset=4"), "elements [4, 10) lie outside the 8 packed ones"),
    (("%2 = tanh(%1) : f32[2]\n    return %2, %2", "%2 = tanh(%1) : f32[2]\n    %3 = cast(%2, dtype=f64) : f64[2]\n"
      "    return %2, %3"), "one dtype"),
])
def test_a_malformed_scan_is_refused_with_the_reason(change, message):
    text = RNN.replace(*change)
    assert text != RNN
    with pytest.raises((VerifyError, IRParseError), match=re.escape(message)):
        parse(text)


def test_a_region_has_its_own_names_and_errors_name_its_line():
    with pytest.raises(IRParseError, match="use of undefined value %xs") as e:
        parse(RNN.replace("%1 = add(%0, %x)", "%1 = add(%0, %xs)"))
    assert e.value.line == 5
