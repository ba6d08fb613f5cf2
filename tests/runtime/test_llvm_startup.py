"""A cold compilation loads LLVM (llvmlite's binding, its initialisation, the host's target) in a
thread of its own while the Python passes run (native.prepare); a warm start never loads it."""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np
    from ndlc.ir import parse
    from ndlc.jit.compile import compile_graph
    from ndlc.runtime import native
    seen, prepared = [], native._prepared

    def recording():
        seen.append((threading.current_thread().name, "llvmlite.binding" in sys.modules))
        prepared()
    native._prepared = recording
    program = compile_graph(parse('''graph @g(%x: f32[5]) {
      %0 = exp(%x) : f32[5]
      return %0
    }'''))
    out = program.run(np.zeros(5, np.float32))[0]
    print(seen, len(native._PREPARING), native._host_target.cache_info().currsize, out.tolist())
""")


def _compiled_in_a_new_process(cache):
    env = dict(os.environ, NDLC_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_cold_compilation_loads_llvm_in_a_thread_and_a_warm_start_does_not(tmp_path, fresh_machine):
    _compiled_in_a_new_process(tmp_path / "first")  # the host's description, asked of LLVM, into the machine's folder
    cold = _compiled_in_a_new_process(tmp_path / "cold")
    assert cold == "[('ndlc-llvm', False)] 1 1 [1.0, 1.0, 1.0, 1.0, 1.0]", "loaded in the thread, waited for"
    warm = _compiled_in_a_new_process(tmp_path / "cold")
    assert warm == "[] 0 0 [1.0, 1.0, 1.0, 1.0, 1.0]", "from the program cache: no LLVM"
