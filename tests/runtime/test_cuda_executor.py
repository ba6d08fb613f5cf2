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


CAPTURE = []  # while a stand-in capture is on: [the work recorded]; launches are recorded, not run


def submit(work):
    if CAPTURE:
        CAPTURE[-1].append(work)
    else:
        work()


class FakeFunction:
    def __init__(self, library, name):
        self.entry = getattr(library, f"ndlc_emulate_{name}")

    def prepare(self, types_):
        self.count = len(types_)

    def prepared_async_call(self, grid, block, stream, *pointers):
        assert len(pointers) == self.count and grid[1] == 1 and block[1:] == (1, 1)
        args = (ctypes.c_void_p * max(1, len(pointers)))(*[int(p) for p in pointers])
        submit(lambda: self.entry(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), args))


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

            @staticmethod
            def synchronize():
                pass

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
        self.uploads, self.downloads = [], []
        self.Stream = lambda flags=0: types.SimpleNamespace(handle=1234, flags=flags, synchronize=lambda: None)

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
        self.uploads.append((int(pointer), array.nbytes))
        ctypes.memmove(pointer, array.ctypes.data, array.nbytes)

    def memcpy_dtoh(self, out, pointer):
        self.downloads.append((int(pointer), out.nbytes))
        ctypes.memmove(out.ctypes.data, pointer, out.nbytes)

    def memcpy_dtod_async(self, target, source, nbytes, stream):
        submit(lambda: ctypes.memmove(target, source, nbytes))


class FakeCublas:
    """cuBLAS's strided batched gemm contract: column-major C_i(m x n) = op(A_i)(m x k) op(B_i)(k x n),
    matrix i at i * stride elements from the first. `fail_in_capture`: the status a gemm returns
    while a capture is on (0: recorded like a launch)."""
    fail_in_capture = 0

    def __init__(self):
        self.calls = 0

    def cublasCreate_v2(self, handle):
        return 0

    def cublasSetStream_v2(self, handle, stream):
        return 0

    def cublasSetMathMode(self, handle, mode):
        self.mode = mode
        return 0

    def _gemm(self, dtype, handle, opa, opb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count):
        if CAPTURE and self.fail_in_capture:
            return self.fail_in_capture
        self.calls += 1
        item = np.dtype(dtype).itemsize

        def matrix(pointer, rows, cols, ld):  # column-major rows x cols, columns ld apart
            buffer = (ctypes.c_char * (item * ld * (cols - 1) + item * rows)).from_address(pointer)
            return np.ndarray((rows, cols), dtype, buffer, strides=(item, ld * item))

        def run():
            for i in range(count):
                op_a = matrix(a.value + i * sa.value * item, *((m, k) if opa == 0 else (k, m)), lda)
                op_b = matrix(b.value + i * sb.value * item, *((k, n) if opb == 0 else (n, k)), ldb)
                product = (op_a if opa == 0 else op_a.T) @ (op_b if opb == 0 else op_b.T)
                matrix(c.value + i * sc.value * item, m, n, ldc)[...] = alpha._obj.value * product
        submit(run)
        return 0

    def cublasSgemmStridedBatched(self, *args):
        return self._gemm(np.float32, *args)

    def cublasDgemmStridedBatched(self, *args):
        return self._gemm(np.float64, *args)


class FakeCudaLib:
    """libcuda's graph calls: a capture records the stream's work, a launch replays it."""

    def __init__(self):
        self.graphs, self.begun, self.destroyed = {}, 0, []

    def cuStreamBeginCapture_v2(self, stream, mode):
        self.begun += 1
        CAPTURE.append([])
        return 0

    def cuStreamEndCapture(self, stream, graph):
        graph._obj.value = 1000 + len(self.graphs)
        self.graphs[graph._obj.value] = CAPTURE.pop()
        return 0

    def cuGraphInstantiateWithFlags(self, executable, graph, flags):
        executable._obj.value = graph.value
        return 0

    def cuGraphLaunch(self, executable, stream):
        for work in self.graphs[executable.value]:
            work()
        return 0

    def cuGraphDestroy(self, graph):
        self.destroyed.append(("graph", graph.value))

    def cuGraphExecDestroy(self, executable):
        self.destroyed.append(("executable", executable.value))


@pytest.fixture
def fake_gpu(monkeypatch):
    driver = FakeDriver()
    monkeypatch.delenv("NDLC_CUDA_EMULATE", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "pycuda", types.SimpleNamespace(driver=driver))
    monkeypatch.setitem(__import__("sys").modules, "pycuda.driver", driver)
    cublas = []
    monkeypatch.setattr(cuda, "_load_cublas", lambda: cublas.append(FakeCublas()) or cublas[-1])
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
    return types.SimpleNamespace(driver=driver, graphs=captured, cublas=cublas)


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


@pytest.fixture
def real_graphs(fake_gpu, monkeypatch):
    """CudaGraph itself, over a stand-in libcuda whose capture records the launches."""
    lib = FakeCudaLib()
    monkeypatch.setattr(cuda, "CudaGraph", CUDA_GRAPH)
    monkeypatch.setattr(cuda, "_load_cuda", lambda: lib)
    return lib


CUDA_GRAPH = cuda.CudaGraph


def test_a_failure_during_capture_ends_it_and_later_steps_launch_one_by_one(fake_gpu, real_graphs, caplog):
    """A cuBLAS error inside the capture (issue: it poisoned every later step) ends the capture,
    frees the partial graph, and the steps run kernel by kernel from then on with right results."""
    data = batches(5)
    _, _, cpu_step = setup("adam")
    cpu = ndl.compile(cpu_step)
    want = [float(cpu(x, y).numpy()) for x, y in data]
    FakeCublas.fail_in_capture = 13
    try:
        _, _, gpu_step = setup("adam")
        step = ndl.compile(gpu_step, device="cuda")
        got = [float(step(x, y).numpy()) for x, y in data]
    finally:
        FakeCublas.fail_in_capture = 0
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert real_graphs.begun == 1 and CAPTURE == []  # captured once, never again; the capture ended
    assert ("graph", 1000) in real_graphs.destroyed
    assert "CUDA graph capture failed (cuBLAS gemm of kernel" in caplog.text


def test_a_captured_graph_is_replayed_and_freed_with_its_program(fake_gpu, real_graphs):
    import gc
    model, opt, gpu_step = setup("sgd")
    step = ndl.compile(gpu_step, device="cuda")
    for x, y in batches(4):
        step(x, y)
    assert real_graphs.begun == 1 and real_graphs.destroyed == []
    del step, gpu_step, model, opt
    gc.collect()
    assert sorted(real_graphs.destroyed) == [("executable", 1000), ("graph", 1000)]


def test_one_cublas_call_per_gemm_kernel_for_batched_products(fake_gpu):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 5, 4)).astype(np.float32), rng.standard_normal((8, 4, 6)).astype(np.float32)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    got = ndl.compile(lambda a, b, w: (ndl.matmul(a, b), ndl.matmul(a, ndl.broadcast_to(w, (8, 4, 6)))),
                      device="cuda")(a, b, w)
    np.testing.assert_allclose(got[0].numpy(), a @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1].numpy(), a @ w, rtol=1e-5, atol=1e-5)
    assert fake_gpu.cublas[-1].calls == 2  # 8 products each, one strided batched call apiece


def test_read_only_state_is_uploaded_once_and_again_only_when_rebound(fake_gpu):
    np.random.seed(0)
    model = ndl.nn.Sequential(ndl.nn.Linear(6, 5), ndl.nn.ReLU(), ndl.nn.Linear(5, 3))
    model.eval()
    forward = ndl.compile(model, device="cuda")
    x = np.random.randn(4, 6).astype(np.float32)
    weight = model.parameters()[0]
    sizes = []
    for _ in range(3):
        before = len(fake_gpu.driver.uploads)
        out = forward(x)
        sizes.append(sorted(n for _, n in fake_gpu.driver.uploads[before:]))
    assert weight.numpy().nbytes in sizes[0]
    assert sizes[1] == sizes[2] == [x.nbytes]  # the batch only
    weight.data = ndl.Tensor(np.zeros((6, 5), np.float32))
    before = len(fake_gpu.driver.uploads)
    out = forward(x)
    assert weight.numpy().nbytes in [n for _, n in fake_gpu.driver.uploads[before:]]
    np.testing.assert_allclose(out.numpy(), model(ndl.Tensor(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_tf32_is_read_when_a_gemm_runs(fake_gpu, monkeypatch):
    a = np.ones((4, 4), np.float32)
    product = ndl.compile(lambda a: ndl.matmul(a, a), device="cuda")
    monkeypatch.setenv("NDLC_TF32", "1")
    product(a)
    assert fake_gpu.cublas[-1].mode == cuda.Cublas.TF32_MATH
    monkeypatch.delenv("NDLC_TF32")
    product(a + 1)
    assert fake_gpu.cublas[-1].mode == cuda.Cublas.DEFAULT_MATH


def test_the_stream_does_not_synchronise_with_the_default_stream(fake_gpu):
    assert cuda.GpuDevice.shared().stream.flags == 1


@pytest.mark.parametrize("setting, error, message", [
    ("abc", ndl.env.SettingError, "NDLC_CUDA_DEVICE must be a GPU's index .0, 1, ...., not 'abc'"),
    ("-1", ndl.env.SettingError, "NDLC_CUDA_DEVICE must be a GPU's index"),
    ("7", cuda_build.CudaUnavailable, "NDLC_CUDA_DEVICE=7, but the CUDA driver sees 1 GPU .0-0."),
])
def test_a_bad_cuda_device_setting_is_named(fake_gpu, monkeypatch, setting, error, message):
    """NDLC_CUDA_DEVICE=abc raised int()'s bare ValueError; an index past the GPUs the driver's."""
    monkeypatch.setenv("NDLC_CUDA_DEVICE", setting)
    with pytest.raises(error, match=message):
        cuda.GpuDevice.shared()


def test_the_gpu_checks_timed_ndlc_call_moves_no_data_between_host_and_device(fake_gpu):
    """benchmarks/gpu.py times ndlc with x, r and dx resident, as PyTorch's tensors are."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parents[2] / "benchmarks" / "gpu.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    driver = fake_gpu.driver
    for kind in ("batchnorm", "softmax"):
        for resident, moves in ((True, False), (False, True)):
            call = check.ndlc_norm(kind, 16, 8, resident=resident)
            call()
            call()
            before = len(driver.uploads), len(driver.downloads)
            call()
            assert (len(driver.uploads) > before[0] and len(driver.downloads) > before[1]) == moves, (kind, resident)


def test_a_training_step_moves_only_its_batch_in_and_its_loss_out(fake_gpu):
    """The state stays on the device between steps: not fetched to build the arguments (as it
    was), nor uploaded again; reading it on the host afterwards fetches it once."""
    model, _, gpu_step = setup("adam")
    step = ndl.compile(gpu_step, device="cuda")
    data = batches(3)
    step(*data[0])
    step(*data[1])
    driver = fake_gpu.driver
    before = len(driver.uploads), len(driver.downloads)
    x, y = data[2]
    step(x, y)
    uploaded = sorted(n for _, n in driver.uploads[before[0]:])
    assert sum(uploaded) - x.nbytes - y.nbytes < 64  # the batch and 0-d optimizer numbers only
    assert [n for _, n in driver.downloads[before[1]:]] == [4]  # the loss
    weight = model.parameters()[0]
    weight.numpy()
    assert [n for _, n in driver.downloads[before[1] + 1:]] == [weight.numpy().nbytes]
