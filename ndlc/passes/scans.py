"""scans: the graph's loops readied for fusion, which compiles each body once (passes/steps.py).

`share_scans`: a gradient runs its forward scan a second time, the same body with more ys (the
values the reverse scan reads, passes/autodiff.py); the first scan's parts then read the second
one's, which takes the first's place, so the forward steps run once (the unrolled pipeline got
this from common-subexpression elimination); it matches the two by their operands, so it runs
before any pass that rewrites scans. `with_bodies`: the graph with every scan's body
passed through the graph passes, which see the body once whatever the sequence length.
"""
from ..ir.checks import maybe_verify
from ..ir.graph import Graph


def share_scans(graph):
    """`graph` with each scan whose steps a later scan repeats (same operands and loop, a body of
    the same inputs and nodes and more outputs) replaced by that scan, moved up to its place."""
    scans = [n for n in graph.nodes if n.op == "scan"]
    users = graph.users()
    by = {}
    for a in scans:
        if all(u.op == "part" for u in users.get(a.result, ())) and a.result not in graph.outputs:
            later = [b for b in scans if b is not a and _repeats(b, a)]
            if later:
                by[a] = later[0]
    if not by:
        return graph
    values, emitted, nodes = {}, set(), []
    for node in graph.nodes:
        source = node
        while source in by:
            source = by[source]
        if source in emitted:
            values[node.result] = values[source.result]
            continue
        operands = tuple(values.get(v, v) for v in source.operands)
        made = source if operands == source.operands else source.remade(operands)
        values[node.result] = values[source.result] = made.result
        emitted.add(source)
        nodes.append(made)
    result = graph.copy()
    result.nodes = nodes
    result.outputs = [values.get(v, v) for v in graph.outputs]
    result.updates = {s: values.get(v, v) for s, v in graph.updates.items()}
    return maybe_verify(result, "share scans")


def _repeats(b, a):
    """Whether scan `b` computes everything scan `a` does, at the same places of its result: its
    body's first nodes and outputs are `a`'s body's (the same nodes, or equal ones)."""
    loop = ("carries", "xs", "length", "reverse")
    first, second = a.attrs["body"], b.attrs["body"]
    if (a.operands != b.operands or any(a.attrs[k] != b.attrs[k] for k in loop)
            or len(first.outputs) >= len(second.outputs) or len(first.nodes) > len(second.nodes)):
        return False
    same = dict(zip(first.inputs, second.inputs))
    for mine, theirs in zip(first.nodes, second.nodes):
        if mine is not theirs and (mine.op != theirs.op or mine.result.type != theirs.result.type
                                   or tuple(same.get(v) for v in mine.operands) != theirs.operands
                                   or mine.attrs != theirs.attrs):
            return False
        same[mine.result] = theirs.result
    return [same.get(v) for v in first.outputs] == second.outputs[:len(first.outputs)]


def with_bodies(graph, passes):
    """`graph` with each scan's body (nested ones first) replaced by `passes(body)`."""
    if not any(n.op == "scan" for n in graph.nodes):
        return graph
    values, nodes = {}, []
    for node in graph.nodes:
        operands = tuple(values.get(v, v) for v in node.operands)
        attrs = node.attrs
        if node.op == "scan":
            attrs = dict(attrs, body=passes(with_bodies(attrs["body"], passes)))
        if attrs is node.attrs and operands == node.operands:
            nodes.append(node)
            continue
        made = node.remade(operands, attrs)
        values[node.result] = made.result
        nodes.append(made)
    result = Graph(graph.name, graph.inputs, nodes, [values.get(v, v) for v in graph.outputs],
                   {s: values.get(v, v) for s, v in graph.updates.items()}, graph.constants)
    return maybe_verify(result, "scan bodies")
