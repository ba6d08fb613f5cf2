"""The native call trampoline (runtime/trampoline.py): a compiled program's native call is a
builtin whose C function LLVM made, not a ctypes call, with the same results; it releases the GIL
as ctypes did, keeps None's count and Python's memory flat, loads from MCJIT where there is no
linker, and where it cannot be made the program is called through ctypes, the reason logged."""
import ctypes
import functools
import logging
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

import ndlc as ndl
from ndlc.ir import parse
from ndlc.jit.compile import compile_graph
from ndlc.runtime import machine, native_calls, shared, trampoline

GRAPH = """
graph @mlp(%x: f32[32,64], %w: f32[64,16], %b: f32[16]) {
  %0 = matmul(%x, %w) : f32[32,16]
  %1 = broadcast_to(%b, shape=(32, 16)) : f32[32,16]
  %2 = add(%0, %1) : f32[32,16]
  %3 = relu(%2) : f32[32,16]
  %4 = summation(%3, axes=(1,)) : f32[32]
  return %3, %4
}"""


def inputs():
    rng = np.random.default_rng(3)
    return [rng.standard_normal(s).astype(np.float32) for s in [(32, 64), (64, 16), (16,)]]


def reference(x, w, b):
    y = np.maximum(x @ w + b, 0)
    return y, y.sum(1)


@pytest.fixture
def remade():
    """The trampoline made again in this test (and once more after it, as the process had it)."""
    made = trampoline._made
    made.cache_clear()
    yield
    made.cache_clear()


def test_a_steady_call_runs_through_the_trampoline_with_the_bits_of_a_ctypes_call(monkeypatch, remade):
    x = np.random.default_rng(0).standard_normal((14, 1, 2)).astype(np.float32)
    compiled = ndl.compile(lambda t: t.max((0,)))
    results = [compiled(ndl.Tensor(x)).numpy() for _ in range(4)]
    program = compiled.last.program
    assert trampoline.used(program.native_call)
    assert any(value is program.native_call for value in compiled.entry.__globals__.values()), \
        "the call entry calls the program's builtin"
    assert all(r.tobytes() == x.max(0).tobytes() for r in results)
    program.native.runner = None  # ctypes' function gone: steady calls never needed it
    assert compiled(ndl.Tensor(x)).numpy().tobytes() == x.max(0).tobytes()
    fast = [a.tobytes() for a in compile_graph(parse(GRAPH), cached=False).run(*inputs())]
    monkeypatch.setattr(trampoline, "_made", lambda forking: None)
    slow = compile_graph(parse(GRAPH), cached=False)
    assert isinstance(slow.native_call, functools.partial)
    assert [a.tobytes() for a in slow.run(*inputs())] == fast
    np.testing.assert_allclose(slow.run(*inputs())[1], reference(*inputs())[1], rtol=1e-5, atol=1e-5)


def test_where_the_trampoline_cannot_be_made_programs_call_ctypes_and_say_why(monkeypatch, caplog, remade):
    monkeypatch.setattr(trampoline, "data_offset", lambda: None)
    with caplog.at_level(logging.INFO, logger="ndlc.native"):
        program = compile_graph(parse(GRAPH), cached=False)
    assert "no native call trampoline (a ctypes object's data pointer was not found" in caplog.text
    assert not trampoline.used(program.native_call) and isinstance(program.native_call, functools.partial)
    for got, want in zip(program.run(*inputs()), reference(*inputs())):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _counted(program)
    assert ".value += 1" in program.steady.source, "counted in Python where ctypes calls"


def _counted(program):
    """A full run and steady runs each count one native call, of the program and of the process."""
    before, calls, arrays = native_calls(), program.calls, inputs()
    program.run(*arrays)
    for _ in range(3):
        program.steady(*arrays)
    assert (program.calls - calls, native_calls() - before) == (4, 4)
    assert "steady_mlp" in program.steady.source


def test_the_trampoline_counts_the_calls_it_makes():
    program = compile_graph(parse(GRAPH), cached=False)
    assert trampoline.used(program.native_call) and program.counts_itself
    _counted(program)
    assert ".value += 1" not in program.steady.source, "no Python code counts"


def test_without_a_linker_the_trampoline_runs_from_mcjit(monkeypatch, remade):
    monkeypatch.setattr(shared, "link", lambda objects: None)
    monkeypatch.setattr(machine, "load", lambda key, suffix=".obj": None)  # as on a new machine
    program = compile_graph(parse(GRAPH), cached=False)
    assert trampoline.used(program.native_call)
    assert type(program.native_call.__self__.owners[1]).__name__ == "ExecutionEngine"
    for got, want in zip(program.run(*inputs()), reference(*inputs())):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_trampoline_finds_a_ctypes_objects_data_pointer():
    block = trampoline._Block()
    offset = trampoline.data_offset()
    assert offset is not None and offset % 8 == 0
    assert ctypes.c_void_p.from_address(id(block) + offset).value == ctypes.addressof(block)


def test_nones_count_and_pythons_memory_stay_flat_over_many_calls():
    program = compile_graph(parse(GRAPH), cached=False)
    program.run(*inputs())
    call = program.native_call
    assert trampoline.used(call)
    for _ in range(100):
        assert call() is None
    count = sys.getrefcount(None)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(10000):
            call()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(sys.getrefcount(None) - count) < 50, "each call returns one new reference to None"
    assert after - before < 1000


def test_another_python_thread_runs_during_a_long_native_call():
    """The GIL is released around the runner: with the switch interval so long that the caller never
    yields the GIL by itself, a counting thread counts only while the native call runs."""
    graph = parse("""
graph @long(%x: f32[2048,2048]) {
  %0 = exp(%x) : f32[2048,2048]
  %1 = tanh(%0) : f32[2048,2048]
  %2 = summation(%1, axes=(1,)) : f32[2048]
  return %2
}""")
    program = compile_graph(graph, cached=False)
    program.run(np.zeros((2048, 2048), np.float32))
    assert trampoline.used(program.native_call)
    count, stop = [0], threading.Event()

    def counting():
        while not stop.is_set():
            count[0] += 1
            time.sleep(1e-4)
    interval = sys.getswitchinterval()
    thread = threading.Thread(target=counting)
    sys.setswitchinterval(100.0)
    try:
        thread.start()
        time.sleep(0.05)  # it counts while this thread sleeps
        progress = []
        for _ in range(3):
            before = count[0]
            program.native_call()
            progress.append(count[0] - before)
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        thread.join()
    assert max(progress) > 0, "the counting thread ran during a native call"
