"""IR text under mutation: the graph stages (traced, grad, simplified, decomposed) and kernel stages
(fused, scheduled, planned) of a compiled BatchNorm MLP's training step, with characters, tokens
and lines deleted, inserted, repeated, swapped or cut off. `parse` and `parse_kernels` either read
the text into a verified program that prints back to itself, or raise an IRParseError naming a
line of the text (or a VerifyError naming what is broken): never another exception. Grammar-aware
edits (`grammar_mutations`) keep the text's shape and change what its tokens say.
FUZZ_EXAMPLES sets how many mutations per stage are drawn (`-m slow`: 500)."""
import os
import re

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from ndlc.errors import IRParseError, VerifyError
from ndlc.ir import parse, parse_kernels
import training_cases

GRAPH_STAGES = ("traced", "grad", "simplified", "decomposed")
KERNEL_STAGES = ("fused", "scheduled", "planned")
TOKEN = re.compile(r"%?[\w.]+|[^\s\w]")
INSERTED = list("%@,:=()[]{}<>|#-+.*/ \n") + ["0", "1", "9", "f32", "i64", "state", "new", "return", "add",
                                                 "x", "99999999999999999999", "-1", "2.5", "nan", "inf", "(" * 3000]


def _stages():
    _, _, step = training_cases.setup("sgd")
    import ndlc as ndl
    compiled = ndl.compile(step)
    compiled(*training_cases.batches(1, size=4)[0])
    return {stage: compiled.ir(stage) for stage in GRAPH_STAGES + KERNEL_STAGES}


TEXTS = _stages()


@st.composite
def mutations(draw, text):
    """`text` with one to three random edits."""
    for _ in range(draw(st.integers(1, 3))):
        if not text.strip():  # cut to nothing by an earlier edit
            break
        lines = text.split("\n")
        kind = draw(st.sampled_from(("delete", "insert", "token", "line", "cut")))
        if kind == "line":
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            how = draw(st.sampled_from(("delete", "repeat", "swap")))
            if how == "delete":
                del lines[i]
            elif how == "repeat":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif kind == "token":
            tokens = [m.span() for m in TOKEN.finditer(text)]
            start, end = tokens[draw(st.integers(0, len(tokens) - 1))]
            other = tokens[draw(st.integers(0, len(tokens) - 1))]
            text = text[:start] + text[other[0]:other[1]] + text[end:]
        else:
            at = draw(st.integers(0, len(text)))
            if kind == "delete":
                text = text[:at] + text[at + draw(st.integers(1, 4)):]
            elif kind == "insert":
                text = text[:at] + draw(st.sampled_from(INSERTED)) + text[at:]
            else:
                text = text[:at]
    return text


DTYPES = ["f32", "f64", "f16", "i32", "i64", "bool", "u8", "c64", "ℱ32"]
DIMS = ["0", "1", "3", "16", "-1", "1099511627776", "9223372036854775808", "1" + "0" * 400]
NUMBERS = ["-1", "0", "-0.0", "2.5", "nan", "inf", "1e400", "1" + "0" * 400, "٣", "１", "1_0", "0x10"]
UNICODE = ["é", "％", "\u200b", "\x00", "\ufeff", "𝟘", "\r", "\t", "İ"]


@st.composite
def grammar_mutations(draw, text):
    """`text` with one to three edits that keep its tokens' kinds: a dtype, shape, number or value
    name replaced by another (of other programs, out of range, huge, non-ASCII digits), or a
    non-ASCII character inserted."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(("dtype", "shape", "number", "name", "unicode")))
        if kind == "unicode":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.sampled_from(UNICODE)) + text[at:]
            continue
        pattern, choices = {"dtype": (r"\b(f32|i64|i32|bool|f64)\b", DTYPES), "shape": (r"\[[\d,]*\]", None),
                            "number": (r"(?<![%\w.])-?\d+(\.\d+)?(e-?\d+)?", NUMBERS), "name": (r"%[\w.]+", None)}[kind]
        spans = [m.span() for m in re.finditer(pattern, text)]
        if not spans:
            continue
        start, end = spans[draw(st.integers(0, len(spans) - 1))]
        if kind == "shape":
            new = "[" + ",".join(draw(st.lists(st.sampled_from(DIMS), max_size=4))) + "]"
        elif kind == "name":
            new = text[slice(*spans[draw(st.integers(0, len(spans) - 1))])]
        else:
            new = draw(st.sampled_from(choices))
        text = text[:start] + new + text[end:]
    return text


def check(stage, text):
    """Parsed and printed back, or refused with the line (or the broken invariant) named."""
    graph = stage in GRAPH_STAGES
    try:
        parsed = parse(text) if graph else parse_kernels(text)
    except IRParseError as e:
        lines = text.count("\n") + 2  # a message may point just past the last line
        assert 1 <= e.line <= lines and str(e).startswith(f"line {e.line}, column"), str(e)
        return
    except VerifyError as e:
        assert str(e), "a VerifyError with no message"
        return
    printed = str(parsed)
    again = parse(printed) if graph else parse_kernels(printed)
    assert str(again) == printed


EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))


@pytest.mark.parametrize("mutate", [mutations, grammar_mutations], ids=["edits", "retyped-reshaped-renamed"])
@pytest.mark.parametrize("stage", GRAPH_STAGES + KERNEL_STAGES)
def test_a_mutated_stage_parses_or_is_refused_at_its_line(stage, mutate):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(text=mutate(TEXTS[stage]))
    def run(text):
        check(stage, text)
    run()


@pytest.mark.slow
@pytest.mark.parametrize("stage", GRAPH_STAGES + KERNEL_STAGES)
def test_many_mutated_stages_parse_or_are_refused_at_their_line(stage):
    @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(text=st.one_of(mutations(TEXTS[stage]), grammar_mutations(TEXTS[stage])))
    def run(text):
        check(stage, text)
    run()


def test_the_unmutated_stages_read_back_to_themselves():
    for stage, text in TEXTS.items():
        printed = str(parse(text) if stage in GRAPH_STAGES else parse_kernels(text))
        assert printed.strip("\n") == text.strip("\n"), stage
