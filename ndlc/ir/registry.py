"""The op registry: each op is declared once, and every layer looks it up here.

An `OpDef` holds the op's arity, attributes, shape/dtype rule, numpy reference, gradient rule
(IR-building code, so gradients are differentiable again) and, for elementwise ops, the scalar
expression that the backends lower.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import AttrError, ShapeError, UnknownOpError
from .types import TensorType, dtype_name

REQUIRED = object()


def _int(v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError("an integer")
    if not -2 ** 63 <= v < 2 ** 63:  # shapes, axes and offsets are 64-bit integers in every later layer
        raise ValueError("an integer of 64 bits")
    return int(v)


def _float(v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError("a number")
    try:
        return float(v)
    except OverflowError:  # an integer past 1.8e308
        raise ValueError("a number a float can hold") from None


def _bool(v):
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError("true or false")
    return bool(v)


def integer_digits(n: int) -> str:
    """How many digits the integer `n` has, for a message ('401 digits'; past Python's 4300-digit
    limit on int -> str, which raises, 'about 6000 digits')."""
    try:
        return f"{len(str(abs(n)))} digits"
    except ValueError:
        return f"about {int(abs(n).bit_length() * 0.30103)} digits"


def _shown(value, most=60):
    """`value`'s repr for a message, its middle cut out past `most` characters (an integer of
    thousands of digits has no repr at all)."""
    try:
        text = repr(value)
    except ValueError:
        text = (f"({', '.join(_shown(v, most) for v in value)})" if isinstance(value, (tuple, list))
                else f"<an integer of {integer_digits(value)}>")
    return text if len(text) <= most else f"{text[:most // 2]}...{text[-most // 2:]}"


def _ints(v):
    if not isinstance(v, (tuple, list)):
        raise ValueError("a tuple of integers")
    return tuple(_int(x) for x in v)


def _int_pairs(v):
    if not isinstance(v, (tuple, list)) or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in v):
        raise ValueError("a tuple of (int, int) pairs")
    return tuple((_int(a), _int(b)) for a, b in v)


def _dtype(v):
    try:
        return dtype_name(v)
    except ShapeError:
        raise ValueError("a dtype name") from None


def _graph(v):
    """A region: a Graph (ir/graph.py imports this module, so it is recognised by its fields)."""
    if not all(hasattr(v, field) for field in ("inputs", "nodes", "outputs", "updates")):
        raise ValueError("a graph (a region)")
    return v


ATTR_KINDS = {"int": _int, "float": _float, "bool": _bool, "ints": _ints,
              "int_pairs": _int_pairs, "dtype": _dtype, "graph": _graph}


@dataclass(frozen=True)
class Attr:
    """An attribute's kind (a key of ATTR_KINDS) and default (REQUIRED if it has none)."""
    kind: str
    default: object = REQUIRED


@dataclass(frozen=True)
class AxisIndex:
    """How a layout/loop-nest op reads one operand axis: (Σ coef·axis + offset) / divisor, where
    `terms` are (axis, coef) pairs over the op's loop axes. `guarded`: where that index is out of
    range or not a multiple of `divisor` the read yields 0 (padding, dilation)."""
    terms: tuple = ()
    offset: int = 0
    divisor: int = 1
    guarded: bool = False


@dataclass(frozen=True)
class RowsAt:
    """How an op reads rows of its first operand (a table) picked by the integer values of its
    second: that operand through `index_map`, the table's axes after the first through
    `table_map` (AxisIndex each, over the op's result axes). Backends load the rows indirectly."""
    index_map: tuple
    table_map: tuple


# The index map of a reshape: the same elements in row-major order (not an affine AxisIndex map).
ROW_MAJOR = "row_major"


@dataclass(frozen=True)
class LoopNest:
    """A reduction loop nest: result[i] = epilogue(combine over r of body(operand_k[maps[k](i, r)])).

    Loop axes are the result's axes, then `reduce_extents`; `maps` holds one AxisIndex per axis of
    each operand; `combine` is 'add' or 'max'; body/epilogue build ScalarExprs (None: identity)."""
    reduce_extents: tuple
    maps: tuple
    combine: str
    body: Optional[Callable] = None
    epilogue: Optional[Callable] = None


@dataclass
class OpDef:
    """Everything ndlc knows about one op.

    infer(types, **attrs) -> TensorType raises ShapeError with a plain message on bad input.
    reference(*arrays, **attrs) -> ndarray is the numpy semantics, the oracle of every backend.
    grad(b, node, g) -> one Value or None per operand: the partial adjoints given the adjoint g
    of the result, built with the Builder b. None for an op that is not differentiable.
    scalar(*exprs, **attrs) -> ScalarExpr, for elementwise ops: the per-element computation.
    kind: 'elementwise', 'reduction', 'layout', 'matmul', 'conv', 'window', 'creation'.
    float_only: operands must be floating point (frontends cast integers first).
    scalar_variant: the op taking the second operand as a `scalar` attribute (add -> add_scalar).
    commutative: op(x, y) == op(y, x), so a scalar on either side may use `scalar_variant`.
    identity: the v with op(x, v) == x, for the second operand or the `scalar` attribute
      (either operand when commutative); simplify drops such nodes.
    involution: op(op(x, attrs), attrs) == x (negate, flip, transpose).
    compose(inner_attrs, outer_attrs) -> attrs of one op doing both in turn (reshape, permute).
    index_map(operand_types, result_type, **attrs) -> tuple of AxisIndex (one per operand axis,
      over the result's axes) or ROW_MAJOR, for ops that are views: backends compose it into loads.
    loop_nest(operand_types, result_type, **attrs) -> LoopNest: reductions, matmul, conv, pooling.
    rows_at(operand_types, result_type) -> RowsAt, for ops reading a table's rows at integer
      indices (gather): backends load each row indirectly, at the index's value.
    scatters: the op adds its first operand's rows, in order, into a zero table's rows that its
      second operand's integer values pick (scatter_add): fusion makes it a Scatter kernel.
    decompose(b, node) -> Value: the op rebuilt from simpler ops, which the compiled pipeline lowers
      instead (a conv as im2col and a gemm), or None where the op is best kept as it is.
    blas: the loop nest is a batched matrix product (loops batch..., m, n | k; body x[..., m, k] *
      y[..., k, n]), which backends may hand to a BLAS gemm for float dtypes.
    parts(node) -> list of (offset, TensorType), for ops with several results (scan): the results
      packed, flattened, into the node's 1-D result, which only `part` nodes read. Their grad rule
      is grad(b, node, {offset: adjoint}, vjp): the adjoints of the parts that have one, and
      autodiff's `vjp(graph, seeds, wrt)` to differentiate a region with.
    """
    name: str
    arity: Optional[int]
    infer: Callable
    reference: Callable
    grad: Optional[Callable] = None
    scalar: Optional[Callable] = None
    kind: str = "elementwise"
    attrs: dict = field(default_factory=dict)
    doc: str = ""
    float_only: bool = False
    scalar_variant: Optional[str] = None
    commutative: bool = False
    identity: Optional[float] = None
    involution: bool = False
    compose: Optional[Callable] = None
    index_map: Optional[Callable] = None
    loop_nest: Optional[Callable] = None
    rows_at: Optional[Callable] = None
    scatters: bool = False
    decompose: Optional[Callable] = None
    blas: bool = False
    parts: Optional[Callable] = None

    def check_attrs(self, attrs: dict, where=None) -> dict:
        """Validate `attrs` against the declaration; fill defaults; normalise lists to tuples."""
        at = f" (at {where})" if where else ""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise AttrError(f"{self.name}: unknown attribute {sorted(unknown)[0]!r}; "
                            f"it takes {sorted(self.attrs) or 'no attributes'}{at}")
        result = {}
        for name, spec in self.attrs.items():
            value = attrs.get(name, spec.default)
            if value is REQUIRED:
                raise AttrError(f"{self.name}: missing attribute {name!r}{at}")
            if value is not None or spec.default is not None:
                try:
                    value = ATTR_KINDS[spec.kind](value)
                except ValueError as e:
                    raise AttrError(f"{self.name}: attribute {name}={_shown(value)} must be {e}{at}") from None
            result[name] = value
        return result

    def infer_type(self, types, attrs, loc=None) -> TensorType:
        """The result type, or a ShapeError naming the op, operand types and source location."""
        at = f" (at {loc})" if loc else ""
        if self.arity is not None and len(types) != self.arity:
            raise ShapeError(f"{self.name} takes {self.arity} operand(s), got {len(types)} "
                             f"({', '.join(map(str, types))}){at}")
        try:
            return self.infer(list(types), **attrs)
        except ShapeError as e:
            raise ShapeError(f"{self.name}({', '.join(map(str, types))}): {e}{at}") from None


_REGISTRY: dict = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name!r} is registered twice")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownOpError(f"unknown op {name!r}") from None


def all_ops() -> dict:
    """name -> OpDef for every registered op (read-only view)."""
    return dict(_REGISTRY)
