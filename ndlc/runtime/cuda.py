"""Running a CUDA program: one device arena per program, code compiled by nvcc (cached on disk),
the steps (kernel launches, cuBLAS gemms, state copies) in schedule order.

Two executors run the same steps: `GpuExecutor` on an NVIDIA GPU through pycuda (a context on the
device's primary context, the arena from one cuMemAlloc, the module loaded from a cubin built
for the device's architecture, gemms through cuBLAS called with ctypes, and the whole step
captured once as a CUDA graph so that a step costs one launch whatever its kernel count), and
`EmulatedExecutor` on the host: the same CUDA C compiled by g++ under runtime/cuda_emulation.h,
gemms by numpy (NDLC_CUDA_EMULATE=1 selects it for device="cuda": the tests' numerics, and a
way to try the CUDA path on a machine without a GPU).

State stays on the device: `CudaProgram.step` takes only the batch, leaves new state values in
the state buffers and returns the other outputs; `upload`/`download` move a buffer on demand.
TF32: cuBLAS runs float32 gemms in full float32 unless NDLC_TF32=1.
"""
import contextlib
import ctypes
import ctypes.util
import gc
import glob
import logging
import os
import shutil
import sys
import threading
import weakref

import numpy as np

from ..env import cuda_device, flag
from ..codegen.cuda_steps import Copy, GemmCall, Launch
from ..errors import NdlcError, ShapeError
from ..ir.types import TensorType, numpy_dtype
from .cuda_build import CudaUnavailable, compile_cuda, nvcc
from .libraries import check_gemms
from .cuda_emulation import ALIGNMENT, EmulatedExecutor, emulating, nbytes
from .program import stage_ir

log = logging.getLogger("ndlc.cuda")


def require():
    """Raises CudaUnavailable naming what device='cuda' lacks here (the emulation: g++; a GPU:
    nvcc, pycuda, a GPU the driver sees, cuBLAS)."""
    if emulating():
        if shutil.which("g++") is None:
            raise CudaUnavailable("NDLC_CUDA_EMULATE=1 needs g++ (C++20) to build the host emulation")
        return
    nvcc()
    GpuDevice.shared()


class CudaProgram:
    """A program on a CUDA executor: `run(*arrays)` like the CPU Program (inputs in, outputs out),
    or `step(*batch)` with the state resident in device memory (see the module docstring)."""

    def __init__(self, kernels, module, stages, source=None, executor=None):
        check_gemms(kernels)  # a gemm that disagrees with its buffers is an error before any launch
        self.kernels, self.module, self.stages, self.source = kernels, module, stages, source
        self.executor = executor or default_executor()
        self.lock = threading.Lock()
        self.offsets, size = {}, 0
        for name, buffer in kernels.buffers.items():
            if name not in kernels.in_place:
                self.offsets[name] = size
                size += -(-nbytes(buffer) // ALIGNMENT) * ALIGNMENT
        for out, state in kernels.in_place.items():  # written where its state lives
            self.offsets[out] = self.offsets[state]
        self.input_types = {n: TensorType(kernels.buffers[n].shape, kernels.buffers[n].dtype) for n in kernels.inputs}
        self.executor.prepare(module, max(size, ALIGNMENT))
        for name, value in kernels.constants.items():
            buffer = kernels.buffers[name]
            array = np.empty(buffer.shape, numpy_dtype(buffer.dtype))
            array[...] = value
            self.upload(name, array)
        split = len(kernels.outputs) - kernels.updates
        self.state_copies = [Copy(out, state, nbytes(kernels.buffers[state]))
                             for out, state in zip(kernels.outputs[split:], kernels.updated)
                             if kernels.in_place.get(out) != state]
        self.calls = 0

    def pointer(self, name) -> int:
        return self.executor.base + self.offsets[name]

    def upload(self, name, array):
        """Host array -> the device buffer `name` (type-checked)."""
        expected = self.input_types.get(name) or TensorType(self.kernels.buffers[name].shape, self.kernels.buffers[name].dtype)
        array = np.asarray(array, dtype=expected.np_dtype, order="C")  # (ascontiguousarray makes 0-d 1-d)
        if array.shape != expected.shape:
            raise ShapeError(f"@{self.kernels.name}: {name} has shape {list(array.shape)}, expected {expected}")
        self.executor.upload(self.pointer(name), array)

    def download(self, name, out=None) -> np.ndarray:
        """The device buffer `name` as a host array (into `out` where given)."""
        buffer = self.kernels.buffers[name]
        out = np.empty(buffer.shape, numpy_dtype(buffer.dtype)) if out is None else out
        self.executor.download(out, self.pointer(name))
        return out

    def run(self, *arrays, update_state=False):
        """Every input uploaded, the program run, every output downloaded (the new state values too:
        with `update_state` they are also left in the state buffers)."""
        with self.lock:
            if len(arrays) != len(self.kernels.inputs):
                raise ShapeError(f"@{self.kernels.name} takes {len(self.kernels.inputs)} inputs, got {len(arrays)}")
            for i, (name, array) in enumerate(zip(self.kernels.inputs, arrays)):
                self._check_input(i, name, array)
                self.upload(name, array)
            self.executor.run(self, self.module.steps + (self.state_copies if update_state else []))
            self.calls += 1
            return [self.download(name) for name in self.kernels.outputs]

    def step(self, uploads: dict):
        """One run against the resident state: the inputs in `uploads` (name -> array) copied in
        first, the others as the device holds them; returns the outputs that are not new state
        values (those stay in the state buffers)."""
        with self.lock:
            for name, array in uploads.items():
                self._check_input(self.kernels.inputs.index(name), name, array)
                self.upload(name, array)
            self.executor.run(self, self.module.steps + self.state_copies, graph=True)
            self.calls += 1
            split = len(self.kernels.outputs) - self.kernels.updates
            return [self.download(name) for name in self.kernels.outputs[:split]]

    def _check_input(self, i, name, array):
        expected, array = self.input_types[name], np.asarray(array)
        if array.shape != expected.shape or array.dtype != expected.np_dtype:
            raise ShapeError(f"@{self.kernels.name} input {i} ({name}) has type "
                             f"{array.dtype.name}{list(array.shape)}, expected {expected}")

    def check(self, *arrays):
        raise NdlcError("check mode compares kernels on the CPU backend: compile with device='cpu' to use it")

    def profile(self, top=None):
        raise NdlcError("per-kernel profiles are measured on the CPU backend; on the GPU use Nsight "
                        "Compute (ncu) on the program's kernels")

    def ir(self, stage: str, format="text") -> str:
        """A stage's text ('cuda' is the CUDA C), or with format="dot" its picture (runtime/program.py)."""
        return stage_ir(self.stages, stage, format, self.source, self.kernels)


class GpuDevice:
    """The process's GPU: pycuda's driver on the device's primary context, one stream, one cuBLAS
    handle (NDLC_CUDA_DEVICE picks the device, default 0)."""
    _shared = None

    def __init__(self):
        index = cuda_device()  # a bad setting is named before any driver call
        try:
            import pycuda.driver as driver
        except ImportError as e:
            raise CudaUnavailable(f"device='cuda' needs pycuda (pip install 'ndlc[cuda]'; docs/GPU.md): {e}") from None
        try:
            driver.init()
            count = driver.Device.count()
            if count == 0:
                raise CudaUnavailable("device='cuda': the CUDA driver sees no GPU")
            if index >= count:
                raise CudaUnavailable(f"device='cuda': NDLC_CUDA_DEVICE={index}, but the CUDA driver sees "
                                      f"{count} GPU{'s' if count > 1 else ''} (0-{count - 1})")
            self.device = driver.Device(index)
            self.context = self.device.retain_primary_context()
        except driver.Error as e:
            raise CudaUnavailable(f"device='cuda': the CUDA driver cannot start ({e})") from None
        self.driver = driver
        major, minor = self.device.compute_capability()
        self.arch = f"sm_{major}{minor}"
        self.multiprocessors = self.device.get_attribute(driver.device_attribute.MULTIPROCESSOR_COUNT)
        with self.current():
            self.stream = driver.Stream(flags=1)  # CU_STREAM_NON_BLOCKING: no implicit sync with other threads' work
            self.cublas = Cublas(self.stream.handle)

    @classmethod
    def shared(cls):
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    @contextlib.contextmanager
    def current(self):
        """The device's context current on this thread meanwhile."""
        self.context.push()
        try:
            yield
        finally:
            self.driver.Context.pop()

    def describe(self) -> str:
        return (f"{self.device.name()} ({self.arch}, {self.multiprocessors} SMs, CUDA driver "
                f"{self.driver.get_driver_version()})")


class GpuExecutor:
    """One program's steps on the GPU: its module, its arena, its captured graphs."""

    def __init__(self):
        self.gpu = GpuDevice.shared()
        self.graphs = {}

    def prepare(self, module, size):
        gpu = self.gpu
        with gpu.current():
            self.module = gpu.driver.module_from_buffer(compile_cuda(module.source, gpu.arch))
            self.functions = {}
            for step in module.steps:
                if isinstance(step, Launch):
                    function = self.module.get_function(step.function)
                    function.prepare("P" * len(step.buffers))
                    self.functions[step.function] = function
            self.allocation = gpu.driver.mem_alloc(size)
            self.base = int(self.allocation)

    def upload(self, pointer, array):
        """A blocking copy of a (pageable) host array, after the stream's earlier work and complete
        before its next: the stream is non-blocking, so it does not order itself against the copy."""
        with self.gpu.current():
            self.gpu.stream.synchronize()
            self.gpu.driver.memcpy_htod(pointer, array)
            self.gpu.driver.Context.synchronize()

    def download(self, out, pointer):
        with self.gpu.current():
            self.gpu.stream.synchronize()
            self.gpu.driver.memcpy_dtoh(out, pointer)

    def run(self, program, steps, graph=False):
        """The steps on the stream; with `graph`, the first run launches them one by one (cuBLAS
        allocates its workspace then, which a capture may not), the second captures them as a
        CUDA graph, and every run from then on replays it. A capture that fails leaves None: from
        then on this program's steps launch one by one."""
        with self.gpu.current():
            key = len(steps)
            if graph and flag("NDLC_CUDA_GRAPHS", default=True) and key in self.graphs:
                if self.graphs[key] == "warm":
                    self.graphs[key] = None  # until the capture succeeds: a failure never retries
                    self.graphs[key] = CudaGraph.capture(self.gpu.stream, lambda: self._launch(program, steps))
                if self.graphs[key] is not None:
                    self.graphs[key].launch(self.gpu.stream)
                    return
            elif graph:
                self.graphs[key] = "warm"
            self._launch(program, steps)

    def _launch(self, program, steps):
        gpu = self.gpu
        for step in steps:
            if isinstance(step, Launch):
                pointers = [np.uintp(program.pointer(b)) for b in step.buffers]
                self.functions[step.function].prepared_async_call((step.blocks, 1), (step.threads, 1, 1),
                                                                  gpu.stream, *pointers)
            elif isinstance(step, GemmCall):
                gpu.cublas.gemm(program, step)
            else:
                gpu.driver.memcpy_dtod_async(program.pointer(step.target), program.pointer(step.source),
                                             step.nbytes, gpu.stream)


class Cublas:
    """cuBLAS's gemms through ctypes: row-major C = A @ B as column-major C^T = B^T A^T, a strided
    batched call per run of evenly spaced batch matrices (GemmCall.runs): one call per kernel."""
    OP_N, OP_T = 0, 1
    DEFAULT_MATH, TF32_MATH = 0, 3

    def __init__(self, stream_handle):
        self.lib = _load_cublas()
        self.handle = ctypes.c_void_p()
        self.mode = None
        self.calls = 0  # cuBLAS calls made (the tests count them)
        self._check(self.lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self._check(self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream_handle)), "cublasSetStream")

    def _check(self, status, what):
        if status != 0:
            raise NdlcError(f"cuBLAS {what} failed with status {status}")

    def _math_mode(self):
        """TF32 (NDLC_TF32=1) or full float32, read at each call so a changed setting takes effect."""
        mode = self.TF32_MATH if flag("NDLC_TF32") else self.DEFAULT_MATH
        if mode != self.mode:
            self._check(self.lib.cublasSetMathMode(self.handle, mode), "cublasSetMathMode")
            self.mode = mode

    def gemm(self, program, call):
        g = call.gemm
        self._math_mode()
        scalar, item = (ctypes.c_float, 4) if g.dtype == "f32" else (ctypes.c_double, 8)
        function = self.lib.cublasSgemmStridedBatched if g.dtype == "f32" else self.lib.cublasDgemmStridedBatched
        alpha, beta = scalar(1.0), scalar(0.0)
        for a, b, out, stride_a, stride_b, stride_out, count in call.runs():
            status = function(self.handle, self.OP_T if g.b.transposed else self.OP_N,
                              self.OP_T if g.a.transposed else self.OP_N, g.n, g.m, g.k, ctypes.byref(alpha),
                              ctypes.c_void_p(program.pointer(g.b.buffer) + b * item), g.b.ld,
                              ctypes.c_longlong(stride_b),
                              ctypes.c_void_p(program.pointer(g.a.buffer) + a * item), g.a.ld,
                              ctypes.c_longlong(stride_a), ctypes.byref(beta),
                              ctypes.c_void_p(program.pointer(g.out) + out * item), g.n,
                              ctypes.c_longlong(stride_out), count)
            self.calls += 1
            self._check(status, f"gemm of kernel {call.kernel}")


def _load_cublas():
    """libcublas from the CUDA toolkit, the system, or the nvidia-cublas pip wheel."""
    candidates = [ctypes.util.find_library("cublas")]
    for root in [os.environ.get("CUDA_HOME", "/usr/local/cuda")] + sys.path:
        candidates += sorted(glob.glob(os.path.join(root, "lib64", "libcublas.so*")))
        candidates += sorted(glob.glob(os.path.join(root, "nvidia", "cublas", "lib", "libcublas.so*")))
        candidates += sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "lib", "libcublas.so*")))
    for candidate in filter(None, candidates):
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    raise CudaUnavailable("device='cuda' needs cuBLAS (libcublas.so: the CUDA toolkit or pip install nvidia-cublas)")


class CudaGraph:
    """A step's launches captured once as a CUDA graph (driver API through ctypes), then replayed;
    the graph and its executable are destroyed with this object (so with their program)."""

    def __init__(self, lib, graph, executable):
        self.lib, self.graph, self.executable = lib, graph, executable
        weakref.finalize(self, _destroy_graph, lib, graph, executable)

    @classmethod
    def capture(cls, stream, launch):
        """The graph of launch()'s work on `stream`, or None (logged) where capture is refused or
        fails: a failure inside launch() ends the capture first, so the stream is usable again and
        the caller launches the kernels one by one. The garbage collector is paused meanwhile (a
        collection freeing device memory would call cuMemFree, which a capture does not allow)."""
        lib = _load_cuda()
        handle = ctypes.c_void_p(stream.handle)
        graph, executable = ctypes.c_void_p(), ctypes.c_void_p()
        if lib.cuStreamBeginCapture_v2(handle, 1) != 0:  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
            log.info("CUDA graph capture unavailable; launching kernels one by one")
            return None
        collecting = gc.isenabled()
        gc.disable()
        try:
            launch()
        except Exception as error:  # noqa: BLE001 (any failure ends the capture before it propagates)
            lib.cuStreamEndCapture(handle, ctypes.byref(graph))
            _destroy_graph(lib, graph, None)
            log.warning("CUDA graph capture failed (%s); launching kernels one by one", error)
            return None
        finally:
            if collecting:
                gc.enable()
        status = lib.cuStreamEndCapture(handle, ctypes.byref(graph))
        if status != 0:
            log.warning("CUDA graph capture failed (cuStreamEndCapture status %d); launching kernels one by one", status)
            return None
        status = lib.cuGraphInstantiateWithFlags(ctypes.byref(executable), graph, ctypes.c_ulonglong(0))
        if status != 0:
            _destroy_graph(lib, graph, None)
            log.warning("CUDA graph instantiation failed (cuGraphInstantiateWithFlags status %d); "
                        "launching kernels one by one", status)
            return None
        return cls(lib, graph, executable)

    def launch(self, stream):
        status = self.lib.cuGraphLaunch(self.executable, ctypes.c_void_p(stream.handle))
        if status != 0:
            raise NdlcError(f"cuGraphLaunch failed with status {status}")


def _load_cuda():
    return ctypes.CDLL(ctypes.util.find_library("cuda") or "libcuda.so.1")


def _destroy_graph(lib, graph, executable):
    if executable is not None and executable.value:
        lib.cuGraphExecDestroy(executable)
    if graph.value:
        lib.cuGraphDestroy(graph)


def default_executor():
    """The host emulation under NDLC_CUDA_EMULATE=1, else the GPU (CudaUnavailable where it is not)."""
    return EmulatedExecutor() if emulating() else GpuExecutor()
