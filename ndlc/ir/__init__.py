"""Graph IR: types, SSA graphs, the op registry, text form, verifier and reference interpreter."""
from . import ops  # noqa: F401  (fills the registry)
from ..errors import (AttrError, IRParseError, NdlcError, ShapeError, TraceError, UnknownOpError,
                     VerifyError)
from .graph import Builder, Graph, Node, Value
from .interpreter import interpret, run
from .parser import parse
from .printer import graph_difference, graphs_equal, print_graph
from .registry import OpDef, all_ops, get_op
from .types import TensorType
from .verifier import verify

__all__ = ["AttrError", "IRParseError", "NdlcError", "ShapeError", "TraceError", "UnknownOpError",
           "VerifyError", "Builder", "Graph", "Node", "Value", "interpret", "run", "parse",
           "graph_difference", "graphs_equal", "print_graph", "OpDef", "all_ops", "get_op",
           "TensorType", "verify"]
