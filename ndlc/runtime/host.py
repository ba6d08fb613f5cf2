"""The host description that cached native code is keyed on (native.host_description: LLVM's
triple, CPU name and features), found without llvmlite's binding: stored in the disk cache and
the machine's folder (runtime/machine.py) the first time LLVM is asked, under a cheap
fingerprint of the machine (/proc/cpuinfo's first processor: vendor, family, model, name,
stepping and flags, which are what LLVM's host detection reads from cpuid) and of everything
else the description holds (versions, the code generator's fingerprint). A start, warm or cold,
reads that file instead of importing llvmlite.binding and initialising LLVM (~30 ms). Where
there is no /proc/cpuinfo, LLVM is asked every time."""
import json
import logging
import platform

from . import cache
from . import machine as machine_cache

log = logging.getLogger("ndlc.cache")
SUFFIX = ".host"
CPUINFO = "/proc/cpuinfo"
_FIELDS = ("vendor_id", "cpu family", "model", "model name", "stepping", "flags", "Features", "CPU implementer",
           "CPU architecture", "CPU variant", "CPU part")  # x86's fields, then ARM's


def description(ask_llvm, *context) -> tuple:
    """The host description stored under this machine's fingerprint with `context` (strings the
    description holds besides the CPU); else `ask_llvm()`'s, stored there."""
    machine = fingerprint()
    if machine is None:
        return ask_llvm()
    key = cache.cache_key("host", machine, *context)
    found = machine_cache.load(key, SUFFIX)
    if found is not None:
        try:
            stored = json.loads(found[1])
            if isinstance(stored, list) and all(isinstance(part, str) for part in stored):
                return tuple(stored)
            raise ValueError("not a list of strings")
        except ValueError as e:
            log.warning("ignoring the host description cached under %s: %s; asking LLVM", key[:16], e)
    answer = ask_llvm()
    machine_cache.store(key, b"", json.dumps(list(answer)), SUFFIX)
    return answer


def fingerprint() -> str | None:
    """The machine's architecture and its first processor's identifying /proc/cpuinfo lines, or
    None where that file cannot be read."""
    lines = []
    try:
        with open(CPUINFO) as f:
            for line in f:
                if not line.strip():
                    break
                name = line.partition(":")[0].strip()
                if name in _FIELDS:
                    lines.append(" ".join(line.split()))
    except OSError:
        return None
    return "\n".join([platform.machine(), *lines]) if lines else None
