"""needle's NDArray (ndlc.backend_ndarray): views share storage, strides and compaction follow
needle's reference, setitem writes through views, reductions keep dims, bad calls are named
errors; and its meeting points with Tensors, devices and compiled programs."""
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

import ndlc as ndl
from ndlc import backend_ndarray as nd


def element_strides(a: np.ndarray):
    return tuple(s // a.itemsize for s in a.strides)


def shares(a, b):
    return a._handle.ptr() == b._handle.ptr()


VIEWS = {
    "reshape": (lambda x: x.reshape((3, 2, 4)), lambda x: x.reshape(3, 2, 4)),
    "reshape_minus_one": (lambda x: x.reshape((-1, 8)), lambda x: x.reshape(-1, 8)),
    "permute": (lambda x: x.permute((1, 0)), lambda x: x.transpose()),
    "broadcast": (lambda x: x.reshape((6, 1, 4)).broadcast_to((6, 5, 4)),
                  lambda x: np.broadcast_to(x.reshape(6, 1, 4), (6, 5, 4))),
    "broadcast_new_axis": (lambda x: x.broadcast_to((2, 6, 4)), lambda x: np.broadcast_to(x, (2, 6, 4))),
    "slice_steps": (lambda x: x[1:6:2, ::3], lambda x: x[1:6:2, ::3]),
    "slice_negative_bounds": (lambda x: x[-4:-1, 1:], lambda x: x[-4:-1, 1:]),
    "int_keeps_dim": (lambda x: x[2, 1:3], lambda x: x[2:3, 1:3]),
    "permute_then_slice": (lambda x: x.permute((1, 0))[1:3, ::2], lambda x: x.T[1:3, ::2]),
}


@pytest.mark.parametrize("name", VIEWS)
def test_views_share_storage_and_have_numpys_strides(name):
    nd_fn, np_fn = VIEWS[name]
    data = np.arange(24, dtype=np.float32).reshape(6, 4)
    a = nd.array(data, device=nd.cpu())
    view, expected = nd_fn(a), np_fn(data)
    assert shares(view, a) and view.shape == expected.shape
    assert view.strides == element_strides(expected)
    np.testing.assert_array_equal(view.numpy(), expected)
    compact = view.compact()
    assert compact.is_compact() and np.array_equal(compact.numpy(), expected)


def test_a_write_through_a_view_changes_the_original():
    a = nd.array(np.zeros((4, 6)))
    view = a.permute((1, 0))[1:5:2, 1:3]
    view[0, 1] = 7.0
    view.numpy()[1, 0] = 5.0  # numpy() is a view too
    expected = np.zeros((4, 6), np.float32)
    expected[2, 1], expected[1, 3] = 7.0, 5.0
    np.testing.assert_array_equal(a.numpy(), expected)


def test_compact_copies_only_when_the_layout_needs_it():
    a = nd.array(np.arange(12).reshape(3, 4))
    assert a.is_compact() and a.compact() is a and a.reshape((4, 3)).compact().is_compact()
    for view in (a.permute((1, 0)), a[1:, :], a[:, 1:3], a.reshape((3, 1, 4)).broadcast_to((3, 2, 4))):
        assert not view.is_compact()
        copy = view.compact()
        assert not shares(copy, a) and copy.strides == nd.NDArray.compact_strides(view.shape)
        np.testing.assert_array_equal(copy.numpy(), view.numpy())


def test_setitem_writes_through_views_in_place():
    target, source = np.random.randn(4, 5, 6), np.random.randn(7, 7, 7)
    a, b = nd.array(target), nd.array(source)
    start = a._handle.ptr()
    a[1:4:2, 2:5, 0:6:3] = b[0:2, 4:7, 5:7]
    a[0, :, 1] = 4.0
    expected = target.astype(np.float32)
    expected[1:4:2, 2:5, 0:6:3] = source.astype(np.float32)[0:2, 4:7, 5:7]
    expected[0, :, 1] = 4.0
    assert a._handle.ptr() == start and a.strides == element_strides(expected)
    np.testing.assert_array_equal(a.numpy(), expected)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, (1,)])
@pytest.mark.parametrize("keepdims", [True, False])
def test_reductions_over_one_axis(axis, keepdims):
    data = np.random.randn(3, 4, 5).astype(np.float32)
    a = nd.array(data)
    for got, want in ((a.sum(axis, keepdims), data.sum(axis, keepdims=keepdims)),
                      (a.max(axis, keepdims), data.max(axis, keepdims=keepdims)),
                      (a.permute((2, 0, 1)).sum(axis, keepdims), data.transpose(2, 0, 1).sum(axis, keepdims=keepdims))):
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_a_reduction_over_every_axis_has_needles_shape():
    a = nd.array(np.arange(6).reshape(2, 3))
    assert a.sum().shape == (1,) and a.sum().numpy()[0] == 15 and a.max(keepdims=True).numpy()[0] == 5


def test_elementwise_scalar_and_comparison_results():
    x, y = np.random.randn(3, 4).astype(np.float32), np.random.randn(3, 4).astype(np.float32)
    a, b = nd.array(x), nd.array(y)
    cases = [(a + b, x + y), (a - b, x - y), (a * b, x * y), (a / b, x / y), (2.0 - a, 2.0 - x),
             (a ** 2.0, x ** 2.0), (a.maximum(b), np.maximum(x, y)), (a.maximum(0.1), np.maximum(x, 0.1)),
             (a == b, x == y), (a >= 0.0, x >= 0.0), (a != a, x != x), (a > b, x > y), (a < b, x < y),
             (a <= 0.5, x <= 0.5), (nd.array(np.abs(x)).log(), np.log(np.abs(x))), (a.exp(), np.exp(x)),
             (a.tanh(), np.tanh(x)), (-a, -x), (np.float32(3) * a, 3 * x)]
    for got, want in cases:
        assert isinstance(got, nd.NDArray) and got.dtype == "float32"
        np.testing.assert_allclose(got.numpy(), want.astype(np.float32), rtol=1e-6, atol=1e-6)


def test_matmul_plain_and_tiled():
    x, y = np.random.randn(9, 7).astype(np.float32), np.random.randn(7, 5).astype(np.float32)
    np.testing.assert_allclose((nd.array(x) @ nd.array(y)).numpy(), x @ y, rtol=1e-5, atol=1e-5)
    device = nd.cpu()
    t = device.__tile_size__
    a, b = nd.array(np.random.randn(2, 3, t, t), device=device), nd.array(np.random.randn(3, 4, t, t), device=device)
    c = nd.NDArray.make((2, 4, t, t), device=device)
    device.matmul_tiled(a._handle, b._handle, c._handle, 2 * t, 3 * t, 4 * t)
    untiled = lambda m: m.numpy().transpose(0, 2, 1, 3).reshape(m.shape[0] * t, m.shape[1] * t)
    np.testing.assert_allclose(untiled(c), untiled(a) @ untiled(b), rtol=1e-5, atol=1e-5)
    assert not hasattr(nd.cpu_numpy(), "matmul_tiled")


def test_flip_and_pad_equal_numpys():
    data = np.random.randn(2, 3, 4).astype(np.float32)
    a = nd.array(data)
    flipped = a.flip((0, 2))
    assert flipped.is_compact() and np.array_equal(flipped.numpy(), np.flip(data, (0, 2)))
    assert np.array_equal(a.permute((2, 1, 0)).flip(1).numpy(), np.flip(data.transpose(2, 1, 0), 1))
    widths = ((0, 0), (1, 2), (3, 0))
    assert np.array_equal(a.pad(widths).numpy(), np.pad(data, widths))


def test_the_backend_module_functions():
    device = nd.cpu_numpy()
    a = nd.array(np.arange(6).reshape(2, 3), device=device)
    out = nd.NDArray.make((3,), device=device)
    device.reduce_sum(a.permute((1, 0)).compact()._handle, out._handle, 2)
    np.testing.assert_array_equal(out.numpy(), [3, 5, 7])
    device.scalar_setitem(2, 9.0, a._handle, (2,), (3,), 1)
    np.testing.assert_array_equal(a.numpy(), [[0, 9, 2], [3, 9, 5]])
    view = nd.NDArray.make((3,), strides=(2,), device=device, handle=a._handle, offset=0)
    np.testing.assert_array_equal(view.numpy(), [0, 2, 9])


BAD_CALLS = {
    "reshape of a non-compact array": (lambda a: a.permute((1, 0)).reshape((12,)), "call .compact"),
    "reshape to another size": (lambda a: a.reshape((5, 2)), "size 12 into shape"),
    "broadcast of a dimension that is not 1": (lambda a: a.broadcast_to((3, 5)), "dimension 1 has size 4"),
    "permute by no permutation": (lambda a: a.permute((0, 0)), "permutation of 0..1"),
    "too few indices": (lambda a: a[1], "1 indices for a 2-d"),
    "a negative step": (lambda a: a[::-1, :], "step must be positive"),
    "an empty slice": (lambda a: a[2:2, :], "selects no element"),
    "arrays of different shapes": (lambda a: a + a[:, :2], r"equal-sized arrays, got \(3, 4\) and \(3, 2\)"),
    "an array as a scalar": (lambda a: a * np.ones(4), "takes a number"),
    "mismatched matmul": (lambda a: a @ a, r"\(3, 4\) @ \(3, 4\)"),
    "a reduction over two axes": (lambda a: a.sum(axis=(0, 1)), "a single axis"),
    "pad widths for too few axes": (lambda a: a.pad(((1, 1),)), "one \\(before, after\\) pair"),
    "setitem from another size": (lambda a: a.__setitem__((0, slice(None)), a[1:3, :]), r"set \(1, 4\) elements"),
    "an unknown device": (lambda a: nd.array(np.ones(2), device="tpu"), "unknown device 'tpu'"),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_calls_are_named_errors_of_needles_kinds(name):
    call, message = BAD_CALLS[name]
    with pytest.raises(nd.NDArrayError, match=message) as raised:
        call(nd.array(np.arange(12).reshape(3, 4)))
    assert isinstance(raised.value, (AssertionError, ValueError, ndl.NdlcError))


def test_an_index_out_of_bounds_is_an_index_error():
    with pytest.raises(IndexError, match="index 3 is out of bounds for axis 0 with size 3"):
        nd.array(np.ones((3, 2)))[3, 0]


def test_devices_answer_enabled_as_needles_do():
    from ndlc.runtime.cuda import require
    from ndlc.runtime.cuda_build import CudaUnavailable
    try:
        require()
        gpu = True
    except CudaUnavailable:
        gpu = False
    assert ndl.cuda().enabled() is gpu and nd.cuda().enabled() is gpu
    assert ndl.cpu().enabled() and nd.cpu_numpy().enabled() and ndl.default_device().enabled()
    assert [d.name for d in ndl.all_devices()] == ["cpu", "cuda", "cpu_numpy"]
    assert ndl.cpu() == nd.cpu() and nd.default_device() == nd.cpu_numpy() and repr(nd.cuda()) == "cuda()"
    assert pickle.loads(pickle.dumps(nd.cpu())) == nd.cpu()


def test_cuda_enabled_follows_the_runtime(monkeypatch):
    monkeypatch.setenv("NDLC_CUDA_EMULATE", "1")  # require() then only needs g++
    assert ndl.cuda().enabled() is (shutil.which("g++") is not None)


def test_ndarrays_and_enabled_import_no_code_generator():
    script = ("import sys, numpy as np\nfrom ndlc import backend_ndarray as nd\n"
              "a = nd.array(np.ones((2, 3)), device=nd.cpu())\n(a @ a.permute((1, 0))).sum()\n"
              "[d.enabled() for d in nd.all_devices()]\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'llvmlite'))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---- NDArrays and Tensors ---------------------------------------------------------------------
def test_a_tensor_from_an_ndarray_copies_it_and_takes_its_device():
    a = nd.array(np.arange(6).reshape(2, 3), device=nd.cuda())
    t = ndl.Tensor(a)
    assert t.device == ndl.cuda() and t.dtype == "float32" and t.shape == (2, 3)
    a[0, 0] = 100.0
    assert t.numpy()[0, 0] == 0.0
    assert ndl.Tensor(a, device=ndl.cpu()).device == ndl.cpu()


def test_cached_data_is_an_ndarray_sharing_the_tensors_memory():
    t = ndl.Tensor(np.arange(6.0).reshape(2, 3), device=ndl.cpu())
    data = t.realize_cached_data()
    assert isinstance(t.cached_data, nd.NDArray) and data.device == ndl.cpu() and data.shape == (2, 3)
    data.flat[4] += 0.5  # needle's numerical-gradient checks perturb inputs so
    assert t.numpy()[1, 1] == 4.5
    assert (t * 2).numpy()[1, 1] == 9.0  # eager ops read the new value


def test_cached_data_of_a_non_contiguous_result_is_made_compact():
    t = ndl.Tensor(np.arange(6.0).reshape(2, 3)).transpose()
    data = t.cached_data
    assert data.is_compact() and np.array_equal(data.numpy(), np.arange(6.0).reshape(2, 3).T)
    data[0, 0] = -1.0
    assert t.numpy()[0, 0] == -1.0 and t.cached_data.numpy()[0, 0] == -1.0


def test_results_and_initialisers_live_on_the_device_asked_for():
    x = ndl.Tensor(np.ones(3), device=ndl.cuda())
    assert (x + 1).device == ndl.cuda() and ndl.init.rand(2, device=ndl.cuda()).device == ndl.cuda()
    assert ndl.init.one_hot(3, np.array([0, 2]), device=nd.cpu_numpy()).device == nd.cpu_numpy()
    assert ndl.init.zeros(2, device="cuda").device == ndl.cuda()


def test_gradient_as_tuple_applies_the_ops_gradient_rule():
    x, y = ndl.Tensor(np.random.randn(2, 3)), ndl.Tensor(np.random.randn(2, 3))
    out = x * y
    seed = np.random.randn(2, 3).astype(np.float32)
    gx, gy = out.op.gradient_as_tuple(ndl.Tensor(seed), out)
    np.testing.assert_allclose(gx.numpy(), seed * y.numpy(), rtol=1e-6)
    np.testing.assert_allclose(gy.numpy(), seed * x.numpy(), rtol=1e-6)
    assert out.op.op == "multiply" and x.op is None
    with pytest.raises(ndl.NdlcError, match="not the result of this multiply"):
        out.op.gradient_as_tuple(ndl.Tensor(seed), x)


def test_compile_takes_ndarrays_as_it_takes_numpy_arrays():
    layer = ndl.nn.Linear(4, 3)
    forward = ndl.compile(layer)
    x = np.random.randn(5, 4).astype(np.float32)
    a = nd.array(x, device=nd.cpu())
    assert np.shares_memory(np.asarray(a), a.numpy())  # handed over without a copy
    np.testing.assert_allclose(forward(a).numpy(), forward(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(forward(a.permute((1, 0)).permute((1, 0))).numpy(), forward(x).numpy(), rtol=1e-6)
