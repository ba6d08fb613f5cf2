"""The host executor of CUDA programs (NDLC_CUDA_EMULATE=1 or stress): the generated CUDA C built
by g++ under cuda_emulation.h, cuBLAS's gemms computed by numpy, one arena array laid out as the
GPU's (ALIGNMENT bytes between buffers)."""
import ctypes
import os
import threading

import numpy as np

from ..codegen.cuda_steps import GemmCall, Launch
from ..env import flag
from ..errors import NdlcError
from ..ir.types import numpy_dtype
from .cuda_build import compile_emulation

ALIGNMENT = 256  # bytes between buffers of the arena (cudaMalloc's own alignment)


def emulation_mode() -> str:
    """How device="cuda" runs, from NDLC_CUDA_EMULATE: "" on the GPU (unset or off), "plain" on the
    host emulation (on), "stress" on the hostile one (stress: see EmulatedExecutor)."""
    if os.environ.get("NDLC_CUDA_EMULATE", "").strip().lower() == "stress":
        return "stress"
    return "plain" if flag("NDLC_CUDA_EMULATE") else ""


def emulating() -> bool:
    """Whether device="cuda" runs on the host emulation (NDLC_CUDA_EMULATE=1 or stress)."""
    return bool(emulation_mode())


def nbytes(buffer):
    return int(np.prod(buffer.shape, dtype=np.int64)) * numpy_dtype(buffer.dtype).itemsize


class EmulatedExecutor:
    """The steps on the host: kernels under the CUDA emulation, gemms by numpy, one arena array.
    `library`: the emulation already built (for a source holding several programs). `stress`
    (default: NDLC_CUDA_EMULATE=stress) makes it hostile, to shake out what a GPU might do: the
    arena starts as 0xFF bytes (an uninitialised float reads as NaN), blocks and threads run in
    shuffled orders, float4 accesses are checked for alignment, and gemms alternate between
    float64 accumulation and a split-K sum of two halves (other roundings than numpy's)."""

    lock = threading.Lock()  # the emulation's block state is global: one launch at a time in the process

    def __init__(self, library=None, stress=None):
        self.library = library
        self.stress = emulation_mode() == "stress" if stress is None else stress
        self.gemms = 0

    def prepare(self, module, size):
        self.library = self.library or compile_emulation(module.source, stress=self.stress)
        self.library.ndlc_emulate_fault.restype = ctypes.c_char_p
        self.arena = np.full(size + ALIGNMENT, 0xFF if self.stress else 0, np.uint8)
        self.base = self.arena.ctypes.data + (-self.arena.ctypes.data % ALIGNMENT)
        self.start = self.base - self.arena.ctypes.data

    def _view(self, pointer, nbytes):
        offset = self.start + pointer - self.base
        return self.arena[offset:offset + nbytes]

    def upload(self, pointer, array):
        self._view(pointer, array.nbytes)[...] = array.reshape(-1).view(np.uint8)

    def download(self, out, pointer):
        out.reshape(-1).view(np.uint8)[...] = self._view(pointer, out.nbytes)

    def run(self, program, steps, graph=False):
        with self.lock:
            self._run(program, steps)

    def _run(self, program, steps):
        for step in steps:
            if isinstance(step, Launch):
                pointers = (ctypes.c_void_p * max(1, len(step.buffers)))(*[program.pointer(b) for b in step.buffers])
                self.library.ndlc_emulate_clear_fault()
                getattr(self.library, f"ndlc_emulate_{step.function}")(
                    ctypes.c_uint(step.blocks), ctypes.c_uint(step.threads), pointers)
                fault = self.library.ndlc_emulate_fault()
                if fault:
                    raise NdlcError(f"CUDA emulation: kernel {step.function} (of {step.kernel}): {fault.decode()}")
            elif isinstance(step, GemmCall):
                self._gemm(program, step)
            else:
                data = self._view(program.pointer(step.source), step.nbytes).copy()
                self._view(program.pointer(step.target), step.nbytes)[...] = data

    def _gemm(self, program, call):
        """cuBLAS's strided batched calls (GemmCall.runs) computed by numpy."""
        g = call.gemm
        dtype = numpy_dtype(g.dtype)
        whole = {name: self._view(program.pointer(name), nbytes(program.kernels.buffers[name])).view(dtype)
                 for name in (g.a.buffer, g.b.buffer, g.out)}

        def matrix(m, offset, rows, cols):
            item = dtype.itemsize
            strides = (item, m.ld * item) if m.transposed else (m.ld * item, item)
            return np.lib.stride_tricks.as_strided(whole[m.buffer][offset:], (rows, cols), strides)
        for a, b, out, stride_a, stride_b, stride_out, count in call.runs():
            for i in range(count):
                left = matrix(g.a, a + i * stride_a, g.m, g.k)
                right = matrix(g.b, b + i * stride_b, g.k, g.n)
                product = self._product(left, right).astype(dtype)
                start = out + i * stride_out
                whole[g.out][start:start + g.m * g.n] = product.reshape(-1)

    def _product(self, left, right):
        if not self.stress:
            return left @ right
        self.gemms += 1
        if self.gemms % 2:
            return left.astype(np.float64) @ right.astype(np.float64)
        half = left.shape[1] // 2
        return left[:, :half] @ right[:half] + left[:, half:] @ right[half:]
