"""The program cache: a program compiled before (in this process or another) comes back from the
disk under its graph without running the passes, with the same results and stage texts; a
corrupt, misplaced or stale entry, or one whose native code is gone, is compiled again, and a
change of options is another entry."""
import logging

import numpy as np
import pytest
from cache_files import stored

import ndlc as ndl
from ndlc.errors import NdlcError
from ndlc.ir import parse
from ndlc.jit.compile import compile_graph
from ndlc.runtime import libraries
from ndlc.runtime.native import llvm_compilations

GRAPH = """
graph @mlp(%x: f32[8,4], %w: f32[4,3], %b: f32[3]) {
  %0 = matmul(%x, %w) : f32[8,3]
  %1 = broadcast_to(%b, shape=(8, 3)) : f32[8,3]
  %2 = add(%0, %1) : f32[8,3]
  %3 = tanh(%2) : f32[8,3]
  %4 = logsoftmax(%3, axis=1) : f32[8,3]
  %5 = summation(%4, axes=(0, 1)) : f32[]
  return %4, %5
}"""
STAGES = ("traced", "simplified", "decomposed", "fused", "scheduled", "planned", "llvm", "llvm_opt")


def inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32) for s in [(8, 4), (4, 3), (3,)]]


def restored(program) -> bool:
    """Whether `program` came from the program cache: no pass ran for it."""
    return "fusion" not in program.stage_seconds


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_a_program_compiled_before_is_restored_with_the_same_results_and_stages(cache):
    first = compile_graph(parse(GRAPH))
    assert not restored(first) and len(stored(cache, "*.program")) == 1
    before = llvm_compilations()
    again = compile_graph(parse(GRAPH))
    assert restored(again) and llvm_compilations() == before
    assert again.team.candidates == first.team.candidates, "the layout keeps the threads its kernels split for"
    for got, want in zip(again.run(*inputs()), first.run(*inputs())):
        np.testing.assert_array_equal(got, want)
    for stage in STAGES:  # the skipped stages are made again when asked for
        assert again.ir(stage) == first.ir(stage), stage
    assert again.ir("fused", format="dot") == first.ir("fused", format="dot")
    assert again.check(*inputs()) is None, "check mode interprets the graph made again"


def test_a_training_step_in_a_new_process_restores_its_program(cache):
    import subprocess
    import sys
    script = ("import numpy as np, ndlc as ndl\n"
              "from ndlc.examples.train_mlp import build_mlp, training_step\n"
              "np.random.seed(0); model = build_mlp(6, (8,), 3)\n"
              "step = ndl.compile(training_step(model, ndl.optim.Adam(model.parameters(), lr=0.1)))\n"
              "x, y = np.random.rand(16, 6).astype(np.float32), np.random.randint(0, 3, 16)\n"
              "losses = [float(step(x, y).numpy()) for _ in range(3)]\n"
              "print('fusion' not in step.last.program.stage_seconds, losses)\n")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    assert runs[0].stdout.startswith("False") and runs[1].stdout.startswith("True")
    assert runs[0].stdout.split(" ", 1)[1] == runs[1].stdout.split(" ", 1)[1], "the same losses, bit for bit"


def test_other_options_are_other_entries(cache, monkeypatch):
    compile_graph(parse(GRAPH))
    monkeypatch.setenv("NDLC_THREADS", "3")
    assert not restored(compile_graph(parse(GRAPH))), "the schedule depends on the thread budget"
    monkeypatch.setenv("NDLC_PROFILE", "1")
    assert not restored(compile_graph(parse(GRAPH))), "profiling code stamps the cycle counter"
    assert len(stored(cache, "*.program")) == 3
    assert not restored(compile_graph(parse(GRAPH), debug=True)), "debug mode runs every pass"
    monkeypatch.setattr(libraries, "blas_core", lambda: "another core")
    assert restored(compile_graph(parse(GRAPH))) != libraries.blas_enabled(), "BLAS's core: where gemms are cut"
    assert len(stored(cache, "*.program")) == (4 if libraries.blas_enabled() else 3)


def test_constants_data_is_part_of_the_key(cache):
    def scaled(data):  # the tensor made inside the step is a const: its data is in the program
        return ndl.compile(lambda a: a * ndl.Tensor(data))
    x = np.ones((4,), np.float32)
    ones, steps = np.ones((4,), np.float32), np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(scaled(ones)(x).numpy(), ones)
    other = scaled(steps)
    np.testing.assert_array_equal(other(x).numpy(), steps)
    assert not restored(other.last.program) and other.last.program.kernels.constants
    again = scaled(steps)
    np.testing.assert_array_equal(again(x).numpy(), steps)
    assert restored(again.last.program)


def _entry(cache):
    (entry,) = stored(cache, "*.program")
    return entry


def test_a_corrupt_entry_is_compiled_again(cache, caplog):
    compile_graph(parse(GRAPH))
    entry = _entry(cache)
    entry.write_bytes(entry.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING, logger="ndlc.cache"):
        program = compile_graph(parse(GRAPH))
    assert not restored(program) and "checksum mismatch" in caplog.text
    assert restored(compile_graph(parse(GRAPH))), "and stored again"


def test_an_entry_of_another_program_is_not_trusted(cache, caplog):
    compile_graph(parse(GRAPH))
    entry = _entry(cache)
    other = GRAPH.replace("tanh", "relu")
    compile_graph(parse(other))
    (copied,) = set(stored(cache, "*.program")) - {entry}
    entry.write_bytes(copied.read_bytes())
    with caplog.at_level(logging.WARNING, logger="ndlc.cache"):
        program = compile_graph(parse(GRAPH))
    assert not restored(program) and "stored under another key" in caplog.text
    np.testing.assert_array_equal(program.run(*inputs())[0], compile_graph(parse(GRAPH)).run(*inputs())[0])


def test_an_entry_whose_native_code_is_gone_is_compiled_again(cache, fresh_machine):
    first = compile_graph(parse(GRAPH)).run(*inputs())
    for obj in [*stored(cache, "*.obj"), *stored(cache, "*.so")]:
        obj.unlink()
    before = llvm_compilations()
    program = compile_graph(parse(GRAPH))
    # the kernels' two modules (one for LLVM's vectoriser, the rows-of-3 map's on codegen's vectors);
    # the runner's object is the machine's (runtime/machine.py)
    assert not restored(program) and llvm_compilations() - before == 2
    np.testing.assert_array_equal(program.run(*inputs())[0], first[0])


def test_turned_off_it_neither_reads_nor_writes(cache, monkeypatch):
    monkeypatch.setenv("NDLC_PROGRAM_CACHE", "0")
    compile_graph(parse(GRAPH))
    assert not restored(compile_graph(parse(GRAPH))) and not stored(cache, "*.program")


def test_stages_made_again_are_those_of_the_settings_it_was_compiled_under(cache, monkeypatch):
    from ndlc.runtime import libraries
    if not libraries.team_runs():
        pytest.skip("without ndlc's thread team every budget schedules one thread")
    big = "graph @big(%x: f32[512,512]) {\n  %0 = tanh(%x) : f32[512,512]\n  return %0\n}"
    monkeypatch.setenv("NDLC_THREADS", "2")
    first = compile_graph(parse(big))
    again = compile_graph(parse(big))
    monkeypatch.setenv("NDLC_THREADS", "1")
    assert restored(again) and "(2 threads)" in again.ir("scheduled")
    assert again.ir("scheduled") == first.ir("scheduled")


def test_a_restored_program_parses_its_kernels_only_when_they_are_read(cache):
    first = compile_graph(parse(GRAPH))
    again = compile_graph(parse(GRAPH))
    results = again.run(*inputs())
    assert restored(again) and "parsed" not in vars(again.kernels), "running needs only the layout"
    assert again.ir("planned") == first.ir("planned") and "parsed" not in vars(again.kernels)
    assert [str(k) for k in again.kernels.kernels] == [str(k) for k in first.kernels.kernels]
    assert again.kernels.parsed.constants is again.kernels.constants
    for got, want in zip(results, first.run(*inputs())):
        assert got.tobytes() == want.tobytes()


def test_a_restored_profiling_program_reports_its_kernels(cache, monkeypatch):
    monkeypatch.setenv("NDLC_PROFILE", "1")
    compile_graph(parse(GRAPH))
    again = compile_graph(parse(GRAPH))
    again.run(*inputs())
    assert restored(again) and len(again.profile().splitlines()) == 2 + len(again.kernels.kernels)


def _rewrite(entry, change):
    """Store the entry again, with a valid checksum and key, after `change` edits its manifest."""
    import json
    from ndlc.runtime import cache
    key = entry.name[:-len(".program")]
    payload, text = cache.load(key, ".program")
    header, _, data = payload.partition(b"\n")
    manifest = json.loads(header)
    change(manifest)
    cache.store(key, json.dumps(manifest).encode() + b"\n" + data, text, ".program")


def _drop_last_buffer(m):
    m["layout"]["buffers"].pop()


def _bad_dtype(m):
    m["layout"]["buffers"][0][1] = "f13"


def _negative_extent(m):
    m["layout"]["buffers"][0][2] = [-1]


def _foreign_output(m):
    m["layout"]["outputs"].append("nowhere")


def _slot_outside(m):
    m["plan"][4] = 999


def _offset_outside(m):
    m["plan"][5] = 1 << 40


def _plan_cut(m):
    m["plan"].pop()


def _plan_ends_before_its_calls(m):
    m["plan"][3:] = []


def _argument_count_past_the_most(m):
    m["plan"][1] = 0


def _plan_of_floats(m):
    m["plan"][3] = float(m["plan"][3])


def _layout_gone(m):
    del m["layout"]


def _kernel_count(m):
    m["layout"]["kernels"] += 1


def _no_team(m):
    m["layout"]["team"] = 0


@pytest.mark.parametrize("change", [_drop_last_buffer, _bad_dtype, _negative_extent, _foreign_output, _slot_outside,
                                    _offset_outside, _plan_cut, _plan_ends_before_its_calls, _argument_count_past_the_most,
                                    _plan_of_floats, _layout_gone, _kernel_count, _no_team])
def test_an_entry_whose_layout_or_plan_does_not_fit_is_compiled_again(cache, caplog, change):
    want = compile_graph(parse(GRAPH)).run(*inputs())
    _rewrite(_entry(cache), change)
    with caplog.at_level(logging.WARNING, logger="ndlc.cache"):
        program = compile_graph(parse(GRAPH))
    assert not restored(program) and "ignoring program cache entry" in caplog.text
    for got, expected in zip(program.run(*inputs()), want):
        np.testing.assert_array_equal(got, expected)
    assert restored(compile_graph(parse(GRAPH))), "and stored again"


def test_an_entry_whose_text_disagrees_with_its_layout_says_so_when_its_kernels_are_read(cache):
    compile_graph(parse(GRAPH))
    _rewrite(_entry(cache), lambda m: m["layout"].update(name="other"))
    again = compile_graph(parse(GRAPH))
    assert restored(again)
    with pytest.raises(NdlcError, match="other buffers or kernels than its layout; delete the entry"):
        again.kernels.kernels


def test_a_programs_temporaries_are_carved_from_one_aligned_arena_that_results_never_share(cache):
    from ndlc.runtime.program import ALIGNMENT
    compile_graph(parse(GRAPH))
    program = compile_graph(parse(GRAPH))
    arrays = sorted(program.storage.values(), key=lambda a: a.ctypes.data)
    assert len(arrays) >= 2 and all(a.base is arrays[0].base for a in arrays), "one allocation"
    for a, b in zip(arrays, arrays[1:]):
        assert a.ctypes.data + a.nbytes <= b.ctypes.data, "disjoint"
    for name, array in program.storage.items():
        assert array.ctypes.data % ALIGNMENT == 0 and program.pointers[program.slots[name]] == array.ctypes.data
    first = program.run(*inputs())
    kept = [a.copy() for a in first]
    program.run(*[a + 1 for a in inputs()])
    for result, copy in zip(first, kept):
        assert not np.shares_memory(result, arrays[0].base)
        np.testing.assert_array_equal(result, copy)


def test_the_sources_hash_changes_with_any_edit_of_a_source(tmp_path):
    """The key's hash of ndlc's sources goes by path, size and modification time: an edit that
    keeps a file's size is seen by its time, a new file by its path; other files do not count."""
    import os
    from ndlc.runtime.program_cache import tree_hash
    (tmp_path / "pkg").mkdir()
    source = tmp_path / "pkg" / "a.py"
    source.write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("not a source")
    hashes = [tree_hash(str(tmp_path))]
    source.write_text("x = 2\n")
    os.utime(source, ns=(1, 2))
    tree_hash.cache_clear()
    hashes.append(tree_hash(str(tmp_path)))
    (tmp_path / "notes.txt").write_text("still not a source")
    tree_hash.cache_clear()
    hashes.append(tree_hash(str(tmp_path)))
    (tmp_path / "b.py").write_text("")
    tree_hash.cache_clear()
    hashes.append(tree_hash(str(tmp_path)))
    assert hashes[0] != hashes[1] == hashes[2] != hashes[3]
