"""A compiled program's native code as a shared library (runtime/shared.py): a warm start loads
it with ctypes and never imports llvmlite's binding; without a linker, or with the library gone
or altered, the cached objects are loaded by MCJIT instead, with the same results, and
NDLC_LOG=compile says which. The host description is read from the disk cache (runtime/host.py)."""
import logging
import subprocess
import sys

import numpy as np
import pytest
from cache_files import stored

from ndlc.ir import parse
from ndlc.jit.compile import compile_graph
from ndlc.runtime import host, shared
from ndlc.runtime.native import llvm_compilations

GRAPH = """
graph @layer(%x: f32[64,32], %w: f32[32,16], %b: f32[16]) {
  %0 = matmul(%x, %w) : f32[64,16]
  %1 = broadcast_to(%b, shape=(64, 16)) : f32[64,16]
  %2 = add(%0, %1) : f32[64,16]
  %3 = tanh(%2) : f32[64,16]
  %4 = summation(%3, axes=(1,)) : f32[64]
  return %3, %4
}"""


def inputs():
    rng = np.random.default_rng(1)
    return [rng.standard_normal(s).astype(np.float32) for s in [(64, 32), (32, 16), (16,)]]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    return tmp_path


def restored(program) -> bool:
    return "fusion" not in program.stage_seconds


def test_a_compiled_program_runs_from_a_shared_library_and_a_warm_start_loads_it(cache, caplog):
    if shared.linker() is None:
        pytest.skip("no linker (ld) here: MCJIT loads every program")
    first = compile_graph(parse(GRAPH))
    assert first.native.loader == "MCJIT" and len(stored(cache, "*.so")) == 1, "linked to be stored"
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        again = compile_graph(parse(GRAPH))
    assert restored(again) and again.native.loader == "shared library"
    assert "from the program cache (shared library) compiled in" in caplog.text
    for got, want in zip(again.run(*inputs()), first.run(*inputs())):
        assert got.tobytes() == want.tobytes()
    assert again.ir("llvm_opt") == first.ir("llvm_opt"), "read from the cached objects when asked for"


def test_a_warm_start_in_a_new_process_imports_no_llvmlite_binding(cache):
    if shared.linker() is None:
        pytest.skip("no linker (ld) here: MCJIT loads every program")
    script = ("import sys, numpy as np\n"
              "from ndlc.ir import parse\n"
              "from ndlc.jit.compile import compile_graph\n"
              f"program = compile_graph(parse({GRAPH!r}))\n"
              "rng = np.random.default_rng(1)\n"
              "args = [rng.standard_normal(s).astype(np.float32) for s in [(64, 32), (32, 16), (16,)]]\n"
              "from ndlc.runtime.trampoline import used\n"
              "print(used(program.native_call), program.native.loader, 'llvmlite.binding' in sys.modules, "
              "program.run(*args)[1][:3].tolist())\n")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    cold, warm = runs[0].stdout.strip().split(" ", 3), runs[1].stdout.strip().split(" ", 4)
    assert cold[:3] == ["True", "MCJIT", "True"] and warm[:4] == ["True", "shared", "library", "False"], \
        "called through the trampoline, loaded from its library in the warm start"
    assert cold[3] == warm[4], "the same results"


def test_without_a_linker_programs_load_with_mcjit(cache, monkeypatch, caplog):
    want = [a.tobytes() for a in compile_graph(parse(GRAPH), cached=False).run(*inputs())]
    monkeypatch.setattr(shared, "linker", lambda: None)
    other = GRAPH.replace("tanh", "sigmoid")
    with caplog.at_level(logging.INFO, logger="ndlc.compile"):
        first = compile_graph(parse(other))
        again = compile_graph(parse(other))
    assert first.native.loader == again.native.loader == "MCJIT" and restored(again)
    assert not stored(cache, "*.so")
    assert "kernels (MCJIT) compiled in" in caplog.text and "from the program cache (MCJIT)" in caplog.text
    assert [a.tobytes() for a in again.run(*inputs())] == [a.tobytes() for a in first.run(*inputs())]
    assert [a.tobytes() for a in compile_graph(parse(GRAPH)).run(*inputs())] == want


@pytest.mark.parametrize("damage", ["truncated", "gone", "altered"])
def test_a_library_gone_or_damaged_falls_back_to_the_cached_objects_and_is_linked_again(cache, caplog, damage):
    if shared.linker() is None:
        pytest.skip("no linker (ld) here: MCJIT loads every program")
    want = [a.tobytes() for a in compile_graph(parse(GRAPH)).run(*inputs())]
    (library,) = stored(cache, "*.so")
    data = library.read_bytes()
    if damage == "gone":
        library.unlink()
    else:
        library.write_bytes(data[:len(data) // 2] if damage == "truncated" else data[:-1] + bytes([data[-1] ^ 1]))
    before = llvm_compilations()
    with caplog.at_level(logging.INFO):
        again = compile_graph(parse(GRAPH))
    assert restored(again) and again.native.loader == "MCJIT" and llvm_compilations() == before
    assert ("no longer cached" if damage == "gone" else "do not hash to its name") in caplog.text
    assert [a.tobytes() for a in again.run(*inputs())] == want
    assert library.read_bytes() == data and compile_graph(parse(GRAPH)).native.loader == "shared library"


def test_a_library_that_does_not_load_is_refused_with_the_loaders_reason(cache, caplog):
    from ndlc.runtime import cache as disk
    name = disk.store_library(b"not a shared library")  # its hash holds: the loader refuses it
    with caplog.at_level(logging.WARNING, logger="ndlc.native"):
        assert shared.load(name) is None
    assert "cannot load the shared library" in caplog.text and "loading with MCJIT" in caplog.text


def test_the_host_description_is_stored_under_the_machines_fingerprint(cache, caplog, fresh_machine):
    if host.fingerprint() is None:
        pytest.skip("no /proc/cpuinfo: LLVM is asked every time")
    asked = []

    def ask():
        asked.append(1)
        return ("triple", "cpu", "+feature", "context")
    assert host.description(ask, "context") == ask() and len(asked) == 2
    assert host.description(ask, "context") == ("triple", "cpu", "+feature", "context") and len(asked) == 2
    assert host.description(ask, "other context") and len(asked) == 3, "another context is another entry"
    for path in [*cache.rglob("*.host"), *fresh_machine.rglob("*.host")]:  # the disk cache's and the machine's
        path.write_bytes(path.read_bytes()[:-3])
    with caplog.at_level(logging.WARNING, logger="ndlc.cache"):
        assert host.description(ask, "context") == ask() and len(asked) == 5
    assert "checksum mismatch" in caplog.text
    assert host.description(ask, "context") and len(asked) == 5, "and stored again"


def test_the_fingerprint_names_the_first_processors_identity(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {}\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\ncpu MHz\t\t: {}\nflags\t\t: fpu avx2\n\n"
    cpuinfo.write_text(block.format(0, 2400.1) + block.format(1, 2399.7))
    monkeypatch.setattr(host, "CPUINFO", str(cpuinfo))
    first = host.fingerprint()
    assert "avx2" in first and "MHz" not in first and first.count("Xeon") == 1
    cpuinfo.write_text(block.format(0, 3000.0))
    assert host.fingerprint() == first, "a clock speed is not the machine"
    cpuinfo.write_text(block.format(0, 3000.0).replace("avx2", "avx512f"))
    assert host.fingerprint() != first
    monkeypatch.setattr(host, "CPUINFO", str(tmp_path / "absent"))
    assert host.fingerprint() is None


def test_a_library_the_loader_refuses_runs_from_mcjit_and_is_not_linked_again(cache, monkeypatch):
    import json
    from ndlc.runtime import cache as disk
    if shared.linker() is None:
        pytest.skip("no linker (ld) here: MCJIT loads every program")
    want = [a.tobytes() for a in compile_graph(parse(GRAPH)).run(*inputs())]
    (entry,) = stored(cache, "*.program")
    key = entry.name[:-len(".program")]
    payload, text = disk.load(key, ".program")
    header, _, data = payload.partition(b"\n")
    manifest = json.loads(header)
    manifest["library"] = disk.store_library(b"not a shared library")  # intact, but no ELF file
    disk.store(key, json.dumps(manifest).encode() + b"\n" + data, text, ".program")
    links = []
    monkeypatch.setattr(shared, "link", lambda objects: links.append(objects))
    again = compile_graph(parse(GRAPH))
    assert restored(again) and again.native.loader == "MCJIT" and not links, "an intact file is not linked again"
    assert [a.tobytes() for a in again.run(*inputs())] == want


def test_an_entry_is_written_once_its_library_is_linked_in_the_folder_it_was_saved_for(cache, tmp_path_factory,
                                                                                        monkeypatch):
    if shared.linker() is None:
        pytest.skip("no linker (ld) here: MCJIT loads every program")
    gate = tmp_path_factory.mktemp("gate") / "open"
    slow = gate.parent / "ld"  # links once the test opens the gate
    slow.write_text(f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.01; done\nexec {shared.linker()} \"$@\"\n")
    slow.chmod(0o755)
    monkeypatch.setattr(shared, "linker", lambda: str(slow))
    first = compile_graph(parse(GRAPH))
    want = [a.tobytes() for a in first.run(*inputs())]
    assert not list(cache.rglob("*.program")) and not list(cache.rglob("*.so")), "ld still waits at the gate"
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.setenv("NDLC_CACHE_DIR", str(elsewhere))
    gate.touch()
    assert not stored(elsewhere, "*.program"), "written where the cache was when it was saved"
    assert len(list(cache.rglob("*.program"))) == len(list(cache.rglob("*.so"))) == 1
    monkeypatch.setenv("NDLC_CACHE_DIR", str(cache))
    again = compile_graph(parse(GRAPH))
    assert restored(again) and again.native.loader == "shared library"
    assert [a.tobytes() for a in again.run(*inputs())] == want


def test_a_compilation_waits_for_the_entry_it_reads(cache, tmp_path_factory, monkeypatch):
    if shared.linker() is None:
        pytest.skip("no linker (ld) here: MCJIT loads every program")
    slow = tmp_path_factory.mktemp("slow") / "ld"
    slow.write_text(f"#!/bin/sh\nsleep 1\nexec {shared.linker()} \"$@\"\n")
    slow.chmod(0o755)
    monkeypatch.setattr(shared, "linker", lambda: str(slow))
    compile_graph(parse(GRAPH))
    again = compile_graph(parse(GRAPH))
    assert restored(again) and again.native.loader == "shared library"
