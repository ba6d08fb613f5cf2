"""IR text as input: every graph stage of the MLP step's dump compiles back to the step's results;
a hand-edited stage runs; malformed text is reported at its line and column; `ndlc run` and
`ndlc dump -o`; Graphviz pictures of graph and kernel stages."""
import re
import shutil
import subprocess

import numpy as np
import pytest

import ndlc as ndl
from ndlc.cli import main
from ndlc.examples.train_mlp import build_mlp, training_step
from ndlc.ir import interpret

GRAPH_STAGES = ("traced", "grad", "simplified", "decomposed")


@pytest.fixture(scope="module")
def mlp_step():
    """The compiled MLP step of `ndlc dump`, the arguments of its second call by input name, and
    that call's results (outputs, then new state)."""
    np.random.seed(0)
    model = build_mlp(in_features=20, hidden=(16, 8))
    step = ndl.compile(training_step(model, ndl.optim.Adam(model.parameters(), lr=1e-3)))
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 20), dtype=np.float32), rng.integers(0, 10, 8)
    step(x, y)
    program, calls = step.last.program, []
    run = program.run

    def recording(*arrays, **options):
        calls.append([a.copy() for a in arrays])
        return [r.copy() for r in run(*arrays, **options)]
    program.run = recording
    step(x, y)
    del program.run
    (arguments,) = calls
    named = dict(zip(program.kernels.inputs, arguments))
    named.update(program.kernels.constants)  # captured constants (SoftmaxLoss's class indices)
    return step, named, run(*arguments)


@pytest.mark.parametrize("stage", GRAPH_STAGES)
def test_every_graph_stage_of_the_dump_compiles_back_to_the_same_results(mlp_step, stage):
    step, arguments, expected = mlp_step
    compiled = ndl.compile_ir(step.ir(stage))
    results = compiled(**{name: arguments[name] for name in compiled.inputs})
    if stage == "traced":  # the forward pass as written: the loss alone
        expected = expected[:1]
    else:
        assert len(compiled.names) == len(expected) > 10 and compiled.names[1].startswith("new.model.")
    assert len(results) == len(expected)
    for name, got, want in zip(compiled.names, results, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_hand_edited_stage_compiles_and_runs(mlp_step):
    step, arguments, expected = mlp_step
    text = step.ir("traced")
    assert text.count("= relu(") == 2
    edited = text.replace("= relu(", "= tanh(")
    compiled = ndl.compile_ir(edited)
    inputs = [arguments[name] for name in compiled.inputs]
    (loss,) = compiled(*inputs)
    (want,) = interpret(compiled.graph, *inputs)  # its constants are arguments too
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert abs(float(loss) - float(expected[0])) > 1e-4  # the edit changed the program


def test_results_are_fresh_and_arguments_unchanged():
    compiled = ndl.compile_ir(STATEFUL)
    w = np.arange(3, dtype=np.float32)
    first = compiled(np.ones((2, 3), np.float32), w)
    second = compiled(np.ones((2, 3), np.float32), w=w)
    assert compiled.inputs == ["x", "w"] and compiled.names == ["out0", "new.w"]
    assert float(first[0]) == 6.0 and first[1].tolist() == [1.0, 2.0, 3.0]
    assert w.tolist() == [0.0, 1.0, 2.0] and first[1] is not second[1]


STATEFUL = """graph @f(%x: f32[2,3], %w: f32[3] state) {
  %0 = broadcast_to(%w, shape=(2, 3)) : f32[2,3]
  %1 = multiply(%x, %0) : f32[2,3]
  %2 = summation(%1, axes=(0, 1)) : f32[]
  %3 = add_scalar(%w, scalar=1.0) : f32[3]
  return %2, new %w = %3
}
"""


@pytest.mark.parametrize("edit, where, message", [
    (lambda t: t.replace("multiply(", "multiplx("), (3, 8), "unknown op 'multiplx'"),
    (lambda t: t.replace("%1 = multiply(%x, %0)", "%1 = multiply(%x, %9)"), (3, 21), "use of undefined value %9"),
    (lambda t: t.replace(": f32[]", ": f32[3]"), (4, 8), r"result type f32\[3\] but the op's rule gives f32\[\]"),
    (lambda t: t.replace("shape=(2, 3))", "shape=(2, 3)"), (2, 38), "expected ',', found ':'"),
])
def test_malformed_text_is_reported_at_its_line_and_column(edit, where, message):
    with pytest.raises(ndl.ir.IRParseError, match=message) as error:
        ndl.compile_ir(edit(STATEFUL))
    assert (error.value.line, error.value.column) == where
    assert str(error.value).startswith(f"line {where[0]}, column {where[1]}:")


def test_missing_or_unknown_arguments_are_named():
    compiled = ndl.compile_ir(STATEFUL)
    with pytest.raises(ndl.NdlcError, match=r"@f needs its inputs %w: f32\[3\]"):
        compiled(np.ones((2, 3), np.float32))
    with pytest.raises(ndl.NdlcError, match=r"@f has no input %v; inputs: %x, %w"):
        compiled(np.ones((2, 3), np.float32), v=np.ones(3))
    with pytest.raises(ndl.ShapeError, match=r"input 1 \(w\) has type float64\[3\], expected f32\[3\]"):
        compiled(np.ones((2, 3), np.float32), np.ones(3))


def test_ndlc_dump_writes_a_stage_that_ndlc_run_runs(tmp_path, capsys):
    assert main(["dump", "decomposed", "--batch-size", "4", "--output", str(tmp_path / "step.ir")]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "step.ir").read_text().startswith("graph @train_step(")
    (tmp_path / "f.ir").write_text(STATEFUL)
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    np.savez(tmp_path / "state.npz", w=np.arange(3, dtype=np.float32))
    assert main(["run", str(tmp_path / "f.ir"), "--input", f"x={tmp_path}/x.npy", "--input",
                 str(tmp_path / "state.npz"), "--output", str(tmp_path / "out.npz")]) == 0
    assert capsys.readouterr().out == "out0: f32[] = 6\nnew.w: f32[3]\n"
    with np.load(tmp_path / "out.npz") as out:
        assert sorted(out.files) == ["new.w", "out0"] and out["new.w"].tolist() == [1.0, 2.0, 3.0]
    (tmp_path / "bad.ir").write_text(STATEFUL.replace("multiply(", "multiplx("))
    assert main(["run", str(tmp_path / "bad.ir")]) == 1
    assert capsys.readouterr().err.startswith(f"ndlc run: {tmp_path}/bad.ir: line 3, column 8: unknown op 'multiplx'")
    assert main(["run", str(tmp_path / "f.ir"), "--input", str(tmp_path / "x.npy")]) == 2
    assert "a single .npy array needs a name" in capsys.readouterr().err


def test_a_dumped_stage_runs_from_the_shell_on_the_dumped_inputs(tmp_path, capsys):
    assert main(["dump", "grad", "--batch-size", "4", "-o", str(tmp_path / "step.ir"),
                 "--inputs", str(tmp_path / "step.npz")]) == 0
    assert main(["run", str(tmp_path / "step.ir"), "--input", str(tmp_path / "step.npz"),
                 "--output", str(tmp_path / "out.npz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("out0: f32[] = ") and lines[1] == "new.model.modules.0.weight: f32[784,32]"
    compiled = ndl.compile_ir((tmp_path / "step.ir").read_text())
    with np.load(tmp_path / "step.npz") as inputs, np.load(tmp_path / "out.npz") as out:
        assert sorted(inputs.files) == sorted(compiled.inputs)
        expected = interpret(compiled.graph, *[inputs[name] for name in compiled.inputs])
        assert out.files == compiled.names
        for name, want in zip(compiled.names, expected):
            np.testing.assert_allclose(out[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


_STATEMENT = re.compile(r'(\w+) \[(\w+=("([^"\\]|\\.)*"|[\w#"]+)(, )?)+\];$|(\w+) -> (\w+);$|'
                        r'(label="([^"\\]|\\.)*"|style=\w+|color="#\w+"|rankdir=TB|node \[.*\]);$')


def _check_dot(text):
    """Structural checks of dot text: balanced blocks, every line a statement, every edge between
    declared nodes; returns {cluster: [node ids]}."""
    lines = text.splitlines()
    assert re.match(r'digraph "\w+" \{$', lines[0]) and lines[-1] == "}"
    declared, edges, clusters, cluster, depth = set(), [], {}, None, 1
    for line in lines[1:-1]:
        line = line.strip()
        if line.startswith("subgraph cluster_"):
            assert depth == 1 and line.endswith("{")
            cluster, depth = line.split()[1], 2
            clusters[cluster] = []
        elif line == "}":
            assert depth == 2
            cluster, depth = None, 1
        else:
            m = _STATEMENT.match(line)
            assert m, line
            if m.group(1):
                declared.add(m.group(1))
                if cluster:
                    clusters[cluster].append(m.group(1))
            elif m.group(6):
                edges.append((m.group(6), m.group(7)))
    assert depth == 1 and edges
    assert {a for a, b in edges} | {b for a, b in edges} <= declared
    return clusters


@pytest.mark.parametrize("stage", GRAPH_STAGES + ("fused", "planned"))
def test_stages_draw_as_well_formed_dot(mlp_step, stage):
    step = mlp_step[0]
    dot = step.ir(stage, format="dot")
    clusters = _check_dot(dot)
    if stage in ("fused", "planned"):
        kernels = re.findall(r"^kernel (k\d+)", step.ir("fused"), re.M)
        assert sorted(clusters) == sorted(f"cluster_{k}" for k in kernels)
        assert all(clusters.values())
    else:
        assert not clusters and dot.count("shape=box") == len(re.findall(r"^  %\S+ = ", step.ir(stage), re.M))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
@pytest.mark.parametrize("stage", ["simplified", "fused"])
def test_dot_renders_with_graphviz(mlp_step, stage, tmp_path):
    subprocess.run(["dot", "-Tsvg", "-o", str(tmp_path / "g.svg")], input=mlp_step[0].ir(stage, format="dot"),
                   text=True, check=True)
    assert (tmp_path / "g.svg").read_text().count("<g id=\"node") > 50


def test_ndlc_dump_draws_and_refuses_unknown_formats(tmp_path, capsys):
    assert main(["dump", "fused", "--batch-size", "4", "--format", "dot", "-o", str(tmp_path / "k.dot")]) == 0
    assert "subgraph cluster_k0 {" in (tmp_path / "k.dot").read_text()
    assert main(["dump", "llvm", "--batch-size", "4", "--format", "dot"]) == 2
    assert "no picture of stage 'llvm'" in capsys.readouterr().err
