"""Split a step's graph where it exchanges values with other processes (a distributed
optimizer's gradient all-reduce): the part before computes the values it sends, the part after
continues from the values it receives. Each part then goes through the whole pipeline.

What belongs after the cut: every output and state update that depends on a received value,
and the updates that depend on neither the batch nor a received value (Adam's step count, the
random seed), so that the part before holds only what the batch determines (the loss, BatchNorm's
running statistics) and the part after only what the exchange and the state determine.
"""
from dataclasses import dataclass

from ..ir.checks import maybe_verify
from ..ir.errors import TraceError
from ..ir.graph import Graph


@dataclass
class Split:
    """`before`: outputs = the step's outputs listed in `outputs_before`, then the sent values;
    `after`: inputs = the received values, then every state input; outputs = those of
    `outputs_after`. Indices refer to the original graph's outputs."""
    before: Graph
    after: Graph
    outputs_before: list
    outputs_after: list


def split_at_exchange(graph, sent, received, batch) -> Split:
    """Cut `graph` at an exchange: `sent` values leave, `received` inputs (their transformed
    values) come back. `batch`: the graph's per-call inputs, which only `before` may read."""
    on_cut, on_batch = set(received), set(batch)
    for node in graph.nodes:
        if any(v in on_cut for v in node.operands):
            on_cut.add(node.result)
        if any(v in on_batch for v in node.operands):
            on_batch.add(node.result)
    late = {v for v in graph.updates.values() if v in on_cut or v not in on_batch}
    state = [v for v in graph.inputs if v.kind == "state"]
    outputs_after = [i for i, v in enumerate(graph.outputs) if v in on_cut]
    outputs_before = [i for i in range(len(graph.outputs)) if i not in outputs_after]
    updates_before = {s: v for s, v in graph.updates.items() if v not in late}
    updates_after = {s: v for s, v in graph.updates.items() if v in late}
    before = _part(graph, f"{graph.name}_gradients", [graph.outputs[i] for i in outputs_before] + list(sent),
                   updates_before, list(batch) + state)
    after = _part(graph, f"{graph.name}_update", [graph.outputs[i] for i in outputs_after],
                  updates_after, list(received) + state)
    known = set(received) | set(state)
    for v in after.inputs:
        if v not in known and v.kind != "const":
            raise TraceError(f"@{graph.name}: what follows the exchange reads {v.name or v}, which "
                             "the step computes from its batch inputs; after a distributed optimizer "
                             "all-reduces the gradients, the update may read only them and the state")
    read_after = {v for node in after.nodes for v in node.operands} | set(after.updates.values())
    for s in updates_before:
        if s in read_after:
            raise TraceError(f"@{graph.name}: the state {s.name} is updated from the batch before the "
                             "exchange and read after it; keep it out of the optimizer update")
    return Split(before, after, outputs_before, outputs_after)


def _part(graph, name, outputs, updates, inputs):
    """The graph computing `outputs` and `updates` from `inputs` (and `graph`'s constants)."""
    part = Graph.from_outputs(outputs + list(updates.values()), inputs, name=name)
    part.outputs, part.updates = outputs, updates
    part.constants = {v: graph.constants[v] for v in part.inputs if v in graph.constants}
    return maybe_verify(part, "split")
