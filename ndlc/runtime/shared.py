"""A program's native code as a shared library, so that a warm start loads it with ctypes.CDLL
and never imports llvmlite's binding (its import and LLVM's initialisation were ~30 ms of a
70 ms warm MLP start). When a program is stored in the program cache, its objects (compiled
position-independent) and an imports object are linked by the system's `ld` into one `.so`
(15-30 ms, while the compiling process runs its first step: program_cache.save), stored in the
disk cache under the hash of its bytes (runtime/cache.py), which the entry records; a load checks
that hash first. The compiling process runs the objects in MCJIT
(llvmlite is loaded there anyway), as does a warm start where there is no `ld` or the library does
not load (one gone or damaged is then linked again from the objects: repaired); NDLC_LOG=compile
says which loaded a program.

Generated code calls its imports (libraries.IMPORTED: CBLAS gemm, ndlc's team) by name and reads the
i32 TEAM. The imports object defines each imported function as a jump through its slot of the
table IMPORTS, which `load` fills with this process's addresses (libraries.imported), and defines
TEAM, which `load` binds to the others `libraries.set_team` writes. The library is linked
-Bsymbolic and loaded RTLD_LOCAL: its names bind to its own definitions and are seen by no other
library."""
import contextlib
import ctypes
import functools
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from ..errors import NdlcError
from ..ir.kernel import GEMMS, TEAM
from . import cache, libraries, machine

log = logging.getLogger("ndlc.native")
IMPORTS = "ndlc_imports"  # the table of imported functions' addresses that `load` fills


def imports_module(triple, data_layout) -> str:
    """The LLVM IR of the imports object: TEAM, the table IMPORTS and each of libraries.IMPORTED
    (declared as codegen/llvm_calls.py declares it) a tail call through its slot."""
    from llvmlite import ir
    from ..codegen.llvm_calls import I32, PTR, declare_gemm, declare_team, declare_team_call
    module = ir.Module("ndlc_imports")
    module.triple, module.data_layout = triple, data_layout
    functions = [declare_gemm(module, dtype) for dtype in GEMMS] + \
                [declare_team_call(module, name) for name in libraries.TEAM_SYMBOLS]
    assert [f.name for f in functions] == list(libraries.IMPORTED), "the table's order is IMPORTED's"
    table = ir.GlobalVariable(module, ir.ArrayType(PTR, len(functions)), IMPORTS)
    table.initializer = ir.Constant(table.value_type, None)
    declare_team(module).initializer = ir.Constant(I32, 1)
    for slot, function in enumerate(functions):
        b = ir.IRBuilder(function.append_basic_block("entry"))
        target = b.load(b.gep(table, [ir.Constant(I32, 0), ir.Constant(I32, slot)]), typ=function.type)
        b.call(target, function.args, tail="musttail")  # a jump: the arguments stay where they are
        b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=None)
def linker():
    """The path of the system's `ld`, or None (logged once: native code then loads with MCJIT);
    on Linux only (ELF objects, GNU ld's options)."""
    found = shutil.which("ld") if sys.platform.startswith("linux") else None
    if found is None:
        log.info("no linker (GNU ld on Linux) found: compiled programs are loaded with llvmlite's MCJIT")
    return found


def link(objects, root=None) -> str | None:
    """Link `objects` (ELF object code, position-independent) into a shared library stored in the
    disk cache (in folder `root`; default: cache.cache_dir()); the hash that names it, or None where
    there is no linker or linking failed (logged)."""
    if linker() is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ndlc-link-") as folder:
        paths = [os.path.join(folder, f"{i}.o") for i in range(len(objects))]
        try:
            for path, obj in zip(paths, objects):
                with open(path, "wb") as f:
                    f.write(obj)
        except OSError as e:  # a full disk: the linker's input cannot be written
            log.warning("cannot write the objects to link in %s (%s); loading with MCJIT", folder, e)
            return None
        output = os.path.join(folder, "program.so")
        command = [linker(), "-shared", "-Bsymbolic", "-z", "noexecstack", "-o", output, *paths]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("cannot run the linker %s (%s); loading with MCJIT", linker(), e)
            return None
        if done.returncode:
            log.warning("linking a shared library failed (%s exit code %d: %s); loading with MCJIT", linker(),
                        done.returncode, done.stderr.strip()[-2000:])
            return None
        with open(output, "rb") as f:
            return cache.store_library(f.read(), root)


def load(digest):
    """The shared library named `digest` loaded, its imports table filled and its TEAM bound; None
    where it is gone, altered or does not load (logged: the caller falls back to MCJIT). Loaded
    again, a library is the same one (the dynamic loader keeps one copy of a path)."""
    path = cache.library_path(digest)
    if path is None:
        return None
    try:
        library = ctypes.CDLL(path)  # RTLD_NOW | RTLD_LOCAL
        table = (ctypes.c_void_p * len(libraries.IMPORTED)).in_dll(library, IMPORTS)
        team = ctypes.c_int32.in_dll(library, TEAM)
    except (OSError, ValueError) as e:
        log.warning("cannot load the shared library %s (%s); loading with MCJIT", path, e)
        return None
    addresses = libraries.imported()
    for slot, name in enumerate(libraries.IMPORTED):
        table[slot] = addresses.get(name)
    libraries.bind_team(team)
    return library


def address(library, symbol) -> int:
    """The address of function `symbol` in the loaded `library`."""
    try:
        return ctypes.cast(library[symbol], ctypes.c_void_p).value
    except AttributeError:
        raise NdlcError(f"native code has no function {symbol!r}") from None


def machine_library(kind, text, what, lock=contextlib.nullcontext()):
    """Native code of LLVM IR `text` (it imports nothing), kept for the process's life: its shared
    library, compiled and linked once per machine (runtime/machine.py; `kind` names it in the key)
    and loaded with ctypes, or an MCJIT engine of it where there is no linker. `what` names it in
    errors; `lock` is held around every use of LLVM. Read its symbols with `symbol`."""
    key = cache.cache_key(kind, text, platform.machine(), machine.versions())
    found = machine.load(key, ".lib")  # the name of its shared library
    path = found and machine.library_path(found[1])
    if path is None:
        import llvmlite.binding as llvm
        with lock:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            tm = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(reloc="pic",
                                                                                          codemodel="small")
            module = llvm.parse_assembly(text)
            module.verify()
            obj = tm.emit_object(module)
        digest = link([obj])
        if digest is None:
            with lock:
                engine = llvm.create_mcjit_compiler(module, tm)
                engine.finalize_object()
            return engine
        machine.keep_library(digest)
        machine.store(key, b"", digest, ".lib")
        path = cache.library_path(digest)
    try:
        return ctypes.CDLL(path)
    except OSError as e:
        raise NdlcError(f"cannot load {what} from {path} ({e})") from None


def symbol(native, name, function=True) -> int:
    """The address of function (else global) `name` in `machine_library`'s answer `native`; 0
    where an engine lacks it."""
    if isinstance(native, ctypes.CDLL):
        return address(native, name) if function else ctypes.addressof(ctypes.c_int64.in_dll(native, name))
    return native.get_function_address(name) if function else native.get_global_value_address(name)
