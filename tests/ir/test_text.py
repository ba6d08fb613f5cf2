"""The text form: printing, parsing back to an equal graph, and errors naming line and column."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc.ir import IRParseError, parse, print_graph
from ndlc.passes import autodiff

TRAIN_STEP = """\
graph @train_step(%x: f32[4,3], %w: f32[3,2] state, %y: i64[4]) {
  %0 = matmul(%x, %w) : f32[4,2]
  %1 = logsoftmax(%0, axis=1) : f32[4,2]
  %2 = summation(%1, axes=(0, 1)) : f32[]
  %3 = mul_scalar(%w, scalar=0.5) : f32[3,2]
  %4 = full(shape=(), value=-inf, dtype=f32) : f32[]
  %5 = pad(%x, widths=((1, 0), (0, 2))) : f32[5,5]
  return %2, %4, %5, new %w = %3
}"""


def test_print_then_parse_is_identity_on_text():
    assert print_graph(parse(TRAIN_STEP)) == TRAIN_STEP


def test_parse_then_print_gives_an_equal_graph():
    g = ndl.trace(lambda x, w: ndl.relu(x @ w).sum(), np.zeros((2, 3), np.float32), np.zeros((3, 4), np.float32))
    g = autodiff(g)
    again = parse(str(g))
    assert again == g
    assert str(again) == str(g)


def test_parsed_graph_runs():
    g = parse(TRAIN_STEP)
    x = np.ones((4, 3), np.float32)
    w = np.ones((3, 2), np.float32)
    loss, inf, padded = ndl.ir.interpret(g, x, w, np.zeros(4, np.int64))
    assert np.isclose(loss, 8 * np.log(0.5))
    assert np.isneginf(inf) and padded.shape == (5, 5)


def test_locations_print_and_parse():
    x = ndl.Tensor([1.0, 2.0])
    g = ndl.trace(lambda a: ndl.exp(a) + a, x)
    text = print_graph(g, with_locs=True)
    assert 'loc("' in text and "test_text.py" in text
    assert parse(text).nodes[0].loc == g.nodes[0].loc


def test_comments_and_whitespace_are_ignored():
    text = "# a comment\ngraph @g(%a: f64[2]) {\n   %r = exp(%a)   : f64[2]  # why not\n  return %r\n}\n"
    assert parse(text).nodes[0].op == "exp"


@pytest.mark.parametrize("text,message,line,column", [
    ("graph @g(%a: f32[2]) {\n  %0 = frobnicate(%a) : f32[2]\n  return %0\n}", "unknown op 'frobnicate'", 2, 8),
    ("graph @g(%a: f32[2]) {\n  %0 = exp(%a, color=1) : f32[2]\n  return %0\n}", "unknown attribute 'color'", 2, 8),
    ("graph @g(%a: f32[2]) {\n  %0 = exp(%b) : f32[2]\n  return %0\n}", "undefined value %b", 2, 12),
    ("graph @g(%a: f32[2]) {\n  %0 = exp(%a) : f32[3]\n  return %0\n}", "result type f32[3]", 2, 8),
    ("graph @g(%a: q7[2]) {\n  return %a\n}", "unknown dtype", 1, 14),
    ("graph @g(%a: f32[2]) {\n  %0 = exp(%a) f32[2]\n  return %0\n}", "expected ':'", 2, 16),
    ("graph @g(%a: f32[2]) {\n  %0 = exp(%a) : f32[2]\n  %0 = exp(%0) : f32[2]\n  return %0\n}", "defined twice", 3, 3),
    ("graph @g(%a: f32[2]) {\n  %0 = summation(%a) : f32[]\n  return %0\n}", "missing attribute 'axes'", 2, 8),
    ("graph @g(%a: f32[2]) {\n  %0 = summation(%a, axes=x) : f32[]\n  return %0\n}", "axes='x' must be", 2, 8),
    ("graph @g(%a: f32[2]) {\n  return new %a = %a\n}", "not a state input", 2, 14),
    ("graph @g(%a: f32[2]) {\n  return %a\n", "expected ',' or '}'", 3, 1),
    ("graph @g(%a: f32[2]) $", "unexpected character '$'", 1, 22),
])
def test_malformed_text_names_line_and_column(text, message, line, column):
    with pytest.raises(IRParseError) as info:
        parse(text)
    assert message in str(info.value)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert f"line {line}, column {column}" in str(info.value)
