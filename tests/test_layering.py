"""The layering the design promises: each layer imports only the layers below it, no import cycle,
and the IR and eager execution need no code generator."""
import ast
import pathlib
import subprocess
import sys

import ndlc


def imported_after(code):
    script = f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'llvmlite'))"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()


def test_import_ndlc_ir_imports_no_llvmlite():
    assert imported_after("import ndlc.ir") == "[]"


def test_eager_training_imports_no_llvmlite():
    code = """
import numpy as np
import ndlc as ndl
model = ndl.nn.Sequential(ndl.nn.Linear(4, 3), ndl.nn.BatchNorm1d(3))
opt = ndl.optim.Adam(model.parameters())
loss = ndl.nn.SoftmaxLoss()(model(ndl.Tensor(np.ones((5, 4)))), ndl.Tensor(np.zeros(5)))
loss.backward()
opt.step()"""
    assert imported_after(code) == "[]"


def test_compiling_imports_it():
    assert "llvmlite" in imported_after("import numpy as np, ndlc as ndl\nndl.compile(lambda x: x + 1)(np.ones(2))")


# ---- the import graph, read from the source (ast) -------------------------------------------------
ROOT = pathlib.Path(ndlc.__file__).parent
BOTTOM = {"errors", "env", "version", "logconfig"}
# what each layer may import, besides itself and the bottom modules (DESIGN.md §1)
ALLOWED = {
    "ir": set(),
    "passes": {"ir"},
    "codegen": {"ir"},
    "runtime": {"ir", "codegen"},
    "backend_ndarray": {"runtime"},  # numpy only; cuda().enabled() asks runtime.cuda when called
    "frontend": {"ir", "passes.autodiff", "backend_ndarray"},
    "passes.autodiff": {"ir"},
    "jit": {"ir", "passes", "codegen", "runtime", "frontend"},
    "distributed": {"ir", "runtime", "frontend", "jit"},
}


def module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """{module: {modules it imports}}, every import in the file (function-level ones included)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.split(".")[0] == "ndlc"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "ndlc":
                    continue
                subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
                edges |= subs or {target}
        graph[name] = {e for e in edges if e in modules} - {name}
    return graph


def layer(module):
    parts = module.split(".")[1:]
    if parts and parts[0] in BOTTOM:
        return "bottom"
    if parts[:2] == ["passes", "autodiff"]:
        return "passes.autodiff"
    return parts[0] if parts and parts[0] in ALLOWED else "top"


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for module, imports in sorted(import_graph().items()):
        mine = layer(module)
        for target in sorted(imports):
            theirs = layer(target)
            if mine == "top" or theirs in ("bottom", mine) or {mine, theirs} == {"passes", "passes.autodiff"}:
                continue
            allowed = ALLOWED[mine]
            if theirs not in allowed and not (theirs == "passes.autodiff" and "passes" in allowed):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_bottom_modules_import_only_each_other():
    graph = import_graph()
    assert {m: sorted(t for t in graph[m] if layer(t) != "bottom") for m in graph if layer(m) == "bottom"} \
        == {m: [] for m in graph if layer(m) == "bottom"}


def test_no_import_cycle_between_modules_or_layers():
    graph = import_graph()
    layers = {}
    for module, imports in graph.items():
        layers.setdefault(layer(module), set()).update(layer(t) for t in imports if layer(t) != layer(module))
    assert cycles(graph) == [] and cycles(layers) == []


def cycles(graph):
    """The strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_import_ndlc_ir_loads_no_layer_above_it():
    script = "import sys, ndlc.ir\nprint(sorted(m for m in sys.modules if m.startswith('ndlc.')))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    above = [m for m in eval(loaded) if layer(m) not in ("ir", "bottom")]
    assert above == []


def test_no_file_in_the_package_is_over_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}
