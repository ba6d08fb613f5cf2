"""The GPU executor's own logic without a GPU: pycuda's driver and cuBLAS replaced by host stand-ins
(device memory is host memory, a launch runs the kernel under the CUDA emulation, cuBLAS's gemm
is the column-major BLAS contract computed with numpy), so the arena, the launches, the row-major
to column-major gemm mapping and the CUDA-graph warm-up/capture/replay sequence are checked
against the interpreter and the CPU backend."""
import ctypes
import shutil
import types

import numpy as np
import pytest

import ndlc as ndl
from ndlc.runtime import cuda, cuda_build
from training_cases import batches, setup

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulation needs g++ (C++20)")


class FakeFunction:
    def __init__(self, library, name):
        self.entry = getattr(library, f"ndlc_emulate_{name}")

    def prepare(self, types_):
        self.count = len(types_)

    def prepared_async_call(self, grid, block, stream, *pointers):
        assert len(pointers) == self.count and grid[1] == 1 and block[1:] == (1, 1)
        args = (ctypes.c_void_p * max(1, len(pointers)))(*[int(p) for p in pointers])
        self.entry(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), args)


class FakeDriver:
    """pycuda.driver's calls the executor makes, on host memory."""
    Error = RuntimeError
    device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT="sms")

    def __init__(self):
        self.allocations, self.pushed = [], 0
        driver = self

        class Context:
            def push(self):
                driver.pushed += 1

            @staticmethod
            def pop():
                driver.pushed -= 1

        class Device:
            @staticmethod
            def count():
                return 1

            def __init__(self, number):
                pass

            def retain_primary_context(self):
                return Context()

            def compute_capability(self):
                return (9, 0)

            def get_attribute(self, attribute):
                return 2

            def name(self):
                return "stand-in GPU"
        self.Device, self.Context = Device, Context
        self.Stream = lambda: types.SimpleNamespace(handle=1234, synchronize=lambda: None)

    def init(self):
        pass

    def get_driver_version(self):
        return 13000

    def module_from_buffer(self, source):
        library = cuda_build.compile_emulation(source.decode())
        return types.SimpleNamespace(get_function=lambda name: FakeFunction(library, name))

    def mem_alloc(self, size):
        memory = np.zeros(size + 256, np.uint8)
        self.allocations.append(memory)
        return _Pointer(memory.ctypes.data + (-memory.ctypes.data % 256))

    def memcpy_htod(self, pointer, array):
        ctypes.memmove(pointer, array.ctypes.data, array.nbytes)

    def memcpy_dtoh(self, out, pointer):
        ctypes.memmove(out.ctypes.data, pointer, out.nbytes)

    def memcpy_dtod_async(self, target, source, nbytes, stream):
        ctypes.memmove(target, source, nbytes)


class FakeCublas:
    """cuBLAS's gemm contract: column-major C(m x n) = op(A)(m x k) op(B)(k x n)."""

    def cublasCreate_v2(self, handle):
        return 0

    def cublasSetStream_v2(self, handle, stream):
        return 0

    def cublasSetMathMode(self, handle, mode):
        self.mode = mode
        return 0

    def _gemm(self, dtype, handle, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        def matrix(pointer, rows, cols, ld):  # column-major rows x cols, columns ld apart
            item = np.dtype(dtype).itemsize
            buffer = (ctypes.c_char * (item * ld * (cols - 1) + item * rows)).from_address(pointer.value)
            return np.ndarray((rows, cols), dtype, buffer, strides=(item, ld * item))
        op_a = matrix(a, *((m, k) if opa == 0 else (k, m)), lda)
        op_b = matrix(b, *((k, n) if opb == 0 else (n, k)), ldb)
        product = (op_a if opa == 0 else op_a.T) @ (op_b if opb == 0 else op_b.T)
        matrix(c, m, n, ldc)[...] = alpha._obj.value * product
        return 0

    def cublasSgemm_v2(self, *args):
        return self._gemm(np.float32, *args)

    def cublasDgemm_v2(self, *args):
        return self._gemm(np.float64, *args)


@pytest.fixture
def fake_gpu(monkeypatch):
    driver = FakeDriver()
    monkeypatch.delenv("NDLC_CUDA_EMULATE", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "pycuda", types.SimpleNamespace(driver=driver))
    monkeypatch.setitem(__import__("sys").modules, "pycuda.driver", driver)
    monkeypatch.setattr(cuda, "_load_cublas", FakeCublas)
    monkeypatch.setattr(cuda, "nvcc", lambda: "nvcc")
    monkeypatch.setattr(cuda, "compile_cuda", lambda source, arch, flags=(): source.encode())
    monkeypatch.setattr(cuda.GpuDevice, "_shared", None)
    captured = []

    class Graph:
        @classmethod
        def capture(cls, stream, launch):
            graph = cls()
            graph.replay = launch
            captured.append(graph)
            return graph

        def launch(self, stream):
            self.replay()
    monkeypatch.setattr(cuda, "CudaGraph", Graph)
    return types.SimpleNamespace(driver=driver, graphs=captured)


class _Pointer(int):
    """An allocation as pycuda gives it: int() is its device address."""


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gpu_executor_steps_equal_cpu_steps_and_replay_one_captured_graph(fake_gpu, optimizer):
    data = batches(5)
    cpu_model, _, cpu_step = setup(optimizer)
    cpu = ndl.compile(cpu_step)
    want = [float(cpu(x, y).numpy()) for x, y in data]
    model, _, gpu_step = setup(optimizer)
    step = ndl.compile(gpu_step, device="cuda")
    got = [float(step(x, y).numpy()) for x, y in data]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert len(fake_gpu.graphs) == 1  # run 1 eager, run 2 captured, runs 3-5 replayed
    assert fake_gpu.driver.pushed == 0  # every context push popped
    assert any(isinstance(s, cuda.GemmCall) for s in step.last.program.module.steps)
    for name, value in cpu_model.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_cublas_mapping_of_transposed_and_batched_row_major_products(fake_gpu):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 5, 4)).astype(np.float32), rng.standard_normal((3, 6, 4)).astype(np.float32)
    c = rng.standard_normal((4, 7)).astype(np.float64)

    def products(a, b, c):
        return ndl.matmul(a, ndl.transpose(b)), ndl.matmul(ndl.transpose(c), c)
    got = ndl.compile(products, device="cuda")(a, b, ndl.Tensor(c, dtype="float64"))
    np.testing.assert_allclose(got[0].numpy(), a @ b.transpose(0, 2, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1].numpy(), c.T @ c, rtol=1e-12)
