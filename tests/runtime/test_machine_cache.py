"""The per-machine cache (runtime/machine.py): what every program shares (the host description, the
runner's and the imports' objects, the thread team's library) is compiled once per machine, not
once per NDLC_CACHE_DIR; a corrupt or foreign file in it is rebuilt, never loaded."""
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ndlc.ir import parse
from ndlc.jit.compile import compile_graph
from ndlc.runtime import cache, host, machine, native, shared
from ndlc.runtime.native import llvm_compilations

GRAPH = """graph @scaled(%x: f32[6]) {
  %0 = mul_scalar(%x, scalar=3.0) : f32[6]
  return %0
}"""


def stored(folder, pattern):
    return sorted(folder.rglob(pattern))


def compiled_in(folder, monkeypatch):
    """GRAPH compiled (not from the program cache) with NDLC_CACHE_DIR `folder`: its result and the
    modules compiled."""
    monkeypatch.setenv("NDLC_CACHE_DIR", str(folder))
    before = llvm_compilations()
    program = compile_graph(parse(GRAPH), cached=False)
    return program.run(np.arange(6, dtype=np.float32))[0], llvm_compilations() - before


def test_a_new_disk_cache_compiles_only_the_programs_kernels(tmp_path, monkeypatch, fresh_machine):
    first, compiled = compiled_in(tmp_path / "a", monkeypatch)
    assert compiled == 2, "the kernels' module and the runner"
    again, compiled = compiled_in(tmp_path / "b", monkeypatch)
    assert compiled == 1, "the runner's object is the machine's"
    np.testing.assert_array_equal(again, first)
    assert len(stored(tmp_path / "b", "*.obj")) == 3, "the runner's copied into the disk cache, beside the " \
        "kernels' object and its reference"


def test_the_host_description_is_asked_of_llvm_once_per_machine(tmp_path, monkeypatch, fresh_machine):
    asked = []

    def ask_llvm():
        asked.append(1)
        return ("triple", "cpu", "+features", "context")
    for folder in ("a", "b"):
        monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / folder))
        assert host.description(ask_llvm, "context") == ("triple", "cpu", "+features", "context")
    assert len(asked) == 1 and stored(tmp_path / "b", "*.host") and stored(fresh_machine, "*.host")


@pytest.mark.parametrize("cpu,policy", [("+avx2,+fma,+avx512f,+avx512vl", True), ("+avx2,+fma,-avx512f", False)])
def test_an_avx512_host_keeps_its_instructions_at_256_bits_without_gathers(monkeypatch, cpu, policy):
    """AVX-512's features stay in, with LLVM's vectors 32 bytes wide and no gathers or scatters
    (native.VECTOR_POLICY); an AVX2 host's features are its own. The host description names the
    policy, so that no object of another policy is reused."""
    assert "AVX-512 with +prefer-256-bit,+prefer-no-gather,+prefer-no-scatter" in native.host_description()

    class Features:
        def flatten(self):
            return cpu

    class Binding:
        def get_host_cpu_features(self):
            return Features()
    monkeypatch.setattr(native, "_binding", Binding)
    want = cpu + ",+prefer-256-bit,+prefer-no-gather,+prefer-no-scatter" * policy
    assert native.host_features.__wrapped__() == want


@pytest.mark.parametrize("damage", ["corrupt", "foreign"])
def test_a_damaged_machine_entry_is_rebuilt_not_loaded(tmp_path, monkeypatch, fresh_machine, caplog, damage):
    first, _ = compiled_in(tmp_path / "a", monkeypatch)
    (runner,) = [entry for entry in stored(fresh_machine, "*.obj") if b'@ndlc_main(' in entry.read_bytes()]
    if damage == "corrupt":
        runner.write_bytes(runner.read_bytes()[:-40])
    else:  # a valid entry stored under another key, copied over the runner's
        other = cache.cache_key("another")
        cache.store(other, b"object", "text", root=str(tmp_path))
        runner.write_bytes((tmp_path / other[:2] / f"{other}.obj").read_bytes())
    with caplog.at_level(logging.INFO, "ndlc.cache"):
        again, compiled = compiled_in(tmp_path / "b", monkeypatch)
    assert compiled == 2, "the runner compiled again"
    assert ("checksum mismatch" if damage == "corrupt" else "stored under another key") in caplog.text
    np.testing.assert_array_equal(again, first)
    assert cache.load(runner.stem, ".obj", str(fresh_machine)) is not None, "and stored again, whole"


TEAM_SCRIPT = textwrap.dedent("""
    from ndlc.runtime import pool, shared
    compiled = []
    original = shared.link  # once per library built (the test needs a linker)
    shared.link = lambda objects, root=None: compiled.append(1) or original(objects, root)
    functions, state, library = pool._loaded()
    print(len(compiled), getattr(library, "_name", "MCJIT"))
""")


def _team_in_a_new_process(tmp_path, cache_dir):
    env = dict(os.environ, NDLC_CACHE_DIR=str(tmp_path / cache_dir))
    done = subprocess.run([sys.executable, "-c", TEAM_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, library = done.stdout.split()
    return int(count), library


@pytest.mark.skipif(shared.linker() is None, reason="no linker: the team runs in MCJIT, nothing is stored")
def test_the_teams_library_is_built_once_per_machine_and_rebuilt_when_damaged(tmp_path, fresh_machine):
    assert _team_in_a_new_process(tmp_path, "a")[0] == 1
    count, library = _team_in_a_new_process(tmp_path, "b")
    assert count == 0 and library.startswith(str(fresh_machine)), "loaded from the machine's folder"
    (stored_library,) = stored(fresh_machine, "*.so")
    data = bytearray(stored_library.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored_library.write_bytes(bytes(data))
    count, library = _team_in_a_new_process(tmp_path, "c")
    assert count == 1 and library.startswith(str(tmp_path / "c")), "compiled and linked again"


def test_a_machine_folder_that_cannot_be_written_costs_only_a_warning(tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert machine.machine_dir() == str(blocked / "ndlc" / "machine")
    with caplog.at_level(logging.WARNING, "ndlc.cache"):
        result, compiled = compiled_in(tmp_path / "a", monkeypatch)
    assert compiled == 2 and "cannot write cache entry" in caplog.text
    np.testing.assert_array_equal(result, np.arange(6, dtype=np.float32) * 3)
