"""`ndlc run FILE` fuzzed: a drawn graph (one op of tests/op_cases.py with drawn inputs, as text)
run on drawn .npy/.npz inputs, either as they should be (the results, written with --output, are
the interpreter's) or damaged: an input left out, one too many, given twice, of another shape or
dtype, a missing file, a folder, a file that is not numpy's, a .npy without a name, and the graph
file itself missing, a folder, binary or cut short. A damaged run exits 1 or 2 with one line on
stderr, `ndlc run: ...`, naming what is wrong (a parse error adds the line and a caret), never a
traceback. FUZZ_EXAMPLES sets how many
are drawn (`-m slow`: many more)."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ndlc.cli import main
from ndlc.ir import interpret, print_graph
from op_cases import CASES, single_op_graph

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
# ops whose text the run can take as drawn: scan's body is a region, random_uniform's seed an i64 scalar
DRAWN = [case for case in CASES if case.op not in ("scan",) and case.draw(np.random.default_rng(0))[0]]
INPUT_DAMAGE = ("none", "missing", "extra", "twice", "shape", "dtype", "no-file", "folder", "not-numpy",
                "no-name", "npz")
GRAPH_DAMAGE = ("no-graph", "graph-folder", "binary", "cut")

# damage -> (exit status, words the one line of stderr must hold)
EXPECTED = {
    "missing": (1, ["needs its inputs"]), "extra": (1, ["has no input %extra"]), "twice": (2, ["is given twice"]),
    "shape": (1, ["has type"]), "dtype": (1, ["has type"]), "no-file": (2, ["gone.npy", "No such file"]),
    "folder": (2, ["Is a directory"]), "not-numpy": (2, ["text.npy", "not a readable .npy or .npz"]),
    "no-name": (2, ["needs a name"]), "no-graph": (2, ["gone.ir", "No such file"]),
    "graph-folder": (2, ["Is a directory"]), "binary": (2, ["not a text file"]), "cut": (1, ["line"]),
}


def fast(examples):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def damaged_inputs(data, folder, names, arrays):
    """The --input arguments for `arrays` (named `names`) with the drawn damage done."""
    damage = data.draw(st.sampled_from(INPUT_DAMAGE))
    if damage == "npz":
        np.savez(folder / "all.npz", **dict(zip(names, arrays)))
        return damage, [str(folder / "all.npz")]
    files = []
    for name, array in zip(names, arrays):
        np.save(folder / f"{name}.npy", array)
        files.append(f"{name}={folder / name}.npy")
    i = data.draw(st.integers(0, len(names) - 1))
    if damage == "missing":
        del files[i]
    elif damage == "extra":
        files.append(f"extra={folder / names[i]}.npy")
    elif damage == "twice":
        files.append(files[i])
    elif damage in ("shape", "dtype"):
        x = arrays[i]
        x = np.zeros(x.shape + (2,), x.dtype) if damage == "shape" else \
            x.astype(np.int32 if x.dtype.kind == "f" else np.float32)
        np.save(folder / "bad.npy", x)
        files[i] = f"{names[i]}={folder}/bad.npy"
    elif damage == "no-file":
        files[i] = f"{names[i]}={folder}/gone.npy"
    elif damage == "folder":
        files[i] = f"{names[i]}={folder}"
    elif damage == "not-numpy":
        (folder / "text.npy").write_bytes(data.draw(st.sampled_from([b"", b"1,2,3\n", b"\x93NUMPY\x01\x00", b"PK\x03\x04"])))
        files[i] = f"{names[i]}={folder}/text.npy"
    elif damage == "no-name":
        files[i] = files[i].split("=", 1)[1]
    return damage, files


def run_once(data, folder, capsys):
    case = data.draw(st.sampled_from(DRAWN))
    inputs, attrs = case.draw(np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))))
    graph, arrays = single_op_graph(case.op, inputs, attrs, dtype="f32")
    text = print_graph(graph)
    (folder / "g.ir").write_text(text)
    names = [v.name for v in graph.inputs]
    damage, files = damaged_inputs(data, folder, names, arrays)
    graph_file = folder / "g.ir"
    if data.draw(st.integers(0, 5)) == 0:  # now and then the graph file instead
        damage = data.draw(st.sampled_from(GRAPH_DAMAGE))
        graph_file = {"no-graph": folder / "gone.ir", "graph-folder": folder}.get(damage, graph_file)
        if damage == "binary":
            graph_file.write_bytes(text.encode()[:10] + b"\xff\xfe" + text.encode()[10:])
        elif damage == "cut":
            graph_file.write_text(text[:data.draw(st.integers(0, len(text) - 3))])
    argv = ["run", str(graph_file), "--output", str(folder / "out.npz")]
    for spec in files:
        argv += ["--input", spec]
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    if damage in ("none", "npz"):
        assert status == 0, err
        with np.load(folder / "out.npz") as out:
            np.testing.assert_allclose(out["out0"], interpret(graph, *arrays)[0], rtol=2e-4, atol=1e-5)
        return
    code, words = EXPECTED[damage]
    lines = (1, 3) if damage == "cut" else (1,)  # a parse error shows its line (if any) and a caret
    assert status == code and err.count("\n") in lines and err.startswith("ndlc run: "), (damage, status, err)
    for word in words:
        assert word in err, (damage, word, err)


def test_ndlc_run_on_drawn_graphs_and_inputs(tmp_path_factory, capsys):
    fast(EXAMPLES)(given(st.data())(lambda data: run_once(data, tmp_path_factory.mktemp("run"), capsys)))()


@pytest.mark.slow
def test_ndlc_run_on_drawn_graphs_and_inputs_many(tmp_path_factory, capsys):
    settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))(
        given(st.data())(lambda data: run_once(data, tmp_path_factory.mktemp("run"), capsys)))()


STAGES = ("traced", "grad", "simplified", "decomposed", "fused", "scheduled", "planned", "llvm", "asm")


def dump_once(data, folder, capsys):
    """`ndlc dump` with a drawn stage (or a misspelt one), format and output: the stage's text, or
    one line naming the problem."""
    stage = data.draw(st.sampled_from(STAGES) | st.sampled_from(STAGES).map(str.upper) | st.just("cuda"))
    form = data.draw(st.sampled_from(["text", "dot"]))
    target = data.draw(st.sampled_from(["file", "folder", "missing-folder"]))
    output = {"file": folder / "out.txt", "folder": folder, "missing-folder": folder / "no" / "out.txt"}[target]
    capsys.readouterr()
    status = main(["dump", stage, "--batch-size", "4", "--format", form, "-o", str(output)])
    err = capsys.readouterr().err
    if target != "file":
        assert status == 2 and err.count("\n") == 1 and str(output) in err, err
    elif stage not in STAGES:
        assert status == 2 and f"no stage '{stage}'" in err, err
    elif form == "dot" and stage in ("llvm", "asm"):
        assert status == 2 and f"no picture of stage '{stage}'" in err, err
    else:
        text = output.read_text()
        assert status == 0 and err == "" and text.startswith("digraph" if form == "dot" else ""), err
        assert form == "dot" or stage in ("llvm", "asm") or text.startswith(("graph @", "program @")), text[:80]


def test_ndlc_dump_of_drawn_stages_and_outputs(tmp_path_factory, capsys):
    fast(max(EXAMPLES // 6, 4))(given(st.data())(lambda data: dump_once(data, tmp_path_factory.mktemp("dump"), capsys)))()
