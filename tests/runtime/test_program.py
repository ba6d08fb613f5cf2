"""The runtime and ndlc.compile: one native call per run, buffers allocated once, outputs that do
not alias, specialisations cached by input types, stage dumps, BLAS calls linked by name from the
disk cache in a fresh process, and clear errors."""
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ndlc as ndl
from ndlc.runtime import libraries
from ndlc.jit.compile import compile_graph
from ndlc.ir import NdlcError, ShapeError, parse
from ndlc.runtime import BackendUnavailable, native_calls
from ndlc.runtime.native import NativeModule

GRAPH = """
graph @mlp(%x: f32[8,4], %w: f32[4,3], %b: f32[3]) {
  %0 = matmul(%x, %w) : f32[8,3]
  %1 = broadcast_to(%b, shape=(8, 3)) : f32[8,3]
  %2 = add(%0, %1) : f32[8,3]
  %3 = relu(%2) : f32[8,3]
  %4 = logsoftmax(%3, axis=1) : f32[8,3]
  %5 = summation(%4, axes=(0, 1)) : f32[]
  return %4, %5
}"""


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in ((8, 4), (4, 3), (3,))]


def test_one_native_call_per_run_whatever_the_kernel_count():
    program = compile_graph(parse(GRAPH))
    assert len(program.kernels.kernels) >= 3
    before = native_calls()
    for seed in range(3):
        program.run(*_inputs(seed))
    assert native_calls() - before == 3 and program.calls == 3


def test_temporaries_are_reused_and_outputs_are_fresh():
    program = compile_graph(parse(GRAPH))
    storage = {name: array.ctypes.data for name, array in program.storage.items()}
    assert storage, "the MLP keeps intermediate buffers"
    first = program.run(*_inputs(0))
    kept = [a.copy() for a in first]
    second = program.run(*_inputs(1))
    assert {name: a.ctypes.data for name, a in program.storage.items()} == storage
    for a, b in zip(first, kept):
        np.testing.assert_array_equal(a, b)  # the second run did not overwrite the first's results
    assert not np.allclose(first[0], second[0])


def test_inputs_that_are_not_contiguous_and_wrong_types():
    program = compile_graph(parse(GRAPH))
    x, w, b = _inputs()
    strided = np.asfortranarray(x)
    np.testing.assert_array_equal(program.run(strided, w, b)[0], program.run(x, w, b)[0])
    with pytest.raises(ShapeError, match="input 0 \\(x\\) has type float64\\[8, 4\\], expected f32\\[8,4\\]"):
        program.run(x.astype(np.float64), w, b)
    with pytest.raises(ShapeError, match="takes 3 inputs, got 2"):
        program.run(x, w)


def test_compile_returns_tensors_and_caches_specialisations(caplog):
    def f(a, b):
        return (a * b).exp().sum(axes=(1,)), a - b

    compiled = ndl.compile(f)
    x, y = np.ones((2, 3), np.float32), np.full((2, 3), 0.5, np.float32)
    total, diff = compiled(x, ndl.Tensor(y))
    assert isinstance(total, ndl.Tensor) and total.dtype == "float32"
    np.testing.assert_allclose(total.numpy(), np.exp(0.5) * 3 * np.ones(2), rtol=1e-6)
    np.testing.assert_allclose(diff.numpy(), x - y)
    compiled(x, y)
    assert len(compiled.specialisations) == 1
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        compiled(x[:1], y[:1])
    assert len(compiled.specialisations) == 2 and "new specialisation for (f32[1,3], f32[1,3])" in caplog.text
    with pytest.raises(ShapeError, match=r"f: input 1 has type i64\[2,3\], but it was compiled for rank-2 f32"):
        compiled(x, y.astype(np.int64))
    with pytest.raises(ShapeError, match="input 0 has type f32\\[6\\], but it was compiled for rank-2"):
        compiled(x.ravel(), y)


def test_compile_single_output_and_captured_constants():
    weight = ndl.Tensor(np.arange(3, dtype=np.float32))

    def scale(a):
        return a * weight

    out = ndl.compile(scale)(np.ones((2, 3), np.float32))
    assert isinstance(out, ndl.Tensor)
    np.testing.assert_array_equal(out.numpy(), np.tile(np.arange(3, dtype=np.float32), (2, 1)))


def test_stage_texts_and_dump_files(tmp_path, monkeypatch):
    monkeypatch.setenv("NDLC_DUMP", "planned,llvm")
    monkeypatch.setenv("NDLC_DUMP_DIR", str(tmp_path))
    compiled = ndl.compile(lambda a: a.exp() + 1.0)
    compiled(np.zeros((4,), np.float32))
    assert "kernel k0" in compiled.ir("planned")
    assert "define void @\"ndlc_main\"" in compiled.ir("llvm")
    assert "graph @" in compiled.ir("decomposed") and "ret" in compiled.ir("asm")
    dumped = sorted(p.name.rsplit(".", 2)[1] for p in tmp_path.iterdir())
    assert dumped == ["llvm", "planned"]
    with pytest.raises(KeyError, match="no stage 'nonsense'"):
        compiled.ir("nonsense")


def test_ndlc_dump_all_writes_every_stage(tmp_path, monkeypatch):
    from ndlc.jit.pipeline import STAGES
    monkeypatch.setenv("NDLC_DUMP", "all")
    monkeypatch.setenv("NDLC_DUMP_DIR", str(tmp_path))
    ndl.compile(lambda a: (a.exp() + 1.0).sum())(np.zeros((4,), np.float32))
    dumped = {p.name.rsplit(".", 2)[1] for p in tmp_path.iterdir()}
    # a function without backward() has no grad stage; the CPU backend writes no cuda stage
    assert dumped == set(STAGES) - {"grad", "cuda"}
    assert "ret" in next(tmp_path.glob("*.asm.txt")).read_text()


def test_unknown_device_and_ir_before_the_first_call():
    with pytest.raises(NdlcError, match="device 'tpu' is not available to ndlc.compile"):
        ndl.compile(lambda a: a, device="tpu")
    with pytest.raises(NdlcError, match="has not been compiled yet"):
        ndl.compile(lambda a: a).ir()


def test_missing_llvmlite_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "llvmlite.binding", None)
    with pytest.raises(BackendUnavailable, match="needs llvmlite"):
        NativeModule("", "ndlc_main")


def test_transcendentals_vectorise_without_libm_calls():
    compiled = ndl.compile(lambda a: (a.exp() + a.tanh() + (a * a + 1.0).log()).sum(axes=(0,)))
    compiled(np.ones((64,), np.float32))
    optimized = compiled.ir("llvm_opt")
    assert "<8 x float>" in optimized or "<4 x float>" in optimized or "<16 x float>" in optimized
    assert not any(f"@{name}f(" in optimized or f"@{name}(" in optimized for name in ("exp", "log", "tanh"))


def test_polynomials_fuse_their_multiply_adds_where_the_cpu_can():
    """Where the CPU has FMA, mathlib's multiply-adds are llvm.fma calls (fused whatever LLVM's
    instruction selection), else `contract` multiplies and adds."""
    compiled = ndl.compile(lambda a: a.exp().sum(axes=(0,)))
    compiled(np.ones((64,), np.float32))
    import llvmlite.binding as llvm
    if "+fma" in llvm.get_host_cpu_features().flatten():
        assert "@\"llvm.fma." in compiled.ir("llvm") and "fmul contract" not in compiled.ir("llvm")
        assert "vfmadd" in compiled.ir("asm")
    else:
        assert "fmul contract" in compiled.ir("llvm") and "fadd contract" in compiled.ir("llvm")


BLAS_SCRIPT = textwrap.dedent("""
    import numpy as np
    from ndlc.jit.compile import compile_graph
    from ndlc.ir import parse
    from ndlc.runtime.native import llvm_compilations
    program = compile_graph(parse(%r))
    x, w, b = (np.linspace(-1, 1, n, dtype=np.float32).reshape(s) for n, s in ((32, (8, 4)), (12, (4, 3)), (3, (3,))))
    out = program.run(x, w, b)[0]
    print(llvm_compilations(), "ndlc_sgemm" in program.ir("llvm"), float(out.sum()))
""" % GRAPH)


def _run_blas_script(cache, blas):
    env = dict(os.environ, NDLC_CACHE_DIR=str(cache), NDLC_BLAS=blas)
    done = subprocess.run([sys.executable, "-c", BLAS_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    count, calls_blas, total = done.stdout.split()
    return int(count), calls_blas == "True", float(total)


@pytest.mark.skipif(not libraries.blas_available(), reason="numpy ships no 64-bit-integer OpenBLAS here")
def test_cached_native_code_finds_blas_by_name_in_a_second_process(tmp_path, fresh_machine):
    first, second = _run_blas_script(tmp_path, "1"), _run_blas_script(tmp_path, "1")
    # the kernels' two modules (the gemm's and the reductions' for LLVM's vectoriser, the map's on
    # codegen's vectors: codegen/llvm_lanes.py) and the runner
    assert first[:2] == (3, True) and second == (0, True, first[2])
    without = _run_blas_script(tmp_path, "0")
    assert without[:2] == (1, False), "the loop-nest kernels are another cache entry"
    assert without[2] == pytest.approx(first[2], rel=1e-5)


def _runs(program, way):
    """`program`'s run as the way named calls it: `run`, or `steady` (the generated run for calls
    that repeat the last, runtime/steady.py, which compiled calls take; the full run where any
    decision is to be made again)."""
    return program.run if way == "run" else lambda *arrays: program.steady(*arrays)  # the one generated by then


WAYS = pytest.mark.parametrize("way", ["run", "steady"])


def test_steady_runs_are_generated_after_the_first_and_agree_bit_for_bit():
    program = compile_graph(parse(GRAPH))
    inputs = _inputs()
    expected = [a.copy() for a in program.run(*[a.copy() for a in inputs])]
    before = native_calls()
    for _ in range(3):
        got = program.steady(*inputs)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
    assert "steady_mlp" in program.steady.source and native_calls() - before == 3 and program.calls == 4


def test_a_steady_run_times_its_call_for_the_team_only_where_a_kernel_is_split(monkeypatch):
    """A program with no split kernel reads no team: its steady run calls the native entry as it is
    (no Team.call); one that splits a kernel sets its team and times it (runtime/team.py)."""
    monkeypatch.setenv("NDLC_THREADS", "2")
    text = "graph @g(%x: f32[{n}], %y: f32[{n}]) {{\n  %0 = add(%x, %y) : f32[{n}]\n  return %0\n}}"
    for n, split in ((8, False), (1 << 18, True)):
        program = compile_graph(parse(text.format(n=n)))
        inputs = [np.ones(n, np.float32), np.full(n, 2.0, np.float32)]
        for _ in range(3):
            assert program.steady(*inputs)[0].tobytes() == np.full(n, 3.0, np.float32).tobytes()
        names = {id(value): name for name, value in program.steady.__globals__.items()}
        call, team, source = names[id(program.native_call)], names.get(id(program.team)), program.steady.source
        assert (program.team.candidates[-1] > 1) == split, program.ir("scheduled")
        assert (f"{call}()" in source, f"{team}.call({call})" in source) == (not split, split), source


def test_a_program_without_inputs_runs_steadily():
    program = compile_graph(parse("""
graph @c() {
  %0 = full(value=2.0, shape=(3,)) : f32[3]
  return %0
}"""))
    held = [program.steady()[0] for _ in range(3)]
    assert program.steady.source.startswith("def steady_c(")
    assert len({a.ctypes.data for a in held}) == 3 and all(a.tobytes() == np.full(3, 2.0, np.float32).tobytes() for a in held)


@WAYS
def test_an_output_array_is_written_again_only_when_nothing_references_it(way):
    program = compile_graph(parse(GRAPH))
    run = _runs(program, way)
    inputs = [np.full(t.shape, 0.5, np.float32) for t in program.input_types]
    first = run(*inputs)[0]
    second = run(*inputs)[0]
    assert not np.shares_memory(first, second), "the caller holds the first result"
    address, view = second.ctypes.data, second[:1]
    del second
    third = run(*inputs)[0]
    assert third.ctypes.data != address, "a view keeps the second result alive"
    address = third.ctypes.data
    del view, third
    fourth = run(*inputs)[0]
    assert fourth.ctypes.data == address, "nothing references the third result: its array is reused"
    np.testing.assert_array_equal(fourth, first)


@WAYS
def test_a_loop_holding_its_last_result_alternates_between_two_arrays(monkeypatch, way):
    """`out = run(...)` holds the last result while the next run writes: that one is new, and
    from then on the runs take turns with the two arrays (no array made per run)."""
    from ndlc.runtime import program as program_module
    program = compile_graph(parse(GRAPH))
    made, aligned_empty = [], program_module.aligned_empty
    monkeypatch.setattr(program_module, "aligned_empty", lambda *a: made.append(a[0]) or aligned_empty(*a))
    inputs = [np.full(t.shape, 0.5, np.float32) for t in program.input_types]
    addresses = []
    out = None
    run = _runs(program, way)
    for _ in range(6):
        out = run(*inputs)[0]
        addresses.append(out.ctypes.data)
    assert made == [(8, 3), (), (8, 3)], "both outputs by the first run, the held one again by the second"
    assert addresses[0] != addresses[1] and addresses[2:] == addresses[:2] * 2
    np.testing.assert_array_equal(out, program.run(*[a.copy() for a in inputs])[0])


@WAYS
def test_each_run_writes_the_array_it_returns_and_leaves_the_held_one_alone(way):
    """Inputs bound once and changed in place, the caller holding the last result (`out = run(...)`)
    or not: each result is its own run's, and the result held is not written again (the table's
    output pointers follow the spare arrays a steady run switches between, steady.py)."""
    program = compile_graph(parse(GRAPH))
    run, inputs = _runs(program, way), _inputs()
    held = None
    for step in range(12):
        inputs[0][...] = _inputs(step)[0]
        out = run(*inputs)[0]
        np.testing.assert_allclose(out, _reference(*inputs)[0], rtol=1e-5, atol=1e-5)
        if held is not None:
            assert held[0].tobytes() == held[1].tobytes(), "the result held is its own run's still"
        held = (out, out.copy()) if step % 5 != 4 else None
        del out


def _reference(x, w, b):
    """GRAPH's outputs in numpy."""
    y = np.maximum(x @ w + b, 0)
    shifted = y - y.max(1, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return out, out.sum()


def test_read_only_and_empty_inputs_pass_their_own_addresses():
    from ndlc.runtime.program import address
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    frozen = data.copy()
    frozen.flags.writeable = False
    for array in (data, frozen, data[1:], np.zeros((0, 4), np.float32)):
        assert address(array) == array.ctypes.data
    program = compile_graph(parse(GRAPH))
    inputs = _inputs()
    expected = program.run(*inputs)
    for array in inputs:
        array.flags.writeable = False
    for got, want in zip(program.run(*inputs), expected):
        np.testing.assert_array_equal(got, want)


@WAYS
def test_an_input_passed_again_is_checked_and_read_again(way):
    """A run keeps the last run's input arrays and their addresses: the same object passed again
    is not bound anew, but its shape, dtype and contents are still what this run reads."""
    program = compile_graph(parse(GRAPH))
    run = _runs(program, way)
    x, w, b = _inputs()
    first = [a.copy() for a in run(x, w, b)]
    x *= 2
    np.testing.assert_array_equal(run(x, w, b)[0], run(x.copy(), w, b)[0])
    assert not np.array_equal(run(x, w, b)[0], first[0])
    x.shape = (4, 8)
    with pytest.raises(ShapeError, match="input 0 \\(x\\) has type float32\\[4, 8\\]"):
        run(x, w, b)
    x.shape = (8, 4)
    x /= 2
    np.testing.assert_array_equal(run(x, w, b)[0], first[0])


@WAYS
def test_state_passed_twice_after_a_run_on_distinct_arrays_is_not_updated_in_place(way):
    """Whether two state inputs share memory is decided again whenever an input is rebound: an
    update is written in place only into an array no other input shares."""
    graph = parse("""
graph @step(%g: f32[4], %w: f32[4] state, %u: f32[4] state) {
  %0 = add(%u, %g) : f32[4]
  %1 = add(%w, %g) : f32[4]
  return new %w = %1, new %u = %0
}""")
    program = compile_graph(graph)
    run = (lambda *a: program.run(*a, update_state=True)) if way == "run" else program.steady
    assert set(program.kernels.in_place.values()) == {"w", "u"}
    g, w, u = np.ones(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32)
    new_w, new_u = run(g, w, u)
    assert new_w is w and new_u is u
    shared = np.full(4, 5, np.float32)
    for _ in range(2):  # the second with the same arrays bound
        new_w, new_u = run(g, shared, shared)
        assert new_w is not shared and new_u is not shared
        np.testing.assert_array_equal(shared, np.full(4, 5, np.float32))
        np.testing.assert_array_equal(new_w, np.full(4, 6, np.float32))
    for _ in range(2):
        new_w, new_u = run(g, w, u)
        assert new_w is w and new_u is u
    w.flags.writeable = False
    new_w, new_u = run(g, w, u)
    assert new_w is not w and new_u is u, "a state array made read-only after it was bound is not written"
    np.testing.assert_array_equal(new_w, np.full(4, 4, np.float32))
    np.testing.assert_array_equal(w, np.full(4, 3, np.float32))


def test_outputs_start_apart_from_their_inputs_modulo_a_page():
    """A load waits on an earlier store whose address is the same modulo 4 KiB (4K aliasing): an
    output of a page or more starts as far as 64-byte alignment allows from the bound inputs'
    and the outputs' placed before it, modulo 4096 (x at page+16: 2048, then 3072, 1024 from
    both); smaller ones are only aligned."""
    program = compile_graph(parse("""
graph @apart(%x: f32[33,4097], %s: f32[3]) {
  %0 = relu(%x) : f32[33,4097]
  %1 = add(%x, %x) : f32[33,4097]
  %2 = relu(%s) : f32[3]
  return %0, %1, %2
}"""))
    raw = np.empty(33 * 4097 * 4 + 8192, np.uint8)
    start = (16 - raw.ctypes.data) % 4096
    x = raw[start:start + 33 * 4097 * 4].view(np.float32).reshape(33, 4097)
    x[...] = np.random.default_rng(0).standard_normal(x.shape)
    s = np.array([-1, 0, 2], np.float32)
    relu, doubled, small = program.run(x, s)
    assert sorted(a.ctypes.data % 4096 for a in (relu, doubled)) == [2048, 3072]
    assert small.ctypes.data % 64 == 0
    assert relu.tobytes() == np.maximum(x, 0).tobytes() and doubled.tobytes() == (x + x).tobytes()
    np.testing.assert_array_equal(small, np.maximum(s, 0))
