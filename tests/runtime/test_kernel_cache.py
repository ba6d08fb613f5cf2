"""Kernels compiled once: structurally identical kernels (an unrolled recurrence's steps) share one
native function, and the disk cache keeps native code per kernel, so that a new program made of
known kernels compiles nothing: its own code is a plan for the runner, which every program shares."""
import numpy as np
import pytest
from cache_files import stored

import ndlc as ndl
from ndlc.codegen.kernel_key import kernel_key
from ndlc.runtime import shares
from ndlc.runtime.native import llvm_compilations


def recurrence(x, w):
    """An Elman-style recurrence unrolled over x's first axis: h = tanh(h @ w + x[t])."""
    h, outs = None, []
    for part in ndl.ops.split(x, axis=0):
        h = part.tanh() if h is None else (h @ w + part).tanh()
        outs.append(h)
    return ndl.ops.stack(outs, axis=0)


def last_state(x, w):
    """The recurrence's last state only: the same step kernels, no stacking."""
    h = None
    for part in ndl.ops.split(x, axis=0):
        h = part.tanh() if h is None else (h @ w + part).tanh()
    return h


def inputs(steps):
    x = np.linspace(-1, 1, steps * 4 * 8, dtype=np.float32).reshape(steps, 4, 8)
    return x, (np.eye(8, dtype=np.float32) * 0.5 + 0.01)


def expected(x, w):
    h, outs = None, []
    for part in x:
        h = np.tanh(part) if h is None else np.tanh(h @ w + part)
        outs.append(h)
    return np.stack(outs)


def test_the_steps_of_a_recurrence_share_one_function():
    compiled = ndl.compile(recurrence)
    x, w = inputs(5)
    np.testing.assert_allclose(compiled(x, w).numpy(), expected(x, w), rtol=1e-5, atol=1e-6)
    program = compiled.last.program
    keys = [kernel_key(k) for k in program.kernels.kernels]
    steps = keys[1:5]  # the first step has no matmul; the last kernel stacks the states
    assert len(program.kernels.kernels) == 6 and len({k.symbol for k in keys}) == 3
    assert len({k.symbol for k in steps}) == 1 and len({k.text for k in steps}) == 1
    # each step reads its slice of x through a pointer to that slice
    assert [dict(zip(k.buffers, k.offsets))["x"] for k in steps] == [32, 64, 96, 128]
    assert "+ 32" not in keys[1].text and "%x" not in keys[1].text
    assert compiled.ir("llvm").count("define weak_odr void @\"ndlc_k") == 3


def test_guarded_accesses_keep_their_buffers_start():
    compiled = ndl.compile(recurrence)
    compiled(*inputs(3))
    stack = kernel_key(compiled.last.program.kernels.kernels[-1])
    assert set(stack.offsets) == {0}


def test_a_program_of_known_kernels_compiles_nothing(tmp_path, monkeypatch, fresh_machine):
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    before = llvm_compilations()
    ndl.compile(recurrence)(*inputs(5))
    assert llvm_compilations() - before == 2, "the new kernels' module and the runner"
    for steps in (5, 9):  # the last state alone, over as many steps or more: every kernel is known
        before = llvm_compilations()
        x, w = inputs(steps)
        np.testing.assert_allclose(ndl.compile(last_state)(x, w).numpy(), expected(x, w)[-1], rtol=1e-5, atol=1e-6)
        assert llvm_compilations() == before


def test_a_missing_cached_object_is_compiled_again(tmp_path, monkeypatch):
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    x, w = inputs(4)
    first = ndl.compile(recurrence)(x, w).numpy()
    objects = sorted(stored(tmp_path, "*.obj"), key=lambda p: p.stat().st_size)
    objects[-1].unlink()  # the kernels' object code (the others: the runner's, references to it)
    (library,) = stored(tmp_path, "*.so")  # linked from the objects: what a warm start loads
    library.unlink()
    before = llvm_compilations()
    np.testing.assert_array_equal(ndl.compile(recurrence)(x, w).numpy(), first)
    assert llvm_compilations() - before == 1


@pytest.mark.parametrize("debug", [False, True])
def test_bounds_checked_kernels_are_not_shared(debug):
    compiled = ndl.compile(recurrence, debug=debug)
    x, w = inputs(4)
    np.testing.assert_allclose(compiled(x, w).numpy(), expected(x, w), rtol=1e-5, atol=1e-6)
    distinct = compiled.ir("llvm").count("define weak_odr void @\"ndlc_k")
    assert distinct == (5 if debug else 3)


def test_many_new_kernels_compile_in_parallel_modules(tmp_path, monkeypatch, fresh_machine, caplog):
    import logging

    from ndlc.runtime import libraries, native
    caplog.set_level(logging.INFO, "ndlc.compile")
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(libraries, "threads", lambda: 2)
    monkeypatch.setattr(shares, "PARALLEL_KERNELS", 1)
    x, w = inputs(4)
    before = llvm_compilations()
    compiled = ndl.compile(recurrence)
    np.testing.assert_allclose(compiled(x, w).numpy(), expected(x, w), rtol=1e-5, atol=1e-6)
    assert llvm_compilations() - before == 3, "two kernel modules and the runner, built by two processes"
    assert compiled.ir("llvm_opt").count("; ModuleID =") == 3
    cpu_shares = compiled.last.program.native.builder_cpu  # the builder forked last may find no job left
    assert 1 <= len(cpu_shares) <= 2 and all(cpu > 0 for cpu in cpu_shares), "the CPU seconds of each process's share"
    assert "; builders' CPU s " + " + ".join(f"{cpu:.3f}" for cpu in cpu_shares) in caplog.text, "NDLC_LOG=compile says them"
    before = llvm_compilations()
    np.testing.assert_allclose(ndl.compile(recurrence)(x, w).numpy(), expected(x, w), rtol=1e-5, atol=1e-6)
    assert llvm_compilations() == before


def test_openblas_threads_start_again_while_forked_builders_compile(tmp_path, monkeypatch):
    """The forks shut OpenBLAS's pool down in this process too; it is started again while the
    builders run, not by the first run after them (its new threads' busy wait then took a core)."""
    import os

    from ndlc.runtime import libraries, native
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(libraries, "threads", lambda: 2)
    monkeypatch.setattr(shares, "PARALLEL_KERNELS", 1)
    parent, fork, forked, restarts = os.getpid(), os.fork, [], []

    def counted_fork():
        pid = fork()
        forked.extend([pid] * (os.getpid() == parent))
        return pid
    monkeypatch.setattr(os, "fork", counted_fork)
    restart = libraries.restart_blas_pool
    monkeypatch.setattr(libraries, "restart_blas_pool", lambda: (restarts.append(len(forked)), restart()))
    x, w = inputs(4)
    np.testing.assert_allclose(ndl.compile(recurrence)(x, w).numpy(), expected(x, w), rtol=1e-5, atol=1e-6)
    assert restarts == [1], "restarted once, once the builder is forked"


def test_each_module_is_stored_by_the_process_that_built_it(tmp_path, monkeypatch):
    """A forked builder writes its modules to the disk cache itself, once it has handed them over
    (this process meanwhile stores its own): every module once, and the next program finds them."""
    import os

    from ndlc.runtime import native
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / "cache"))
    parent, stored_by, log = os.getpid(), native._stored, tmp_path / "stores"

    def recorded(llvm_program, job, result):  # (storing process, building process, module) in a file: forks write too
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {result[-1][0]} {job[1]}\n")
        stored_by(llvm_program, job, result)
    _one_module_each(monkeypatch)
    monkeypatch.setattr(native, "_stored", recorded)
    x, w = inputs(4)
    np.testing.assert_allclose(ndl.compile(recurrence)(x, w).numpy(), expected(x, w), rtol=1e-5, atol=1e-6)
    stores = [line.split() for line in log.read_text().splitlines()]
    assert sorted(module for *_, module in stores) == sorted({module for *_, module in stores}), "each module once"
    assert all(storing == building for storing, building, _ in stores), stores
    assert {int(storing) == parent for storing, *_ in stores} == {True, False}, "by this process and by the builder"
    before = llvm_compilations()
    np.testing.assert_allclose(ndl.compile(recurrence)(x, w).numpy(), expected(x, w), rtol=1e-5, atol=1e-6)
    assert llvm_compilations() == before


def test_a_forked_builder_failing_to_store_its_modules_leaves_them_to_compile_again(tmp_path, monkeypatch):
    """Its modules reached this process, which runs them; the next program compiles them again."""
    import os

    from ndlc.runtime import native
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    parent, stored_by = os.getpid(), native._stored

    def failing(llvm_program, job, result):
        if os.getpid() != parent:
            raise RuntimeError("disk gone")
        stored_by(llvm_program, job, result)
    _one_module_each(monkeypatch)
    monkeypatch.setattr(native, "_stored", failing)
    x, w = inputs(4)
    np.testing.assert_allclose(ndl.compile(recurrence)(x, w).numpy(), expected(x, w), rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(native, "_stored", stored_by)
    before = llvm_compilations()
    np.testing.assert_allclose(ndl.compile(recurrence)(x, w).numpy(), expected(x, w), rtol=1e-5, atol=1e-6)
    assert llvm_compilations() > before


def _one_module_each(monkeypatch):
    """Two builders, modules of one kernel: this process takes the first module, the forked one the
    rest; no program cache (a program found there compiles nothing)."""
    import itertools
    import os

    from ndlc.runtime import builders, libraries, native
    parent, taken = os.getpid(), builders._taken
    monkeypatch.setenv("NDLC_PROGRAM_CACHE", "0")
    monkeypatch.setattr(libraries, "threads", lambda: 2)
    monkeypatch.setattr(shares, "PARALLEL_KERNELS", 1)
    monkeypatch.setattr(builders, "_taken", lambda pipe, count: itertools.islice(
        taken(pipe, count), 1 if os.getpid() == parent else count))


def test_the_fingerprint_hashes_every_module_the_cpu_code_generator_imports():
    """A cached kernel is reused while FINGERPRINT holds: every codegen module that llvm.py
    (transitively) imports must be among the hashed sources, or editing it would leave stale code."""
    import ast
    import os

    from ndlc.codegen import kernel_key
    root = os.path.dirname(os.path.dirname(kernel_key.__file__))
    seen, todo = set(), ["codegen/llvm.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(open(os.path.join(root, path)).read())
        todo += [f"codegen/{node.module}.py" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module]
    assert seen <= set(kernel_key._GENERATOR), seen - set(kernel_key._GENERATOR)


def test_kernels_are_dealt_into_modules_of_about_equal_estimated_cost(monkeypatch):
    from ndlc.runtime import libraries, native
    monkeypatch.setattr(libraries, "threads", lambda: 2)
    monkeypatch.setattr(shares, "PARALLEL_KERNELS", 2)
    costs = {"a": 90, "b": 50, "c": 40, "d": 30, "e": 20, "f": 10, "g": 10, "h": 5}
    # costliest first, each to the module of least cost so far (dealt in turn: a, c, e, g | b, d, f, h),
    # the modules costliest first
    assert shares.modules(list(costs), costs.get, lambda s: True) == [(["a", "d", "g"], False, True),
                                                                       (["b", "c", "e", "f", "h"], False, True)]
    monkeypatch.setattr(shares, "PARALLEL_KERNELS", 8)
    assert shares.modules(list(costs), costs.get, lambda s: True) == [(list(costs), False, True)], \
        "few kernels: one module"


def test_the_vectorisers_modules_count_in_the_builders_shares(monkeypatch):
    from ndlc.runtime import libraries, native
    monkeypatch.setattr(libraries, "threads", lambda: 2)
    monkeypatch.setattr(shares, "PARALLEL_KERNELS", 2)
    costs = {"a": 90, "b": 50, "c": 40, "d": 30, "e": 20, "o": 60, "p": 10}
    vectorised = set("abcde").__contains__
    # o and p (O3) are one module, 70 of one share before a..e are dealt, costliest first, each to the
    # share of least cost: a | b (120), c | d (150), e: 150 each
    assert shares.modules(list(costs), costs.get, vectorised) == [(["a", "c", "e"], False, True),
                                                                   (["b", "d"], False, True), (["o", "p"], True, True)]
    # the builders take them in turn: one builds a, c, e (150); the other b, d (80), then o, p (70)


def test_the_kernels_without_loop_strength_reduction_fill_the_cheapest_share_where_that_shortens_the_longest(
        monkeypatch):
    monkeypatch.setattr(libraries_module(), "threads", lambda: 2)
    monkeypatch.setattr(shares, "PARALLEL_KERNELS", 2)
    costs = {"a": 90, "b": 50, "c": 40, "d": 30, "e": 20, "f": 10, "g": 10, "h": 5}
    # b, c, d, f, h at 0.85 of their cost (114.75; e would take that share past the mean), a, e, g in the
    # other (120): dealt in turn, the costliest share would be 130 (a, d, g, with LSR)
    assert shares.modules(list(costs), costs.get, lambda s: True, set("bcdefh").__contains__) == [
        (["a", "e", "g"], False, True), (["b", "c", "d", "f", "h"], False, False)]
    # with h alone without it, the others would all go to the other share: dealt in turn, all with LSR
    assert shares.modules(list(costs), costs.get, lambda s: True, {"h"}.__contains__) == [
        (["a", "d", "g"], False, True), (["b", "c", "e", "f", "h"], False, True)]


def test_a_module_of_kernels_that_need_no_loop_strength_reduction_is_compiled_without_it(tmp_path, monkeypatch):
    """Point and chunks kernels alone in a module: LLVM makes their machine code without LSR, which
    rewrites addresses only (the same bits as with it)."""
    from ndlc.runtime import native
    built_by, jobs = native._built, []
    monkeypatch.setattr(native, "_built", lambda llvm_program, job: (jobs.append(job), built_by(llvm_program, job))[1])
    monkeypatch.setattr(libraries_module(), "threads", lambda: 1)
    monkeypatch.setenv("NDLC_PROGRAM_CACHE", "0")
    a = np.linspace(-2, 2, 4096 * 64, dtype=np.float32).reshape(4096, 64)  # one chunks kernel
    results = {}
    for without in ((), shares.WITHOUT_LSR):
        monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / str(len(without))))
        monkeypatch.setattr(shares, "WITHOUT_LSR", without)
        compiled = ndl.compile(lambda a: ((a.exp() + a.tanh()).sum(axes=(0,)), (a * a).tanh()))
        results[without] = [r.numpy() for r in compiled(a)]
        assert {lsr for symbols, *_, lsr in jobs if symbols} == {not without}
        jobs.clear()
        asm = compiled.ir("asm")  # made again from the optimised IR, as the object was
        assert "ret" in asm and (native.WITHOUT_LSR in compiled.ir("llvm_opt")) == bool(without)
        results[without].append(asm)
    assert results[()][-1] != results[shares.WITHOUT_LSR][-1], "the machine code differs"
    for with_lsr, without_lsr in zip(*(found[:-1] for found in results.values())):
        assert with_lsr.tobytes() == without_lsr.tobytes()
    np.testing.assert_allclose(results[()][0], (np.exp(a) + np.tanh(a)).sum(axis=0, dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(results[()][1], np.tanh(a * a), rtol=1e-6, atol=1e-7)


def libraries_module():
    from ndlc.runtime import libraries
    return libraries


def _failing_in_forked_processes(monkeypatch, failure):
    """Compile the recurrence in modules of one kernel each, two processes, where `failure` runs
    instead of LLVM in the forked one, which takes every module: where this process took them
    too, it could build both before a slow fork took one (a long test session's: no error)."""
    import os

    from ndlc.runtime import builders, libraries, native
    parent, translated, taken = os.getpid(), native._translated, builders._taken
    monkeypatch.setattr(libraries, "threads", lambda: 2)
    monkeypatch.setattr(shares, "PARALLEL_KERNELS", 1)
    monkeypatch.setattr(native, "_translated", lambda text, vectorise: translated(text, vectorise) if os.getpid() == parent else failure())
    monkeypatch.setattr(builders, "_taken", lambda shared, count: iter(()) if os.getpid() == parent else taken(shared, count))
    ndl.compile(recurrence)(*inputs(4))


def test_a_module_failing_in_a_forked_process_is_an_error_naming_it(tmp_path, monkeypatch):
    from ndlc.errors import NdlcError
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))

    def fail():
        raise ValueError("no target")
    with pytest.raises(NdlcError, match=r"compiling module '.*kernels\d' failed in a forked process: ValueError: no target"):
        _failing_in_forked_processes(monkeypatch, fail)


def test_a_forked_process_that_dies_is_an_error(tmp_path, monkeypatch):
    import os

    from ndlc.errors import NdlcError
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    with pytest.raises(NdlcError, match=r"a process compiling native code ended \(exit code 3\)"):
        _failing_in_forked_processes(monkeypatch, lambda: os._exit(3))


def test_a_module_failing_in_this_process_ends_its_forked_builders(tmp_path, monkeypatch):
    """The compiling process's error is raised at once: a builder still at work is killed and
    waited for (no process left behind, not even a zombie)."""
    import os
    import time

    from ndlc.runtime import builders, libraries, native
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(libraries, "threads", lambda: 2)
    monkeypatch.setattr(shares, "PARALLEL_KERNELS", 1)
    parent, fork, taken, forked = os.getpid(), os.fork, builders._taken, []

    def counted_fork():
        pid = fork()
        forked.extend([pid] * (os.getpid() == parent))
        return pid

    def translated(text, vectorise):  # fails here, at once; takes a minute in the builder
        if os.getpid() == parent:
            raise ValueError("no target")
        time.sleep(60)

    def late(pipe, count):  # the builder takes its job once this process has taken its own
        if os.getpid() != parent:
            time.sleep(0.5)
        yield from taken(pipe, count)
    monkeypatch.setattr(os, "fork", counted_fork)
    monkeypatch.setattr(native, "_translated", translated)
    monkeypatch.setattr(builders, "_taken", late)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="no target"):
        ndl.compile(recurrence)(*inputs(4))
    assert time.perf_counter() - start < 30 and len(forked) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(forked[0], os.WNOHANG)
