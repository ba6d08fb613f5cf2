"""Split a step's graph where it exchanges values with other processes (SyncBatchNorm's
statistics and their adjoints, a distributed optimizer's gradient all-reduce) into parts, one
program each, run in turn with the exchanges between them.

Exchange k (from 1) sends values and receives stand-in inputs. A value's stage is the latest
exchange whose received values it depends on (0: only the batch, the state and constants); part k
computes the values of stage k: the step's outputs and state updates of that stage, the values
exchange k+1 and later ones send, and those later parts read ("carried" from part to part). Every
part takes the batch and the state inputs; what it reads from earlier parts or exchanges comes
after them. The parts compute nothing twice.
"""
from dataclasses import dataclass, field

from ..ir.checks import maybe_verify
from ..errors import TraceError
from ..ir.graph import Graph, Value


@dataclass
class Part:
    """One program's graph. Outputs: the step's outputs listed in `outputs` (indices into the
    whole graph's), then the values of `sent` (pairs (exchange, position)), then `carried_out`;
    updates: the state updates of this stage. Inputs: the whole graph's leading inputs (batch),
    its state inputs, then the constants it reads and stand-ins for `carried_in` (values of the
    whole graph: received ones, or computed by earlier parts)."""
    graph: Graph
    outputs: list = field(default_factory=list)
    sent: list = field(default_factory=list)
    carried_in: list = field(default_factory=list)
    carried_out: list = field(default_factory=list)


def split_at_exchanges(graph, exchanges, leading, batch) -> list:
    """The Parts of `graph` cut at `exchanges`, a list of (sent values, received inputs) in the
    order they happen; `leading`: its per-call inputs, `batch` and runtime numbers."""
    received = {v: k for k, (_, values) in enumerate(exchanges, 1) for v in values}
    stage = {v: received.get(v, 0) for v in graph.inputs}
    free = set(graph.inputs) - set(received) - set(batch)  # state, constants, numbers: any part may
    for node in graph.nodes:                                # compute what depends on these alone
        stage[node.result] = max((stage[v] for v in node.operands), default=0)
        if all(v in free for v in node.operands):
            free.add(node.result)
    for k, (sent, _) in enumerate(exchanges, 1):
        late = [v for v in sent if stage[v] >= k]
        if late:
            raise TraceError(f"@{graph.name}: exchange {k} sends a value computed from what exchange "
                             f"{stage[late[0]]} receives, which happens no earlier")
    state = [v for v in graph.inputs if v.kind == "state"]
    carried = [set() for _ in range(len(exchanges) + 1)]  # per stage: its values later parts read
    for node in graph.nodes:
        for v in node.operands:
            if v.node is not None and v not in free and stage[v] < stage[node.result]:
                carried[stage[v]].add(v)
    order = {v: i for i, v in enumerate(graph.inputs)}
    order.update({node.result: len(order) + i for i, node in enumerate(graph.nodes)})
    parts = []
    for k in range(len(exchanges) + 1):
        part = Part(graph=None)
        part.outputs = [i for i, v in enumerate(graph.outputs) if stage[v] == k]
        part.sent = [(j, i) for j, (sent, _) in enumerate(exchanges) for i, v in enumerate(sent) if stage[v] == k]
        part.carried_out = sorted(carried[k], key=order.get)
        updates = {s: v for s, v in graph.updates.items() if stage[v] == k}
        roots = ([graph.outputs[i] for i in part.outputs] + [exchanges[j][0][i] for j, i in part.sent]
                 + part.carried_out)
        part.graph = _part(graph, f"{graph.name}_{k}", k, stage, free, roots, updates, list(leading) + state, part)
        parts.append(part)
    return parts


def _part(graph, name, k, stage, free, roots, updates, inputs, part):
    """Part k's graph: the nodes of stage k (or `free`) that `roots` and `updates` need, copied,
    each operand of an earlier stage (or received) read through a stand-in input appended to `inputs`."""
    needed, pending = set(), list(roots) + list(updates.values())
    while pending:
        v = pending.pop()
        if v.node is not None and (stage[v] == k or v in free) and v.node not in needed:
            needed.add(v.node)
            pending.extend(v.node.operands)
    inputs, mapping, constants = list(inputs), {v: v for v in inputs}, {}

    def value(v):
        if v not in mapping:
            if v.kind == "const" and v.node is None:
                mapping[v], constants[v] = v, graph.constants[v]
                inputs.append(v)
            else:  # computed by an earlier part, or received
                mapping[v] = Value(v.type, name=v.name or f"carried.{len(part.carried_in)}")
                part.carried_in.append(v)
                inputs.append(mapping[v])
        return mapping[v]

    nodes = []
    for node in graph.nodes:
        if node in needed:
            copy = node.remade([value(v) for v in node.operands])
            mapping[node.result] = copy.result
            nodes.append(copy)
    outputs = [value(v) for v in roots]
    result = Graph(name, inputs, nodes, outputs, {s: value(v) for s, v in updates.items()}, constants)
    return maybe_verify(result, "split")
