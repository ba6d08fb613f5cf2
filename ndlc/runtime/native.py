"""Native code for the host CPU with llvmlite.binding: target machine from the host triple, CPU
name and features; the new pass manager's O3 pipeline with loop and SLP vectorisation; object code
is cached on disk (runtime/cache.py), per kernel and for the runner, and loaded into MCJIT, one
engine per program linking the objects its kernels are in.
The loop unroller is off: on a 45-node gradient graph it took compilation from 0.3 s to 1.4 s
with no measured speedup (the vectoriser interleaves loops anyway)."""
import concurrent.futures
import ctypes
import functools
import logging
import multiprocessing
import threading
import time

import numpy as np

from ..errors import NdlcError
from ..codegen.kernel_key import FINGERPRINT
from . import cache, libraries

log = logging.getLogger("ndlc.native")
_compilations = 0
_FORKING = threading.RLock()  # held by a thread forking compiling workers, and around every translation
PARALLEL_KERNELS = 8  # new kernels per module at least when several compile in parallel: forking a
# worker costs ~20 ms, a small kernel's optimisation a few ms


def llvm_compilations() -> int:
    """How many modules (a program's new kernels, the runner) this process compiled with LLVM
    (cache hits do not count)."""
    return _compilations


class BackendUnavailable(NdlcError):
    """llvmlite (the CPU backend's code generator) cannot be imported or initialised."""


def _binding():
    try:
        import llvmlite.binding as llvm
    except ImportError as e:
        raise BackendUnavailable(f"the CPU backend needs llvmlite (pip install llvmlite): {e}") from None
    return llvm


@functools.lru_cache(maxsize=None)
def _initialise():
    llvm = _binding()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def target_machine():
    """A new target machine for the host (an MCJIT engine takes ownership of the one it gets)."""
    llvm = _binding()
    _initialise()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(),
                                        opt=3, reloc="default", codemodel="jitdefault")


def host_target():
    """(triple, data layout) to put in generated modules so the optimiser knows the target."""
    tm = target_machine()
    return tm.triple, str(tm.target_data)


class NativeModule:
    """A compiled program (codegen/llvm_program.py's LlvmProgram): `entry(pointers)` runs it (the
    runner on the program's plan), and the optimised IR of its modules. Each distinct kernel
    is looked up in the disk cache under its structural key (a reference to the cached object
    that holds it); only the kernels not found are generated and compiled: into one module, or,
    when they are many, one per thread of the budget, compiled in parallel. The runner, the same
    for every program, is cached under its own IR. `seconds`: this program's time in
    LLVM's optimiser and code generator."""

    def __init__(self, llvm_program, entry: str):
        llvm = _binding()
        tm = target_machine()
        host = (tm.triple, llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), _versions(),
                FINGERPRINT)
        self.seconds = {"LLVM optimise": 0.0, "machine code": 0.0}
        objects = {}  # cache key -> (object code, optimised IR), each loaded once
        missing = []
        for symbol, (_, key, _) in llvm_program.kernels.items():
            if not self._cached_kernel(cache.cache_key("kernel", key.text, *host), objects):
                missing.append(symbol)
        groups = _groups(missing, lambda symbol: len(llvm_program.kernels[symbol][1].text))
        texts = [llvm_program.module(group, f"{llvm_program.name}.kernels{i}") for i, group in enumerate(groups)]
        for group, text, compiled in zip(groups, texts, self._compile_all(texts)):
            key = cache.cache_key("kernels", text, *host)
            objects[key] = compiled
            cache.store(key, *compiled)
            for symbol in group:
                cache.store(cache.cache_key("kernel", llvm_program.kernels[symbol][1].text, *host), b"", key)
        log.debug("%s: %d distinct kernels, %d compiled", llvm_program.name, len(llvm_program.kernels), len(missing))
        key = cache.cache_key("runner", llvm_program.runner, *host)
        objects[key] = cache.load(key)
        if objects[key] is None:
            objects[key] = self._record(_translate(llvm_program.runner))
            cache.store(key, *objects[key])
        self.modules = [ir_text for _, ir_text in objects.values()]
        libraries.register(llvm)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        for obj, _ in objects.values():
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()
        addresses = {symbol: self._address(symbol) for symbol in llvm_program.kernels}
        self.plan = np.array(llvm_program.plan, np.int64)
        self.functions = np.array([addresses[symbol] for symbol in llvm_program.calls] or [0], np.int64)
        self.runner = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(self._address(entry))
        self.tables = (self.plan.ctypes.data, self.functions.ctypes.data)  # numpy's ctypes.data: 1.7 us each

    def entry(self, pointers):
        """Run the program on the pointer array at address `pointers`: the runner reads the plan."""
        self.runner(pointers, *self.tables)

    def _address(self, symbol) -> int:
        address = self.engine.get_function_address(symbol)
        if not address:
            raise NdlcError(f"native code has no function {symbol!r}")
        return address

    @staticmethod
    def _cached_kernel(key, objects) -> bool:
        """Whether the object holding the kernel cached under `key` is in `objects` or, loaded
        from the disk cache, now is."""
        reference = cache.load(key)
        if reference is None:
            return False
        group = reference[1]
        if group not in objects:
            found = cache.load(group)
            if found is None:
                return False
            objects[group] = found
        return True

    def _compile_all(self, texts) -> list:
        """(object code, optimised IR) of each kernel module of `texts`: in this process if one,
        else in as many processes forked from it (llvmlite holds one lock around every call into
        LLVM, so threads would take turns)."""
        if len(texts) <= 1:
            return [self._record(_translate(text)) for text in texts]
        start = time.perf_counter()
        log.info("optimising %d kernel modules in %d processes", len(texts), len(texts))
        context = multiprocessing.get_context("fork")
        with _FORKING, concurrent.futures.ProcessPoolExecutor(len(texts), mp_context=context) as pool:
            results = list(pool.map(_translated, texts, [True] * len(texts)))  # a worker has one thread: no lock
        global _compilations
        _compilations += len(results)
        wall = time.perf_counter() - start
        work = sum(r[2] + r[3] for r in results) or 1.0  # the wall time, shared as the workers spent theirs
        self.seconds["LLVM optimise"] += wall * sum(r[2] for r in results) / work
        self.seconds["machine code"] += wall * sum(r[3] for r in results) / work
        return [(obj, text) for obj, text, _, _ in results]

    def _record(self, translated):
        """(object code, IR) of `_translate`'s result, its times added to `seconds`."""
        global _compilations
        obj, text, optimising, emitting = translated
        self.seconds["LLVM optimise"] += optimising
        self.seconds["machine code"] += emitting
        _compilations += 1
        return obj, text

    @property
    def optimized_ir(self) -> str:
        return "\n".join(self.modules)

    def assembly(self) -> str:
        llvm = _binding()
        return "\n".join(target_machine().emit_assembly(llvm.parse_assembly(text)) for text in self.modules)


def _translate(text, optimise=True):
    """(object code, optimised IR, seconds optimising, seconds making machine code) of module `text`.
    Never while this process forks compiling workers: a worker forked while another thread is inside
    LLVM would inherit llvmlite's lock held, and wait on it forever."""
    with _FORKING:
        return _translated(text, optimise)


def _translated(text, optimise):
    llvm = _binding()
    tm = target_machine()
    start = time.perf_counter()
    module = llvm.parse_assembly(text)
    module.verify()
    if optimise:
        options = llvm.create_pipeline_tuning_options(speed_level=3)
        options.loop_vectorization = True
        options.slp_vectorization = True
        options.loop_unrolling = False
        builder = llvm.create_pass_builder(tm, options)
        builder.getModulePassManager().run(module, builder)
    optimised = time.perf_counter()
    obj = tm.emit_object(module)
    return obj, str(module), optimised - start, time.perf_counter() - optimised


def _groups(symbols, size) -> list:
    """`symbols` (kernels to compile) dealt, largest first by `size`, into as many modules as the
    thread budget has threads, each of at least PARALLEL_KERNELS: one module when they are few."""
    count = max(1, min(libraries.threads(), len(symbols) // PARALLEL_KERNELS))
    groups = [[] for _ in range(count)]
    for i, symbol in enumerate(sorted(symbols, key=size, reverse=True)):
        groups[i % count].append(symbol)
    return [group for group in groups if group]


@functools.lru_cache(maxsize=None)
def _versions():
    import llvmlite
    from ..version import __version__
    return f"ndlc {__version__} llvmlite {llvmlite.__version__}"
