"""Debug checks that passes run on what they produce when NDLC_VERIFY is set (the test suite sets it):
the verifier, and the round trip through the text form."""
from ..env import flag
from ..errors import NdlcError, VerifyError
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
