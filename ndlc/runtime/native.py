"""Native code for the host CPU with llvmlite.binding: target machine from the host triple, CPU
name and features (AVX-512's at 256 bits: `host_features`); the new pass manager's O3 pipeline with
loop and SLP vectorisation, or, for the kernels whose vectors codegen emits itself
(codegen/llvm_lanes.py), in modules of their own, only its function simplification (`optimise`);
object code is cached on disk (runtime/cache.py), per kernel and for the runner, and loaded
into an MCJIT engine, one per program linking the objects its kernels are in; a program stored
in the program cache is also linked into a shared library, which a warm start loads with ctypes
(runtime/shared.py). The loop unroller is off: on a 45-node gradient graph it took compilation
from 0.3 s to 1.4 s with no measured speedup (the vectoriser interleaves loops anyway)."""
import ctypes
import functools
import logging
import os
import threading
import time

import numpy as np

from ..errors import NdlcError
from ..codegen.kernel_key import FINGERPRINT
from . import builders, cache, host, libraries, machine, pool, shared, shares, trampoline

log = logging.getLogger("ndlc.native")
_compilations = 0
_FORKING = threading.RLock()  # held by a thread forking compiling workers, and around every translation
RELOC = "pic"  # object code a shared library can hold (runtime/shared.py), and MCJIT loads
CODE_MODEL = "small"  # a shared library's; MCJIT crashed running position-independent code of the large model
LANES_SPEED = 1  # the speed level of the pipeline without vectorisers: codegen's vectors ran as fast
# at 1 as at 3 (benchmarks' steps, per kernel), and the MLP's LLVM took fewer instructions (docs/ARCHITECTURE.md)
SIMPLIFY_FIRST = ("always_inliner", "global_dead_code_eliminate")  # module passes before each function's
# simplification (codegen/mathlib.py's inlined calls; the functions left without a call dropped) and after
SIMPLIFY_LAST = ("post_order_function_attributes",)  # it (nounwind: no unwind tables in the object)
# host_features' additions on an AVX-512 host: LLVM's vectors 32 bytes wide, and no gathers or scatters
# where an AVX2 host has none (the SLP vectoriser gathered a LayerNorm's streamed lines: 1.5 ms, not 1.0)
VECTOR_POLICY = ("+prefer-256-bit", "+prefer-no-gather", "+prefer-no-scatter")
WITHOUT_LSR = "; machine code made without loop strength reduction\n"  # heads such a module's optimised IR
PIPELINES = (f"O3 with loop and SLP vectorisers; O{LANES_SPEED} function simplification between "  # part of
             f"{', '.join(SIMPLIFY_FIRST)} and {', '.join(SIMPLIFY_LAST)}")  # the host description


def llvm_compilations() -> int:
    """How many modules (a program's new kernels, the runner) this process compiled with LLVM (not cache hits)."""
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
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=host_features(),
                                        opt=3, reloc=RELOC, codemodel=CODE_MODEL)


@functools.lru_cache(maxsize=None)
def host_features() -> str:
    """The host CPU's features for LLVM, AVX-512's kept but with VECTOR_POLICY: codegen's own
    vectors are 32 bytes (codegen/llvm_vector.py) and the orders of the sums it copies from LLVM's
    vectoriser were read at that width, where LLVM's loops vectorise as wide (at 64 bytes they
    summed in other orders)."""
    features = [f for f in _binding().get_host_cpu_features().flatten().split(",") if f]
    return ",".join(features + list(VECTOR_POLICY) * ("+avx512f" in features))


def host_fma() -> bool:
    """Whether the host has fused multiply-adds: mathlib's are then `llvm.fma` (codegen/mathlib.py),
    whose one rounding no choice of LLVM's instructions changes. Read off the host description,
    so that asking needs no llvmlite binding where the description is cached."""
    return "+fma" in host_description()[2].split(",")


def host_avx512() -> bool:
    """Whether the host has AVX-512 (F and VL): mathlib's exp then scales by `vscalefps` and
    codegen sums a row's exponentials in 512-bit vectors (codegen/mathlib.py, llvm_partials.py)."""
    features = host_description()[2].split(",")
    return "+avx512f" in features and "+avx512vl" in features


def host_target():
    """(triple, data layout) to put in generated modules so the optimiser knows the target (once
    `prepare`'s thread, if one runs, is done)."""
    for thread in list(_PREPARING):
        thread.join()
    return _host_target()


@functools.lru_cache(maxsize=None)
def _host_target():
    tm = target_machine()
    return tm.triple, str(tm.target_data)


_PREPARING = []  # the thread `prepare` started (one per process)


def prepare():
    """LLVM's binding imported and initialised and the host's target described (host_target) in
    a thread of its own, while the caller runs the Python passes: in a cold process ~50 ms of CPU,
    most of it the dynamic loader reading LLVM's library, which holds no GIL. Under _FORKING:
    builders are not forked while it runs."""
    if not _host_target.cache_info().currsize and not _PREPARING:
        thread = threading.Thread(target=_prepared, name="ndlc-llvm", daemon=True)
        _PREPARING.append(thread)
        thread.start()


def _prepared():
    with _FORKING:
        try:
            _host_target()
        except BackendUnavailable as e:  # raised again where host_target is called
            log.debug("preparing LLVM: %s", e)


@functools.lru_cache(maxsize=None)
def host_description() -> tuple:
    """What native code cached on disk is specific to: the target (triple, CPU name and features),
    the ndlc and llvmlite versions, the code generator's sources (kernel_key.FINGERPRINT) and the
    objects' relocation model. Asked of LLVM once per machine (runtime/host.py), so that a warm
    start need not import llvmlite's binding."""
    # the policies named, so that a description or object of code made under another is not reused
    context = (machine.versions(), FINGERPRINT, f"reloc {RELOC} code model {CODE_MODEL}", PIPELINES,
               "AVX-512 with " + ",".join(VECTOR_POLICY), "mathlib's multiply-adds llvm.fma where the host has FMA",
               "exp scaled by vscalefps, sums of exponentials 512 bits wide where the host has AVX-512")

    def ask_llvm():
        llvm = _binding()
        return (host_target()[0], llvm.get_host_cpu_name(), host_features(), *context)
    return host.description(ask_llvm, *context)


class NativeModule:
    """A compiled program (codegen/llvm_program.py's LlvmProgram): `entry(pointers)` runs it (the
    runner on the program's plan), and the optimised IR of its modules. Each distinct kernel
    is looked up in the disk cache under its structural key (a reference to the cached object
    that holds it); only the kernels not found are generated and compiled: into one module, or,
    when they are many, into modules of about equal estimated cost that this process and
    processes forked from it (one per thread of the budget) compile in parallel. The runner, the same
    for every program, is cached under its own IR. `seconds`: this program's time building the
    new kernels' LLVM IR (llvmlite, in Python) and in LLVM's optimiser and code generator;
    `builder_cpu`: each process's CPU seconds of it, this thread's first, then the forked builders'."""

    def __init__(self, llvm_program, entry: str):
        llvm = _binding()
        host = host_description()
        self.seconds = {"LLVM IR": 0.0, "LLVM optimise": 0.0, "machine code": 0.0}
        objects = {}  # cache key -> (object code, optimised IR), each loaded once
        missing = []
        for symbol, (_, key, _) in llvm_program.kernels.items():
            if not self._cached_kernel(cache.cache_key("kernel", key.text, *host), objects):
                missing.append(symbol)
        lanes = {symbol for symbol in missing if _without_vectorisers(llvm_program, symbol)}

        def cost(symbol):
            return (shares.KERNEL_COST + len(llvm_program.kernels[symbol][1].text)) * (
                1 if symbol in lanes else shares.VECTORISER_COST)
        jobs = [(group, f"{llvm_program.name}.kernels{i}", vectorise, lsr) for i, (group, vectorise, lsr) in enumerate(
            shares.modules(missing, cost, lanes.__contains__, lambda symbol: _lsr_free(llvm_program, symbol)))]
        runner_key = cache.cache_key("runner", llvm_program.runner, *host)
        runner = machine.load(runner_key)
        if runner is None:
            jobs.append((None, "runner", False, True))
        parallel = shares.shares(missing) > 1  # else one process builds all
        for key, compiled in self._build_all(llvm_program, jobs, parallel):
            objects[key] = compiled
        log.debug("%s: %d distinct kernels, %d compiled", llvm_program.name, len(llvm_program.kernels), len(missing))
        if runner is not None:
            objects[runner_key] = runner
        self.keys, self.objects, self.library = list(objects), objects, None
        self._bind(None, llvm_program.plan, llvm_program.calls, entry)

    @classmethod
    def restore(cls, keys, plan, calls, entry: str, library=None):
        """The module a program cache entry recorded: the shared library named `library` loaded
        (runtime/shared.py: no llvmlite), else the disk cache's objects `keys` linked by MCJIT,
        and the library linked again from them where it is gone or damaged (repaired; not where
        the loader refused it: a cache on a noexec mount would pay ld at every start);
        None when the library does not load and one of the objects is gone."""
        native = cls.__new__(cls)
        native.seconds = {"LLVM IR": 0.0, "LLVM optimise": 0.0, "machine code": 0.0}
        native.keys, native.library, native.objects, native.builder_cpu = list(keys), None, None, []
        pool.bind()
        loaded = library and shared.load(library)
        if loaded:
            native.library = library
        else:
            native.objects = {key: cache.load(key) for key in keys}
            if None in native.objects.values():
                return None
            if library and cache.library_path(library) is None and native.link_library() != library:
                log.info("the shared library linked again differs from the one recorded: this entry loads with MCJIT")
        native._bind(loaded, plan, calls, entry)
        return native

    def link_library(self):
        """The name of the shared library of this module's objects, linked on first call (what a
        program cache entry records for a warm start to load), or None where it cannot be."""
        if self.library is None:
            self.library = shared.link(self.library_objects())
        return self.library

    def library_objects(self) -> list:
        """The object code its shared library is linked from: its objects and the imports object
        (compiled under _FORKING: this may run in a thread of its own, program_cache.save)."""
        with _FORKING:
            return [obj for obj, _ in self.objects.values()] + [_imports_object()]

    def _bind(self, library, plan, calls, entry):
        """Find the entry and the function of each call (`calls`: symbols) that `plan` makes in the
        loaded shared `library`, or, where it is None, in an MCJIT engine of `self.objects`."""
        self.loader = "shared library" if library else "MCJIT"
        address = functools.partial(shared.address, library) if library else self._mcjit()
        self.calls = list(calls)
        addresses = {symbol: address(symbol) for symbol in dict.fromkeys(calls)}
        self.plan = np.array(plan, np.int64)
        self.functions = np.array([addresses[symbol] for symbol in calls] or [0], np.int64)
        self.runner_address = address(entry)
        self.runner = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(self.runner_address)
        self.tables = (self.plan.ctypes.data, self.functions.ctypes.data)  # numpy's ctypes.data: 1.7 us each

    def _mcjit(self):
        """Load `self.objects` (cache key -> (object code, IR)) into an MCJIT engine; the function
        giving a symbol's address in it."""
        llvm = _binding()
        pool.bind()
        libraries.register(llvm)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine())
        for obj, _ in self.objects.values():
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()

        def address(symbol) -> int:
            found = self.engine.get_function_address(symbol)
            if not found:
                raise NdlcError(f"native code has no function {symbol!r}")
            return found
        return address

    def entry(self, pointers, counters):
        """A function of no arguments that runs the program on the pointer array at address
        `pointers` (the runner reads the plan): the trampoline's builtin (runtime/trampoline.py),
        which adds one to the i64 counts at the addresses `counters`, else one ctypes call, its
        arguments bound once, which counts nothing."""
        return trampoline.entry(self.runner_address, (pointers, *self.tables), counters, self, _FORKING) or \
            functools.partial(self.runner, pointers, *self.tables)

    @functools.cached_property
    def modules(self) -> list:
        """The optimised IR of each object, read from the disk cache where a shared library was
        loaded instead (only a stage's reader asks)."""
        objects = self.objects or {key: cache.load(key) for key in self.keys}
        gone = [key for key, found in objects.items() if found is None]
        if gone:
            raise NdlcError(f"the optimised IR of this program's native code is no longer in the disk cache "
                            f"({cache.cache_dir()}: object {gone[0][:16]} is gone or corrupt)")
        return [ir_text for _, ir_text in objects.values()]

    @staticmethod
    def _cached_kernel(key, objects) -> bool:
        """Whether the object holding the kernel cached under `key` is in `objects` or, loaded
        from the disk cache, now is."""
        reference = cache.load(key)
        group = reference and reference[1]
        if group is not None and group not in objects and (found := cache.load(group)) is not None:
            objects[group] = found
        return group in objects

    def _build_all(self, llvm_program, jobs, parallel) -> list:
        """(cache key, (object code, optimised IR)) of each job (`_built`), stored (`_stored`): in
        this process, or, when `parallel`, by this process and as many more forked from it as the
        thread budget allows, each taking the next job not yet taken until none is left and storing
        what it built (llvmlite holds one lock around every call into LLVM: threads would take turns)."""
        global _compilations
        start, store = time.perf_counter(), functools.partial(_stored, llvm_program)
        with _FORKING:
            results = builders.built_in_processes(functools.partial(_built, llvm_program), jobs, min(
                len(jobs), libraries.threads()), store) if parallel else [_built(llvm_program, job) for job in jobs]
        wall = time.perf_counter() - start
        for job, result in zip(jobs, results if not parallel else ()):
            store(job, result)
        _compilations += len(results)
        parts = [sum(r[i] for r in results) for i in (2, 3, 4)]
        share = 1.0 if not parallel else wall / (sum(parts) or 1.0)  # builders' time as a share of the wall time
        for name, seconds in zip(("LLVM IR", "LLVM optimise", "machine code"), parts):
            self.seconds[name] += seconds * share
        per_process = {}
        for *_, (pid, cpu) in results:
            per_process[pid] = per_process.get(pid, 0.0) + cpu
        self.builder_cpu = [per_process.pop(os.getpid(), 0.0), *sorted(per_process.values(), reverse=True)] \
            if per_process else []
        return [(key, compiled) for key, compiled, *_ in results]

    @property
    def optimized_ir(self) -> str:
        return "\n".join(self.modules)

    def assembly(self) -> str:
        """The machine code of each module, as it was made (without LSR where its IR says so)."""
        def emitted(text):
            return target_machine().emit_assembly(_binding().parse_assembly(text))
        with _FORKING:
            return "\n".join(_with_lsr(not text.startswith(WITHOUT_LSR), functools.partial(emitted, text))
                             for text in self.modules)


def _built(llvm_program, job):
    """(cache key, (object code, optimised IR), seconds building the IR, optimising, making machine
    code, (process id, this thread's CPU seconds)) of `job`, (kernel symbols, module name, whether LLVM
    vectorises it, whether LSR runs): the module of those kernels of `llvm_program`, or, for symbols
    None, its runner.
    Never while this process forks compiling workers (the caller holds _FORKING): a worker forked while
    another thread is inside LLVM would inherit llvmlite's lock held, and wait on it forever."""
    symbols, name, vectorise, lsr = job
    start, cpu = time.perf_counter(), time.thread_time()
    text = llvm_program.runner if symbols is None else llvm_program.module(symbols, name)
    building = time.perf_counter() - start
    obj, optimised, optimising, emitting = _with_lsr(lsr, lambda: _translated(text, vectorise))
    optimised = optimised if lsr else WITHOUT_LSR + optimised
    key = cache.cache_key("runner" if symbols is None else "kernels", text, *("without LSR",) * (not lsr),
                          *host_description())
    return key, (obj, optimised), building, optimising, emitting, (os.getpid(), time.thread_time() - cpu)


def _with_lsr(lsr, make):
    """make() with LLVM's loop strength reduction on or off (`lsr`): a process-wide option of its
    code generator, not a function's, set back on after."""
    llvm = _binding()
    llvm.set_option("", f"-disable-lsr={str(not lsr).lower()}")
    try:
        return make()
    finally:
        llvm.set_option("", "-disable-lsr=false")


def _stored(llvm_program, job, result):
    """`job`'s module (`_built`'s `result`) written to the disk cache (a runner to the machine's
    too), and a reference to it under each of its kernels' keys (NativeModule looks them up)."""
    (symbols, *_), (key, compiled, *_) = job, result
    (machine if symbols is None else cache).store(key, *compiled)
    for symbol in symbols or ():
        cache.store(cache.cache_key("kernel", llvm_program.kernels[symbol][1].text, *host_description()), b"", key)


def _without_vectorisers(llvm_program, symbol) -> bool:
    """Whether kernel `symbol` of `llvm_program` has nothing for LLVM's vectorisers: codegen emits
    its vectors, or it has no loop (an optimiser's step count: else a module of its own at O3)."""
    return llvm_program.vectorised(symbol) or not llvm_program.kernels[symbol][0].extents


def _lsr_free(llvm_program, symbol) -> bool:
    """Whether kernel `symbol` of `llvm_program` runs as fast without loop strength reduction (shares.WITHOUT_LSR)."""
    return llvm_program.kernels[symbol][0].strategy.name.lower() in shares.WITHOUT_LSR


def _translated(text, vectorise=False):
    """(object code, optimised IR, seconds optimising, seconds making machine code) of module
    `text`, through the pipeline with the vectorisers where `vectorise`."""
    llvm = _binding()
    tm = target_machine()
    start = time.perf_counter()
    module = llvm.parse_assembly(text)
    module.verify()
    optimise(module, tm, vectorise)
    optimised = time.perf_counter()
    obj = tm.emit_object(module)
    return obj, str(module), optimised - start, time.perf_counter() - optimised


def optimise(module, tm, vectorise=True, timing=None):
    """Optimise llvmlite `module` for target machine `tm`: O3 with loop and SLP vectorisation where
    `vectorise`, else (code whose vectors are explicit) only the function simplification pipeline
    of speed level LANES_SPEED, between SIMPLIFY_FIRST and SIMPLIFY_LAST: the whole pipeline's
    interprocedural and late passes took a sixth of such modules' LLVM instructions, and the steps'
    kernels ran as fast and gave the same bits without them (docs/ARCHITECTURE.md). The unroller is
    off (module docstring). Where `timing` is a list, LLVM's pass timing report is appended to it."""
    llvm = _binding()
    options = llvm.create_pipeline_tuning_options(speed_level=3 if vectorise else LANES_SPEED)
    options.loop_vectorization = vectorise
    options.slp_vectorization = vectorise
    options.loop_unrolling = False
    builder = llvm.create_pass_builder(tm, options)
    if timing is not None:
        builder.start_pass_timing()
    if vectorise:
        builder.getModulePassManager().run(module, builder)
    else:
        _module_passes(llvm, SIMPLIFY_FIRST).run(module, builder)
        simplify = builder.getFunctionPassManager()
        for function in module.functions:
            if not function.is_declaration:
                simplify.run(function, builder)
        _module_passes(llvm, SIMPLIFY_LAST).run(module, builder)
    if timing is not None:
        timing.append(builder.finish_pass_timing())


def _module_passes(llvm, names):
    """A module pass manager of llvmlite's passes `names` (`add_<name>_pass`)."""
    passes = llvm.create_new_module_pass_manager()
    for name in names:
        getattr(passes, f"add_{name}_pass")()
    return passes


def _imports_object() -> bytes:
    """The object code of the imports object (shared.imports_module), compiled once per machine."""
    text = shared.imports_module(*host_target())
    key = cache.cache_key("imports", text, *host_description())
    found = machine.load(key)
    if found is None:
        found = _translated(text)[:2]
        machine.store(key, *found)
    return found[0]
