"""Debug checks that passes run on what they produce when NDLC_VERIFY is set (the test suite sets it):
the verifier, and the round trip through the text form (graphs and kernel programs)."""
from ..env import flag
from ..errors import NdlcError, VerifyError
from .kernel_parser import parse_kernels
from .kernel_verifier import verify_program
from .parser import parse
from .printer import graph_difference, print_graph
from .verifier import verify


def verification_enabled() -> bool:
    """Passes verify their output when NDLC_VERIFY is set (the test suite sets it)."""
    return flag("NDLC_VERIFY")


def maybe_verify(graph, stage=""):
    """When enabled (tests, NDLC_VERIFY=1): verify the graph and check that its text form parses
    back to an equal graph; errors name the stage that produced the graph."""
    if verification_enabled():
        try:
            verify(graph)
            difference = graph_difference(graph, parse(print_graph(graph), verify=False))
        except NdlcError as e:
            raise VerifyError(f"after {stage}: {e}") from None
        if difference:
            raise VerifyError(f"after {stage}: the text form does not round-trip: {difference}")
    return graph


def maybe_verify_kernels(program, stage=""):
    """When enabled: run the Kernel IR verifier on `program` and check that its text parses back
    (parse_kernels) to a program that verifies and prints the same; errors name the stage."""
    if verification_enabled():
        verify_program(program, stage)
        text = str(program)
        try:
            again = str(parse_kernels(text))
        except NdlcError as e:
            raise VerifyError(f"after {stage}: the text form does not parse back: {e}") from None
        if again != text:
            lines, back = text.split("\n") + [""], again.split("\n") + [""]
            n = next(n for n, (a, b) in enumerate(zip(lines, back)) if a != b)
            raise VerifyError(f"after {stage}: the text form does not round-trip: line {n + 1}, "
                              f"{lines[n]!r}, reads back as {back[n]!r}")
    return program
