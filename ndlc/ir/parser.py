"""Parser of the text form printed by ndlc.ir.printer; errors name line and column."""
import re

from ..errors import AttrError, IRParseError, NdlcError, UnknownOpError, VerifyError
from .graph import Graph, Node, INPUT_KINDS
from .registry import get_op
from .types import TensorType
from .verifier import verify as run_verifier

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r]+|\#[^\n]*)
  | (?P<newline>\n)
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<global>@[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<number>-?(?:inf|nan)\b|-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<string>"[^"\n]*")
  | (?P<punct>[(){}\[\],:=])
""", re.VERBOSE)


class _Tokens:
    def __init__(self, text):
        self.lines = text.split("\n")
        self.items = []  # (kind, text, line, column)
        line, start, pos = 1, 0, 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise self.error_at(f"unexpected character {text[pos]!r}", line, pos - start + 1)
            kind = m.lastgroup
            if kind == "newline":
                line, start = line + 1, m.end()
            elif kind != "space":
                self.items.append((kind, m.group(), line, pos - start + 1))
            pos = m.end()
        self.items.append(("eof", "end of input", line, pos - start + 1))
        self.i = 0

    def error_at(self, message, line, column):
        text_line = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return IRParseError(message, line, column, text_line)

    def error(self, message, token=None):
        _, _, line, column = token or self.peek()
        return self.error_at(message, line, column)

    def peek(self):
        return self.items[self.i]

    def next(self):
        tok = self.items[self.i]
        self.i += 1
        return tok

    def accept(self, text):
        if self.peek()[1] == text:
            return self.next()
        return None

    def expect(self, text):
        tok = self.next()
        if tok[1] != text:
            raise self.error(f"expected {text!r}, found {tok[1]!r}", tok)
        return tok

    def expect_kind(self, kind, what):
        tok = self.next()
        if tok[0] != kind:
            raise self.error(f"expected {what}, found {tok[1]!r}", tok)
        return tok


def _number(text):
    return float(text) if any(c in text for c in ".eEn") else int(text)


class _Parser:
    def __init__(self, text):
        self.t = _Tokens(text)
        self.values = {}
        self.node_tokens = {}

    def type_(self):
        tok = self.t.expect_kind("ident", "a dtype such as f32")
        self.t.expect("[")
        dims = []
        while not self.t.accept("]"):
            if dims:
                self.t.expect(",")
            dim = self.t.expect_kind("number", "a dimension")
            if not dim[1].lstrip("-").isdigit():
                raise self.t.error(f"expected an integer dimension, found {dim[1]!r}", dim)
            dims.append(int(dim[1]))
        try:
            return TensorType(tuple(dims), tok[1])
        except NdlcError as e:
            raise self.t.error(str(e), tok) from None

    def use(self):
        tok = self.t.expect_kind("value", "a %value")
        if tok[1] not in self.values:
            raise self.t.error(f"use of undefined value {tok[1]}", tok)
        return self.values[tok[1]]

    def define(self, tok, value):
        if tok[1] in self.values:
            raise self.t.error(f"value {tok[1]} is defined twice", tok)
        self.values[tok[1]] = value

    def attr_value(self):
        tok = self.t.next()
        kind, text = tok[0], tok[1]
        if kind == "number":
            return _number(text)
        if kind == "string":
            return text[1:-1]
        if kind == "ident" and text == "graph":
            return self.region()
        if kind == "ident":
            return {"true": True, "false": False, "none": None}.get(text, text)
        if text == "(":
            items = []
            while not self.t.accept(")"):
                items.append(self.attr_value())
                if not self.t.accept(","):
                    self.t.expect(")")
                    break
            return tuple(items)
        raise self.t.error(f"expected an attribute value, found {text!r}", tok)

    def graph(self):
        self.t.expect("graph")
        graph = self.region()
        self.t.expect_kind("eof", "end of input after the graph")
        return graph

    def region(self):
        """A graph after its `graph` keyword; a region (an attribute) names its own values."""
        outer, self.values = self.values, {}
        name = self.t.expect_kind("global", "@name")[1][1:]
        graph = Graph(name)
        self.t.expect("(")
        while not self.t.accept(")"):
            if graph.inputs:
                self.t.expect(",")
            tok = self.t.expect_kind("value", "a %parameter")
            self.t.expect(":")
            type_ = self.type_()
            kind = "input"
            if self.t.peek()[1] in INPUT_KINDS:
                kind = self.t.next()[1]
            value = graph.add_input(type_, name=tok[1][1:], kind=kind)
            self.define(tok, value)
        self.t.expect("{")
        while self.t.peek()[1] != "return":
            graph.nodes.append(self.node())
        self.return_(graph)
        self.t.expect("}")
        self.values = outer
        return graph

    def node(self):
        result_tok = self.t.expect_kind("value", "a %result or 'return'")
        self.t.expect("=")
        op_tok = self.t.expect_kind("ident", "an op name")
        try:
            opdef = get_op(op_tok[1])
        except UnknownOpError as e:
            raise self.t.error(str(e), op_tok) from None
        self.t.expect("(")
        operands, attrs = [], {}
        while not self.t.accept(")"):
            if operands or attrs:
                self.t.expect(",")
            if self.t.peek()[0] == "value":
                if attrs:
                    raise self.t.error("operands must come before attributes")
                operands.append(self.use())
            else:
                key = self.t.expect_kind("ident", "an operand or attribute")
                self.t.expect("=")
                attrs[key[1]] = self.attr_value()
        self.t.expect(":")
        type_ = self.type_()
        loc = None
        if self.t.accept("loc"):
            self.t.expect("(")
            loc = self.t.expect_kind("string", "a quoted location")[1][1:-1]
            self.t.expect(")")
        try:
            attrs = opdef.check_attrs(attrs)
        except AttrError as e:
            raise self.t.error(str(e), op_tok) from None
        node = Node(op_tok[1], operands, attrs, type_, loc=loc)
        self.define(result_tok, node.result)
        self.node_tokens[node] = op_tok
        return node

    def return_(self, graph):
        self.t.expect("return")
        first = True
        while self.t.peek()[1] != "}":
            if not first and not self.t.accept(","):
                raise self.t.error(f"expected ',' or '}}' after a returned value, found {self.t.peek()[1]!r}")
            first = False
            if self.t.accept("new"):
                state_tok = self.t.peek()
                state = self.use()
                if state.kind != "state":
                    raise self.t.error(f"{state_tok[1]} is not a state input", state_tok)
                self.t.expect("=")
                graph.updates[state] = self.use()
            else:
                graph.outputs.append(self.use())


def parse(text: str, verify=True) -> Graph:
    """Parse the text form of a graph; with `verify`, run the verifier and report at the line."""
    if not isinstance(text, str):
        raise IRParseError(f"parse takes the text form of a graph (a str), not {type(text).__name__}", 1, 1)
    parser = _Parser(text)
    try:
        graph = parser.graph()
    except RecursionError:  # attributes or regions nested thousands deep
        raise parser.t.error("the text nests too deeply to parse (parentheses or regions)") from None
    if verify:
        try:
            run_verifier(graph)
        except VerifyError as e:
            tok = parser.node_tokens.get(getattr(e, "node", None))
            if tok is None:
                raise
            raise parser.t.error(str(e), tok) from None
    return graph
