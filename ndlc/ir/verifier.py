"""The verifier: SSA, types and attributes of a graph; each error names the offending node."""
import os

from .errors import AttrError, NdlcError, ShapeError, UnknownOpError, VerifyError
from .printer import format_node, value_names
from .registry import get_op


def verification_enabled() -> bool:
    """Passes verify their output when NDLC_VERIFY is set (the test suite sets it)."""
    return os.environ.get("NDLC_VERIFY", "") not in ("", "0")


def _fail(message, node=None):
    err = VerifyError(message)
    err.node = node
    return err


def verify(graph):
    """Raise VerifyError on the first broken invariant; return the graph otherwise."""
    names = value_names(graph)
    defined = set()
    for i, v in enumerate(graph.inputs):
        if v.node is not None:
            raise _fail(f"input {i} (%{names[v]}) is the result of a node")
        if v in defined:
            raise _fail(f"input {i} (%{names[v]}) is listed twice")
        defined.add(v)
    for index, node in enumerate(graph.nodes):
        where = f"node {index} `{format_node(node, names)}`"
        for j, v in enumerate(node.operands):
            if v not in defined:
                raise _fail(f"{where}: operand {j} is used before it is defined", node)
        if node.result in defined or node.result.node is not node:
            raise _fail(f"{where}: its result is defined more than once", node)
        try:
            opdef = get_op(node.op)
            if opdef.check_attrs(node.attrs) != node.attrs:
                raise AttrError("attributes are not in normal form")
            inferred = opdef.infer_type([v.type for v in node.operands], node.attrs)
        except (UnknownOpError, AttrError, ShapeError) as e:
            raise _fail(f"{where}: {e}", node) from None
        if inferred != node.result.type:
            raise _fail(f"{where}: result type {node.result.type} but the op's rule gives {inferred}", node)
        defined.add(node.result)
    for i, v in enumerate(graph.outputs):
        if v not in defined:
            raise _fail(f"output {i} is not defined in the graph")
    for state, new in graph.updates.items():
        if state.kind != "state" or state not in defined:
            raise _fail(f"update of %{names.get(state, '?')}, which is not a state input")
        if new not in defined:
            raise _fail(f"the new value of %{names[state]} is not defined in the graph")
        if new.type != state.type:
            raise _fail(f"the new value of %{names[state]} has type {new.type}, the state {state.type}")
    for v in graph.constants:
        if v.kind != "const" or v not in defined:
            raise _fail("constant data is held for a value that is not a const input")
    return graph


def maybe_verify(graph, stage=""):
    """When enabled (tests, NDLC_VERIFY=1): verify the graph and check that its text form parses
    back to an equal graph; errors name the stage that produced the graph."""
    if verification_enabled():
        from .parser import parse
        from .printer import graph_difference, print_graph
        try:
            verify(graph)
            difference = graph_difference(graph, parse(print_graph(graph), verify=False))
        except NdlcError as e:
            raise VerifyError(f"after {stage}: {e}") from None
        if difference:
            raise VerifyError(f"after {stage}: the text form does not round-trip: {difference}")
    return graph
