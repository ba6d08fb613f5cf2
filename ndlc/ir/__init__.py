"""Graph IR: types, SSA graphs, the op registry, text form, verifier and reference interpreter;
and Kernel IR's text form (parse_kernels)."""
from . import ops  # noqa: F401  (fills the registry)
from ..errors import (AttrError, IRParseError, NdlcError, ShapeError, TraceError, UnknownOpError,
                     VerifyError)
from .graph import Builder, Graph, Node, Value
from .interpreter import interpret, run
from .kernel_parser import parse_kernels
from .parser import parse
from .printer import graph_difference, graphs_equal, print_graph
from .registry import OpDef, all_ops, get_op
from .types import TensorType
from .verifier import verify

__all__ = ["AttrError", "IRParseError", "NdlcError", "ShapeError", "TraceError", "UnknownOpError",
           "VerifyError", "Builder", "Graph", "Node", "Value", "interpret", "run", "parse", "parse_kernels",
           "graph_difference", "graphs_equal", "print_graph", "OpDef", "all_ops", "get_op",
           "TensorType", "verify"]
