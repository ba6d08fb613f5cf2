"""ndlc's on/off environment variables (NDLC_VERIFY, NDLC_PROFILE, NDLC_CHECK, NDLC_BLAS), read
one way: unset or empty is the default; 0, false, no, off are off; 1, true, yes, on are on. Any
other value is refused with an error naming the variable instead of being guessed at. An NDLC_*
variable that is none of KNOWN (a misspelling) is warned about once, with the closest name.
The thread budget, NDLC_THREADS, defaults to the cores this process may run on (`cores`); NDLC_TEAM
says how much of it a program uses (`team_policy`); register tiles fill the host's `vector_registers`."""
import difflib
import functools
import logging
import math
import os

from .errors import NdlcError

# every variable ndlc reads: add new ones here
KNOWN = ("NDLC_BLAS", "NDLC_CACHE_DIR", "NDLC_CHECK", "NDLC_CUDA_DEVICE", "NDLC_CUDA_EMULATE", "NDLC_CUDA_FMA",
         "NDLC_CUDA_GRAPHS", "NDLC_DATA", "NDLC_DEBUG", "NDLC_DUMP", "NDLC_DUMP_DIR", "NDLC_LOG",
         "NDLC_PROFILE", "NDLC_PROGRAM_CACHE", "NDLC_TEAM", "NDLC_TF32", "NDLC_THREADS", "NDLC_VERIFY")
OFF = ("0", "false", "no", "off")
TEAM_POLICIES = ("adaptive", "budget")
ON = ("1", "true", "yes", "on")


class SettingError(NdlcError, ValueError):
    """An NDLC_* environment variable holds a value ndlc does not understand."""


class ThreadsError(SettingError):
    """NDLC_THREADS is not a positive integer."""


def thread_budget() -> int:
    """Threads ndlc's work may use, its own loops and BLAS together: NDLC_THREADS, else `cores()`."""
    text = os.environ.get("NDLC_THREADS", "").strip()
    if not text:
        return cores()
    if not text.isdigit() or int(text) < 1:
        raise ThreadsError(f"NDLC_THREADS must be a positive integer, not {text!r}")
    return int(text)


def cuda_device() -> int:
    """NDLC_CUDA_DEVICE: the index of the GPU that device='cuda' runs on (default 0)."""
    text = os.environ.get("NDLC_CUDA_DEVICE", "").strip() or "0"
    if not text.isdigit():
        raise SettingError(f"NDLC_CUDA_DEVICE must be a GPU's index (0, 1, ...), not {text!r}")
    return int(text)


def team_policy() -> str:
    """NDLC_TEAM: 'adaptive' (the default: each program runs on the team of threads, within the
    budget, that its timed calls found fastest) or 'budget' (always the whole budget)."""
    text = os.environ.get("NDLC_TEAM", "").strip().lower() or "adaptive"
    if text not in TEAM_POLICIES:
        raise SettingError(f"NDLC_TEAM must be one of {', '.join(TEAM_POLICIES)}, not {text!r}")
    return text


def cores(root="/") -> int:
    """The cores this process may run on: its affinity mask (taskset, cpusets), capped by its
    cgroup's CPU quota (docker --cpus, Kubernetes limits) rounded up; not the machine's count,
    which over-subscribes a container. `root`: where /proc and /sys are (tests pass a fake one)."""
    mask = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota(root)
    return max(1, min(mask, math.ceil(quota))) if quota else mask


@functools.lru_cache(maxsize=None)
def vector_registers(root="/") -> int:
    """The vector registers the host's code may use: 32 where the CPU has AVX-512's 256-bit
    encodings (avx512vl: ymm16-31; ndlc's vectors stay 256 bits, runtime/native.py VECTOR_POLICY),
    else AVX2's 16 (ir/tiles.py sizes register tiles by it). `root`: as for `cores`."""
    try:
        with open(os.path.join(root, "proc", "cpuinfo")) as f:
            flags = next((line.partition(":")[2].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return 32 if "avx512vl" in flags else 16


def _cgroup_quota(root):
    """The CPU quota (cores, possibly fractional) of this process's cgroup and its ancestors, the
    smallest; None where none is set or the files cannot be read (not Linux)."""
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            entries = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
    except OSError:
        return None
    quotas = []
    for _, controllers, path in entries:
        if controllers == "":  # cgroup v2: cpu.max holds "quota period" or "max period"
            quotas += [_ratio(folder, "cpu.max") for folder in _folders(root, "sys/fs/cgroup", path)]
        elif "cpu" in controllers.split(","):  # v1: cpu.cfs_quota_us (-1: none) / cpu.cfs_period_us
            mount = os.path.join("sys/fs/cgroup", controllers)
            quotas += [_ratio(folder, "cpu.cfs_quota_us", "cpu.cfs_period_us")
                       for folder in _folders(root, mount, path)]
    quotas = [q for q in quotas if q]
    return min(quotas) if quotas else None


def _folders(root, mount, path):
    """The cgroup folder of `path` under `mount` and each of its ancestors up to the mount itself
    (inside a container the mount is the container's own cgroup: its path does not resolve)."""
    parts = [p for p in path.split("/") if p]
    return [os.path.join(root, mount, *parts[:depth]) for depth in range(len(parts), -1, -1)]


def _ratio(folder, name, period_name=None):
    """quota / period read from `folder` (one file "quota period", or two); None where unlimited."""
    try:
        with open(os.path.join(folder, name)) as f:
            fields = f.read().split()
        if period_name:
            with open(os.path.join(folder, period_name)) as f:
                fields.append(f.read().strip())
        quota, period = fields[:2]
        return None if quota in ("max", "-1") else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def flag(name, default=False) -> bool:
    """Whether the on/off variable `name` is on (`default` when unset or empty)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if text.lower() in OFF + ON:
        return text.lower() in ON
    raise SettingError(f"{name}={text!r} is neither on ({', '.join(ON)}) nor off ({', '.join(OFF)})")


@functools.lru_cache(maxsize=None)
def warn_unknown_names():
    """Warn (once per process) about each NDLC_* variable set that ndlc does not read."""
    for name in sorted(n for n in os.environ if n.startswith("NDLC_") and n not in KNOWN):
        close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else f"; it reads {', '.join(KNOWN)}"
        logging.getLogger("ndlc").warning("%s is set, but ndlc reads no such variable%s", name, hint)
