"""Graphviz pictures of the IR (`compiled.ir(stage, format="dot")`): a graph stage's values and
edges, or a kernel stage's kernels drawn as clusters around the graph nodes each one fuses."""
from .printer import format_attr, value_names


def graph_dot(graph, kernels=None) -> str:
    """`graph` as Graphviz dot text. With `kernels` (the Kernel IR program fused from `graph`),
    each kernel is a cluster of the nodes it fuses, labelled with its name and outputs."""
    names = value_names(graph)
    ids = {v: f"in{i}" for i, v in enumerate(graph.inputs)}
    ids.update({node.result: f"n{i}" for i, node in enumerate(graph.nodes)})
    lines = [f"digraph {_quote(graph.name)} {{", "  rankdir=TB;",
             '  node [fontname="monospace", fontsize=10];']
    for v in graph.inputs:
        style = ', style=filled, fillcolor="#dde8f7"' if v.kind == "state" else ""
        lines.append(f"  {ids[v]} [shape=ellipse, label={_quote(f'%{names[v]}: {v.type} {v.kind}')}{style}];")
    members = {}
    for kernel in (kernels.kernels if kernels is not None else ()):
        for member in kernel.fused:
            members.setdefault(member.split(" ", 1)[0].lstrip("%"), kernel.name)
    by_kernel = {}
    for node in graph.nodes:
        attrs = ", ".join(f"{k}={format_attr(a)}" for k, a in node.attrs.items())
        label = f"%{names[node.result]} = {node.op}({attrs})\n{node.result.type}"
        line = f"{ids[node.result]} [shape=box, label={_quote(label)}];"
        by_kernel.setdefault(members.get(names[node.result]), []).append(line)
    lines += ["  " + line for line in by_kernel.pop(None, [])]
    for kernel in (kernels.kernels if kernels is not None else ()):
        if kernel.name not in by_kernel:
            continue
        outputs = ", ".join("%" + o for o in kernel.outputs())
        lines += [f"  subgraph cluster_{kernel.name} {{",
                  f"    label={_quote(f'{kernel.name} -> {outputs}' + (' (gemm)' if kernel.gemm else ''))};",
                  '    style=rounded;', '    color="#888888";']
        lines += ["    " + line for line in by_kernel.pop(kernel.name)]
        lines.append("  }")
    for node in graph.nodes:
        lines += [f"  {ids[v]} -> {ids[node.result]};" for v in node.operands]
    for i, v in enumerate(graph.outputs):
        lines += [f"  out{i} [shape=plaintext, label={_quote(f'output {i}')}];", f"  {ids[v]} -> out{i};"]
    for i, (state, v) in enumerate(graph.updates.items()):
        lines += [f"  new{i} [shape=plaintext, label={_quote(f'new %{names[state]}')}];", f"  {ids[v]} -> new{i};"]
    lines.append("}")
    return "\n".join(lines)


def _quote(text) -> str:
    """A dot string literal: quotes and backslashes escaped, newlines as centred line breaks."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
