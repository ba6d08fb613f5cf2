"""A compiled program's native call as a builtin function Python calls without ctypes: ctypes
converts the arguments, builds a call frame with libffi and releases the GIL in ~0.25 us of a tiny
call; here the call is a METH_NOARGS PyCFunction whose C function (`trampoline_module`, compiled once
per machine like the team's library, runtime/pool.py) reads what it calls from the function's `self`.

That `self` is a ctypes structure, `_Block`: the runner's address and its three arguments, the
addresses of the program's and the process's counts of native calls, which it adds one to once it
holds the GIL again (as Python code would count them), the addresses of PyEval_SaveThread,
PyEval_RestoreThread and Py_IncRef and None's, and the PyMethodDef of the function, which holds
`self` and so keeps its own definition alive. The trampoline finds the block through the
structure's data pointer, as far into every ctypes object (`data_offset`: read off a structure,
not assumed), releases the GIL around the runner as ctypes does (other Python threads run
meanwhile) and returns a new reference to None (not immortal before Python 3.12: Py_IncRef counts
it). It calls nothing by name, so its code links and loads in any process; where it cannot be made
(no ctypes.pythonapi, no data pointer found, no LLVM to compile it), `entry` answers None, logged
once with the reason, and the program calls its runner through ctypes."""
import ctypes
import functools
import logging

from ..errors import NdlcError
from . import shared

log = logging.getLogger("ndlc.native")
SYMBOL = "ndlc_trampoline"
METH_NOARGS = 0x0004
NAME = b"native_call"
WORDS = ("runner", "pointers", "plan", "functions", "count", "total", "save", "restore", "incref", "none")  # the
# block's words: the runner and its arguments, the counts a call adds one to, the Python API's addresses

_TEMPLATE = """define ptr @{symbol}(ptr %self, ptr %unused) {{
  %at = getelementptr inbounds i8, ptr %self, i64 {offset}
  %block = load ptr, ptr %at, align 8
{loads}  %thread = call ptr %save()
  call void %runner(ptr %pointers, ptr %plan, ptr %functions)
  call void %restore(ptr %thread)
{counts}  call void %incref(ptr %none)
  ret ptr %none
}}
"""


class _Block(ctypes.Structure):
    """What one program's builtin calls (WORDS, addresses), then its PyMethodDef."""
    _fields_ = [(word, ctypes.c_void_p) for word in WORDS] + [
        ("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p), ("ml_flags", ctypes.c_int),
        ("ml_doc", ctypes.c_char_p)]


def trampoline_module(offset: int) -> str:
    """The LLVM IR of the trampoline for ctypes objects whose data pointer is `offset` bytes in."""
    loads = "".join(f"  %{word}.at = getelementptr inbounds ptr, ptr %block, i64 {i}\n"
                    f"  %{word} = load ptr, ptr %{word}.at, align 8\n" for i, word in enumerate(WORDS))
    counts = "".join(f"  %{word}.was = load i64, ptr %{word}, align 8\n  %{word}.now = add i64 %{word}.was, 1\n"
                     f"  store i64 %{word}.now, ptr %{word}, align 8\n" for word in ("count", "total"))
    return _TEMPLATE.format(symbol=SYMBOL, offset=offset, loads=loads, counts=counts)


def entry(runner: int, arguments, counters, owner, forking):
    """A builtin function of no arguments that runs runner(*arguments) (three addresses) with the
    GIL released, then adds one to each i64 at the addresses `counters` (the program's and the
    process's native calls: no Python code counts them), holding `owner` (what keeps the runner's
    code and tables alive); None where the trampoline cannot be made in this process (logged once).
    `forking`: the lock held around every use of LLVM (native._FORKING: a builder forked meanwhile
    would inherit llvmlite's lock held)."""
    made = _made(forking)
    if made is None:
        return None
    address, python, holder = made
    block = _Block(runner, *arguments, *counters, *python, NAME, address, METH_NOARGS, None)
    block.owners = (owner, holder)
    return ctypes.pythonapi.PyCFunction_NewEx(ctypes.addressof(block) + _Block.ml_name.offset, block, None)


def used(function) -> bool:
    """Whether `function` (a program's native_call) is a trampoline's builtin, not a ctypes call."""
    return isinstance(getattr(function, "__self__", None), _Block)


@functools.lru_cache(maxsize=None)
def _made(forking):
    """(the trampoline's address, the Python API's addresses WORDS ends with, the library or engine
    holding the code), or None (logged) where it cannot be made here."""
    try:
        api = ctypes.pythonapi
        api.PyCFunction_NewEx.restype = ctypes.py_object
        api.PyCFunction_NewEx.argtypes = [ctypes.c_void_p, ctypes.py_object, ctypes.py_object]
        python = [ctypes.cast(getattr(api, name), ctypes.c_void_p).value
                  for name in ("PyEval_SaveThread", "PyEval_RestoreThread", "Py_IncRef")] + [id(None)]
    except (AttributeError, OSError) as e:  # no CPython API in this process
        log.info("no native call trampoline (%s): programs are called through ctypes", e)
        return None
    offset = data_offset()
    if offset is None:
        log.info("no native call trampoline (a ctypes object's data pointer was not found in it): programs "
                 "are called through ctypes")
        return None
    try:
        address, holder = _loaded(trampoline_module(offset), forking)
    except Exception as e:  # noqa: BLE001 (no LLVM, or its code does not load: ctypes still works)
        log.info("no native call trampoline (%s: %s): programs are called through ctypes", type(e).__name__, e)
        return None
    return address, python, holder


def data_offset():
    """How many bytes into a ctypes object its data pointer is (16 in CPython's builds without
    Py_TRACE_REFS): the word of a _Block that holds its own data's address, found within the
    object's fixed part; None where none does."""
    block = _Block()
    words = (ctypes.c_void_p * (type(block).__basicsize__ // 8)).from_address(id(block))
    found = [i for i in range(2, len(words)) if words[i] == ctypes.addressof(block)]
    return 8 * found[0] if found else None


def _loaded(text, forking):
    """(the trampoline's address, the library or engine holding it): shared.machine_library's."""
    native = shared.machine_library("trampoline", text, "ndlc's native call trampoline", forking)
    address = shared.symbol(native, SYMBOL)
    if not address:
        raise NdlcError(f"MCJIT has no function {SYMBOL}")
    return address, native
