"""Building generated CUDA C, both cached on disk: nvcc to a cubin for the GPU, g++ to a shared
library for the host emulation of CUDA's execution model (cuda_emulation.h)."""
import ctypes
import os
import shutil
import subprocess
import tempfile

from ..env import flag
from ..errors import NdlcError
from ..version import __version__
from . import cache

_EMULATION_HEADER = os.path.join(os.path.dirname(__file__), "cuda_emulation.h")


class CudaUnavailable(NdlcError):
    """device="cuda" cannot run here: no nvcc, no pycuda, no GPU or no cuBLAS (the message says which)."""


def nvcc() -> str:
    """The path of nvcc (PATH, then CUDA_HOME or /usr/local/cuda), or CudaUnavailable."""
    found = shutil.which("nvcc")
    toolkit = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    found = found or (toolkit if os.path.exists(toolkit) else None)
    if found is None:
        raise CudaUnavailable("the CUDA backend needs nvcc (the CUDA toolkit): not on PATH nor in "
                              "$CUDA_HOME/bin or /usr/local/cuda/bin")
    return found


def compile_cuda(source: str, arch: str, flags=()) -> bytes:
    """The cubin of `source` for `arch` (e.g. 'sm_90'), from the on-disk cache or nvcc. Multiplies
    and adds stay separate operations (--fmad=false), so the GPU rounds as the CPU backend and the
    emulation do; NDLC_CUDA_FMA=1 lets nvcc fuse them (faster, results differ in the last bits)."""
    compiler = nvcc()
    flags = (f"--fmad={'true' if flag('NDLC_CUDA_FMA') else 'false'}", *flags)
    key = cache.cache_key("cuda", __version__, arch, " ".join(flags), _tool_version(compiler), source)
    hit = cache.load(key)
    if hit is not None:
        return hit[0]
    with tempfile.TemporaryDirectory(prefix="ndlc-nvcc-") as work:
        src, out = os.path.join(work, "program.cu"), os.path.join(work, "program.cubin")
        with open(src, "w") as f:
            f.write(source)
        _run([compiler, f"-arch={arch}", "-cubin", "-O3", *flags, "-o", out, src], "nvcc")
        with open(out, "rb") as f:
            cubin = f.read()
    cache.store(key, cubin, source)
    return cubin


def compile_emulation(source: str, stress=False) -> ctypes.CDLL:
    """`source` built for the host emulation (g++ -std=c++20), from the on-disk cache or g++;
    `stress`: with NDLC_STRESS (shuffled block and thread order, float4 alignment checks)."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise CudaUnavailable("the CUDA host emulation needs a C++20 compiler (g++)")
    with open(_EMULATION_HEADER) as f:
        header = f.read()
    key = cache.cache_key("cuda-emulation", __version__, _tool_version(compiler), header, source, str(stress))
    hit = cache.load(key)
    work = tempfile.mkdtemp(prefix="ndlc-emulation-")
    library = os.path.join(work, "program.so")
    if hit is None:
        src = os.path.join(work, "program.cu")
        with open(src, "w") as f:
            f.write(source)
        _run([compiler, "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-DNDLC_EMULATE", "-ffp-contract=off",
              *(["-DNDLC_STRESS"] if stress else []), "-include", _EMULATION_HEADER, "-x", "c++", src, "-o", library], "g++ (CUDA emulation)")
        with open(library, "rb") as f:
            cache.store(key, f.read(), source)
    else:
        with open(library, "wb") as f:
            f.write(hit[0])
    try:
        return ctypes.CDLL(library)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(command, what):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise NdlcError(f"{what} failed on the generated CUDA C (exit {result.returncode}):\n"
                        f"{(result.stderr or result.stdout).strip()[-4000:]}")
    return result


def _tool_version(path):
    return subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip()
