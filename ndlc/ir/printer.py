"""The text form of a graph (one node a line) and structural equality of graphs."""
import re


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*$")


def format_attr(value) -> str:
    """An attribute's text; a region's is its name and size (format_node prints it whole)."""
    if is_region(value):
        return f"@{value.name} ({len(value.nodes)} nodes)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        inner = ", ".join(format_attr(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, str):
        return value if _IDENT.match(value) and value not in ("true", "false", "none") else f'"{value}"'
    return str(value)


def value_names(graph) -> dict:
    """Value -> printed name: inputs keep a unique identifier-like name, results are numbered."""
    names, used = {}, set()
    for i, v in enumerate(graph.inputs):
        name = v.name if v.name and _IDENT.match(v.name) and v.name not in used else f"arg{i}"
        while name in used:
            name = f"{name}_"
        names[v] = name
        used.add(name)
    for i, node in enumerate(graph.nodes):
        names[node.result] = str(i)
    return names


def is_region(value) -> bool:
    """Whether an attribute is a region (a graph: scan's body)."""
    return hasattr(value, "nodes") and hasattr(value, "outputs")


def format_node(node, names, with_locs=False) -> str:
    """One node a line; a region attribute prints as its graph, its lines indented below."""
    args = [f"%{names.get(v, '?')}" for v in node.operands]
    args += [f"{k}={print_graph(v, with_locs) if is_region(v) else format_attr(v)}"
             for k, v in node.attrs.items()]
    line = f"%{names.get(node.result, '?')} = {node.op}({', '.join(args)}) : {node.result.type}"
    if with_locs and node.loc:
        line += f'  loc("{node.loc}")'
    return line


def print_graph(graph, with_locs=False) -> str:
    names = value_names(graph)
    params = []
    for v in graph.inputs:
        kind = "" if v.kind == "input" else f" {v.kind}"
        params.append(f"%{names[v]}: {v.type}{kind}")
    header = f"graph @{graph.name}({', '.join(params)}) {{"
    if len(header) > 100:  # one parameter a line, as a long signature reads best
        header = f"graph @{graph.name}(\n" + ",\n".join("    " + p for p in params) + "\n) {"
    lines, why = [header], None
    for n in graph.nodes:  # a lowering's reason once, above the run of nodes it made ('#': the parser skips it)
        if n.why is not None and n.why != why:
            lines.append(f"  # {n.why}")
        why = n.why
        lines += ["  " + line for line in format_node(n, names, with_locs).split("\n")]
    rets = [f"%{names[v]}" for v in graph.outputs]
    rets += [f"new %{names[s]} = %{names[v]}" for s, v in graph.updates.items()]
    lines.append("  return" + (" " + ", ".join(rets) if rets else ""))
    lines.append("}")
    return "\n".join(lines)


def graph_difference(a, b):
    """None if graphs a and b are structurally equal, else a sentence saying where they differ.

    Names and captured constant data are not compared: the text form carries neither's data."""
    if a.name != b.name:
        return f"names differ: @{a.name} vs @{b.name}"
    if len(a.inputs) != len(b.inputs):
        return f"input counts differ: {len(a.inputs)} vs {len(b.inputs)}"
    match = {}
    for i, (x, y) in enumerate(zip(a.inputs, b.inputs)):
        if x.type != y.type or x.kind != y.kind:
            return f"input {i} differs: {x.type} {x.kind} vs {y.type} {y.kind}"
        match[x] = y
    if len(a.nodes) != len(b.nodes):
        return f"node counts differ: {len(a.nodes)} vs {len(b.nodes)}"
    for i, (m, n) in enumerate(zip(a.nodes, b.nodes)):
        same = (m.op == n.op and _same_attrs(m.attrs, n.attrs) and m.result.type == n.result.type
                and len(m.operands) == len(n.operands)
                and all(match.get(u) is v for u, v in zip(m.operands, n.operands)))
        if not same:
            return f"node {i} differs: {m.op}{m.attrs} vs {n.op}{n.attrs}"
        match[m.result] = n.result
    if [match.get(v) for v in a.outputs] != list(b.outputs):
        return "outputs differ"
    if {match.get(k): match.get(v) for k, v in a.updates.items()} != dict(b.updates):
        return "state updates differ"
    return None


def _same_attrs(a, b):
    """Attributes equal, a NaN value (a `full` of NaN: conv's padding_nan) the same as a NaN."""
    nan = lambda v: isinstance(v, float) and v != v
    return a == b or (a.keys() == b.keys() and all(a[k] == b[k] or nan(a[k]) and nan(b[k]) for k in a))


def graphs_equal(a, b) -> bool:
    return graph_difference(a, b) is None


