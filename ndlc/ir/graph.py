"""SSA graph IR: values defined once, nodes with one result, graphs with ordered inputs/outputs.

Values link to their defining node and nodes to their operands, so any set of values is a DAG
from which a `Graph` can be cut (`Graph.from_outputs`); that is how eager Tensors become graphs.
"""
from ..errors import NdlcError, ShapeError
from .printer import graphs_equal, print_graph
from .registry import get_op
from .types import TensorType

INPUT_KINDS = ("input", "state", "const")


class Value:
    """An SSA value: a graph input (node is None) or the result of one node. Hashed by identity."""
    __slots__ = ("type", "node", "name", "kind", "__weakref__")

    def __init__(self, type: TensorType, node=None, name=None, kind="input"):
        self.type, self.node, self.name, self.kind = type, node, name, kind

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    @property
    def ndim(self):
        return self.type.ndim

    def __repr__(self):
        what = self.node.op if self.node is not None else self.kind
        return f"<Value {self.name or ''}: {self.type} ({what})>"


class Node:
    """One op application: op name, operand values, attributes, and its single result value;
    `why`: the lowering rule that made it and that rule's numbers (a conv's), printed as a '#' line."""
    __slots__ = ("op", "operands", "attrs", "result", "loc", "why")

    def __init__(self, op: str, operands, attrs: dict, result_type: TensorType, loc=None, why=None):
        self.op, self.operands, self.attrs, self.loc, self.why = op, tuple(operands), dict(attrs), loc, why
        self.result = Value(result_type, node=self)

    def __repr__(self):
        return f"<Node {self.op} -> {self.result.type}>"

    def remade(self, operands, attrs=None) -> "Node":
        """A new node of this op over `operands` (and `attrs`), keeping its location and its
        lowering reason: passes that copy nodes into another graph must not drop either."""
        return Node(self.op, operands, self.attrs if attrs is None else attrs, self.result.type, self.loc, self.why)


class Graph:
    """A function in SSA form.

    inputs: ordered Values with kind 'input', 'state' (persistent, updated) or 'const' (captured
    data, held in `constants`). outputs: ordered result Values. updates: state input -> its new value.
    """

    def __init__(self, name="main", inputs=(), nodes=(), outputs=(), updates=None, constants=None):
        self.name = name
        self.inputs = list(inputs)
        self.nodes = list(nodes)
        self.outputs = list(outputs)
        self.updates = dict(updates or {})
        self.constants = dict(constants or {})

    def add_input(self, type: TensorType, name=None, kind="input") -> Value:
        if kind not in INPUT_KINDS:
            raise NdlcError(f"input kind must be one of {INPUT_KINDS}, not {kind!r}")
        value = Value(type, name=name, kind=kind)
        self.inputs.append(value)
        return value

    def copy(self) -> "Graph":
        """A shallow copy: new lists, shared (immutable) nodes and values."""
        return Graph(self.name, self.inputs, self.nodes, self.outputs, self.updates, self.constants)

    @classmethod
    def from_outputs(cls, outputs, inputs=(), name="main", constants=None):
        """Cut the graph that computes `outputs` from the DAG their nodes link to.

        `inputs` fixes the order of the first inputs; every other leaf reached is appended (and
        must then be a const with data in `constants`, or a state value).
        """
        nodes, seen, leaves = [], set(), []
        stack = [(v, False) for v in reversed(list(outputs))]
        while stack:
            value, expanded = stack.pop()
            node = value.node
            if node is None:
                if value not in seen:
                    seen.add(value)
                    leaves.append(value)
                continue
            if expanded:
                if node not in seen:
                    seen.add(node)
                    nodes.append(node)
                continue
            if node in seen:
                continue
            stack.append((value, True))
            stack.extend((v, False) for v in reversed(node.operands) if (v.node or v) not in seen)
        ordered = list(inputs)
        given = set(ordered)
        ordered += [v for v in leaves if v not in given]
        return cls(name, ordered, nodes, list(outputs), constants=constants)

    def users(self) -> dict:
        """Value -> list of nodes using it (in node order)."""
        result = {}
        for node in self.nodes:
            for v in node.operands:
                result.setdefault(v, []).append(node)
        return result

    def __str__(self):
        return print_graph(self)

    def __eq__(self, other):
        return isinstance(other, Graph) and graphs_equal(self, other)

    __hash__ = object.__hash__


class Builder:
    """Creates nodes through the op registry (type inference, attribute checks) and hands each
    to `on_node` (appending to a graph by default), each with the builder's `loc` and `why`.
    `b.add(x, y)` is `b.emit("add", x, y)`."""

    def __init__(self, graph: Graph = None, on_node=None, loc=None):
        self.graph = graph
        self.on_node = on_node if on_node is not None else (graph.nodes.append if graph else None)
        self.loc, self.why = loc, None

    def emit(self, op: str, *operands: Value, **attrs) -> Value:
        opdef = get_op(op)
        attrs = opdef.check_attrs(attrs, where=self.loc)
        types = [v.type for v in operands]
        result_type = opdef.infer_type(types, attrs, loc=self.loc)
        node = Node(op, operands, attrs, result_type, loc=self.loc, why=self.why)
        if self.on_node is not None:
            self.on_node(node)
        return node.result

    def __getattr__(self, op):
        if op.startswith("_"):
            raise AttributeError(op)
        return lambda *operands, **attrs: self.emit(op, *operands, **attrs)

    def constant_like(self, value: Value, fill: float) -> Value:
        """A tensor of `value`'s type filled with `fill`."""
        return self.emit("full", shape=value.shape, value=float(fill), dtype=value.dtype)


def check(condition, message):
    """Raise the ShapeError that a shape rule reports through `message` when `condition` fails."""
    if not condition:
        raise ShapeError(message)
