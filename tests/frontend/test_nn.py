"""ndl.nn against numpy implementations of DESIGN §8, and PyTorch as an oracle where it matches."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc import nn

RTOL, ATOL = 1e-5, 1e-5


def tensor(array, requires_grad=True):
    """A float32 Tensor of `array`."""
    return ndl.Tensor(np.asarray(array, dtype=np.float32), requires_grad=requires_grad)


def grads(module_or_fn, x, out_grad):
    """Output and d(sum(out * out_grad))/dx of a module on a float32 input."""
    xt = tensor(x)
    out = module_or_fn(xt)
    (out * tensor(out_grad, requires_grad=False)).sum().backward()
    return out.numpy(), xt.grad.numpy()


# ---- numpy references -------------------------------------------------------------------
def np_norm(x, axis, eps, w, b):
    """Normalise over `axis` with biased variance; scale and shift; and the backward given g."""
    mean = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    return xhat * w + b, xhat, var


def np_norm_backward(g, xhat, var, axis, eps, w):
    gx = g * w
    return (gx - gx.mean(axis=axis, keepdims=True)
            - xhat * (gx * xhat).mean(axis=axis, keepdims=True)) / np.sqrt(var + eps)


# ---- Module -----------------------------------------------------------------------------
class Tree(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(2, 3), (nn.Linear(3, 3),)]
        self.by_name = {"a": nn.BatchNorm1d(3), "nested": {"b": nn.Linear(3, 1)}}
        self.shared = self.layers[0]
        self.scale = nn.Parameter(np.ones(1))
        self.note = "not a tensor"


def test_parameters_walk_lists_tuples_dicts_once():
    tree = Tree()
    params = tree.parameters()
    assert all(isinstance(p, nn.Parameter) for p in params)
    expected = [tree.layers[0].weight, tree.layers[0].bias, tree.layers[1][0].weight,
                tree.layers[1][0].bias, tree.by_name["a"].weight, tree.by_name["a"].bias,
                tree.by_name["nested"]["b"].weight, tree.by_name["nested"]["b"].bias, tree.scale]
    assert [id(p) for p in params] == [id(p) for p in expected]
    assert not any(p is tree.by_name["a"].running_mean for p in params)


def test_train_and_eval_reach_children_in_lists_and_dicts():
    tree = Tree()
    tree.eval()
    modules = [tree, tree.layers[0], tree.layers[1][0], tree.by_name["a"], tree.by_name["nested"]["b"]]
    assert not any(m.training for m in modules)
    tree.train()
    assert all(m.training for m in modules)


def test_state_dict_round_trip_includes_running_statistics():
    np.random.seed(1)
    source = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    source(tensor(np.random.randn(5, 4)))
    state = source.state_dict()
    assert list(state) == ["modules.0.weight", "modules.0.bias", "modules.1.weight",
                           "modules.1.bias", "modules.1.running_mean", "modules.1.running_var"]
    target = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    weight = target.modules[0].weight
    target.load_state_dict({k: v.numpy() for k, v in state.items()})
    assert target.modules[0].weight is weight  # updated in place: optimizers keep their references
    for key, value in target.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key].numpy())
        assert value.dtype == "float32"


def test_state_dict_is_a_snapshot():
    layer = nn.Linear(2, 2)
    state = layer.state_dict()
    before = state["weight"].numpy().copy()
    layer.weight.data = layer.weight.data * 2.0
    np.testing.assert_array_equal(state["weight"].numpy(), before)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("bias"), r"missing keys \['bias'\]"),
    (lambda s: s.update(extra=np.zeros(1)), r"unexpected keys \['extra'\]"),
    (lambda s: s.update(weight=np.zeros((3, 2))), r"'weight' has shape \(3, 2\).*model's is \(2, 3\)"),
])
def test_load_state_dict_refuses_mismatches(edit, message):
    layer = nn.Linear(2, 3)
    state = layer.state_dict()
    edit(state)
    with pytest.raises((KeyError, ValueError), match=message):
        layer.load_state_dict(state)


# ---- simple layers ----------------------------------------------------------------------
def test_linear_forward_backward_matches_numpy():
    layer = nn.Linear(5, 3)
    x, g = np.random.randn(4, 5), np.random.randn(4, 3)
    out, dx = grads(layer, x, g)
    w, b = layer.weight.numpy(), layer.bias.numpy()
    np.testing.assert_allclose(out, x @ w + b, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dx, g @ w.T, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.weight.grad.numpy(), x.T @ g, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.bias.grad.numpy(), g.sum(0, keepdims=True), rtol=RTOL, atol=ATOL)
    assert layer.bias.shape == (1, 3)


def test_linear_takes_flat_bias_and_higher_rank_inputs():
    layer = nn.Linear(5, 3)
    layer.bias = nn.Parameter(np.arange(3.0))
    x = np.random.randn(2, 4, 5)
    out, dx = grads(layer, x, np.ones((2, 4, 3)))
    np.testing.assert_allclose(out, x @ layer.weight.numpy() + np.arange(3.0), rtol=RTOL, atol=ATOL)
    assert dx.shape == (2, 4, 5) and layer.bias.grad.shape == (3,)


def test_linear_without_bias():
    layer = nn.Linear(3, 2, bias=False)
    assert layer.bias is None and len(layer.parameters()) == 1
    x = np.random.randn(2, 3)
    np.testing.assert_allclose(layer(tensor(x)).numpy(), x @ layer.weight.numpy(), rtol=RTOL)


@pytest.mark.parametrize("module, reference", [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.Tanh(), np.tanh),
    (nn.Identity(), lambda x: x),
    (nn.Flatten(), lambda x: x.reshape(x.shape[0], -1)),
    (nn.Residual(nn.Tanh()), lambda x: np.tanh(x) + x),
    (nn.Sequential(nn.Tanh(), nn.ReLU()), lambda x: np.maximum(np.tanh(x), 0)),
])
def test_simple_modules_match_numpy(module, reference):
    x = np.random.randn(3, 2, 4)
    np.testing.assert_allclose(module(tensor(x)).numpy(), reference(x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64"])
def test_softmax_loss_and_gradient(dtype):
    z, y = np.random.randn(6, 4), np.array([0, 3, 1, 1, 2, 3], dtype=dtype)
    zt = tensor(z)
    loss = nn.SoftmaxLoss()(zt, ndl.Tensor(y, requires_grad=False))
    loss.backward()
    lse = np.log(np.exp(z).sum(1))
    np.testing.assert_allclose(loss.numpy(), np.mean(lse - z[np.arange(6), y]), rtol=RTOL)
    softmax = np.exp(z - lse[:, None])
    np.testing.assert_allclose(zt.grad.numpy(), (softmax - np.eye(4)[y]) / 6, rtol=RTOL, atol=ATOL)


def test_softmax_loss_is_stable_for_large_logits():
    loss = nn.SoftmaxLoss()(tensor([[1000.0, 0.0], [0.0, 1000.0]]), np.array([0, 0]))
    np.testing.assert_allclose(loss.numpy(), 500.0, rtol=1e-6)


def test_compiled_softmax_loss_keeps_eagers_non_finite_rows():
    """A -inf logit off the label makes eager's pick -inf * 0 = NaN, on it -inf (a loss of +inf);
    +inf or NaN anywhere a NaN: the compiled pick (int32 compares, frontend/init.py one_hot) agrees."""
    rng = np.random.default_rng(3)
    z, y = rng.standard_normal((6, 70)).astype(np.float32) * 3, rng.integers(0, 70, 6)
    z[1, (y[1] + 1) % 70], z[2, y[2]], z[3, 5], z[4, 6], z[5, y[5]] = -np.inf, -np.inf, np.inf, np.nan, np.inf
    loss = nn.SoftmaxLoss()
    compiled = ndl.compile(lambda a, b: loss(a, b))
    rows = [(ndl.Tensor(z[r:r + 1]), ndl.Tensor(y[r:r + 1], requires_grad=False)) for r in range(6)]
    eager = np.array([loss(*row).numpy() for row in rows])
    np.testing.assert_allclose(np.array([compiled(*row).numpy() for row in rows]), eager, rtol=1e-6)
    assert np.isnan(eager).tolist() == [False, True, False, True, True, True] and eager[2] == np.inf


@pytest.mark.parametrize("shape", [(4096, 1000), (1000, 77)])
def test_compiled_softmax_loss_matches_numpy_with_one_threads_bits_on_two(shape, monkeypatch):
    rng = np.random.default_rng(4)
    z, y = rng.standard_normal(shape).astype(np.float32) * 3, rng.integers(0, shape[1], shape[0])
    results = []
    for threads in (1, 2):
        monkeypatch.setenv("NDLC_THREADS", str(threads))
        loss = nn.SoftmaxLoss()
        compiled = ndl.compile(lambda a, b: loss(a, b))
        results.append(compiled(ndl.Tensor(z), ndl.Tensor(y, requires_grad=False)).numpy())
    m = z.max(1)
    want = np.mean(np.log(np.exp(z - m[:, None]).sum(1)) + m - z[np.arange(shape[0]), y])
    np.testing.assert_allclose(results[0], want, rtol=1e-6)
    assert results[0].tobytes() == results[1].tobytes()


# ---- normalisation ----------------------------------------------------------------------
def test_batchnorm1d_training_forward_backward_and_running_stats():
    bn = nn.BatchNorm1d(3, momentum=0.2)
    bn.weight.data = tensor([0.5, 2.0, -1.0])
    bn.bias.data = tensor([0.1, 0.0, 0.3])
    w, b = bn.weight.numpy(), bn.bias.numpy()
    running_mean, running_var = np.zeros(3), np.ones(3)
    for _ in range(2):
        x, g = np.random.randn(8, 3) * 3 + 1, np.random.randn(8, 3)
        out, dx = grads(bn, x, g)
        expected, xhat, var = np_norm(x, 0, 1e-5, w, b)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dx, np_norm_backward(g, xhat, var, 0, 1e-5, w), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(bn.weight.grad.numpy(), (g * xhat).sum(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.bias.grad.numpy(), g.sum(0), rtol=1e-5, atol=1e-5)
        running_mean = 0.8 * running_mean + 0.2 * x.mean(0)
        running_var = 0.8 * running_var + 0.2 * x.var(0)  # biased, needle's convention
        np.testing.assert_allclose(bn.running_mean.numpy(), running_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.numpy(), running_var, rtol=1e-5, atol=1e-6)
    assert bn.running_mean.is_leaf() and not bn.running_mean.requires_grad
    bn.eval()
    x = np.random.randn(4, 3)
    expected = (x - running_mean) / np.sqrt(running_var + 1e-5) * w + b
    np.testing.assert_allclose(bn(tensor(x)).numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), running_mean, rtol=1e-5)  # eval leaves it


def test_batchnorm2d_normalises_each_channel_over_n_h_w():
    bn = nn.BatchNorm2d(3)
    x, g = np.random.randn(2, 3, 4, 5), np.random.randn(2, 3, 4, 5)
    out, dx = grads(bn, x, g)
    expected, xhat, var = np_norm(x, (0, 2, 3), 1e-5, 1.0, 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    gx = g - g.mean((0, 2, 3), keepdims=True) - xhat * (g * xhat).mean((0, 2, 3), keepdims=True)
    np.testing.assert_allclose(dx, gx / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * x.var((0, 2, 3)), rtol=1e-5)


def test_layernorm1d_over_the_last_axis():
    ln = nn.LayerNorm1d(4, eps=1e-3)
    ln.weight.data = tensor([1.0, -2.0, 0.5, 3.0])
    w = ln.weight.numpy()
    for shape in [(5, 4), (2, 3, 4)]:
        x, g = np.random.randn(*shape) * 2, np.random.randn(*shape)
        out, dx = grads(ln, x, g)
        expected, xhat, var = np_norm(x, -1, 1e-3, w, 0.0)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dx, np_norm_backward(g, xhat, var, -1, 1e-3, w), rtol=1e-4, atol=1e-4)


def test_dropout_mask_comes_from_randb_in_forward():
    drop = nn.Dropout(0.3)
    x = np.random.randn(5, 6)
    np.random.seed(11)
    out = drop(tensor(x)).numpy()
    np.random.seed(11)
    keep = np.random.rand(5, 6) <= 0.7
    np.testing.assert_allclose(out, x * keep / 0.7, rtol=RTOL, atol=ATOL)
    drop.eval()
    np.testing.assert_array_equal(drop(tensor(x)).numpy(), x.astype(np.float32))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_refuses_p_outside_unit_interval(p):
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\)"):
        nn.Dropout(p)


# ---- errors -----------------------------------------------------------------------------
def test_linear_names_itself_and_the_shapes_on_a_wrong_feature_size():
    with pytest.raises(ValueError, match=r"Linear\(784, 512\): input has 100 features, expected 784 "
                                         r"\(input shape \(8, 100\)\)"):
        nn.Linear(784, 512)(tensor(np.zeros((8, 100))))


def test_batchnorm_names_itself_and_the_shapes_on_a_wrong_feature_size():
    with pytest.raises(ValueError, match=r"BatchNorm1d\(16\): input has 8 features, expected 16 "
                                         r"\(input shape \(4, 8\)\)"):
        nn.BatchNorm1d(16)(tensor(np.zeros((4, 8))))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): input must have rank 4"):
        nn.BatchNorm2d(3)(tensor(np.zeros((4, 3))))


def test_conv_names_itself_and_the_shapes_on_a_wrong_channel_count():
    with pytest.raises(ValueError, match=r"Conv\(3, 4, kernel_size=3, stride=1, padding=1\): input has 2 channels, "
                                         r"expected 3 \(input shape \(1, 2, 5, 5\)\)"):
        nn.Conv(3, 4, 3)(tensor(np.zeros((1, 2, 5, 5))))


def test_conv_padding_is_needles_k_over_2_unless_given():
    x = tensor(np.random.default_rng(0).standard_normal((2, 3, 7, 7)))
    assert nn.Conv(3, 4, 5)(x).shape == (2, 4, 7, 7)
    assert nn.Conv(3, 4, 5, padding=0)(x).shape == (2, 4, 3, 3)
    assert nn.Conv(3, 4, 3, stride=2, padding=2)(x).shape == (2, 4, 5, 5)
    with pytest.raises(ValueError, match="padding must be None"):
        nn.Conv(3, 4, 3, padding=-1)


def test_softmax_loss_refuses_mismatched_labels():
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        nn.SoftmaxLoss()(tensor(np.zeros((3, 2))), np.zeros(4, dtype=np.int64))


# ---- convolution and pooling ------------------------------------------------------------
def test_conv_initialises_like_needle():
    np.random.seed(4)
    conv = nn.Conv(3, 8, 3)
    np.random.seed(4)
    bound = np.sqrt(2) * np.sqrt(3 / 27)
    weight = np.random.rand(3, 3, 3, 8) * 2 * bound - bound
    bias = np.random.rand(8) * 2 / np.sqrt(27) - 1 / np.sqrt(27)
    np.testing.assert_allclose(conv.weight.numpy(), weight.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(conv.bias.numpy(), bias.astype(np.float32), rtol=1e-6)
    assert conv.padding == 1


# ---- training ---------------------------------------------------------------------------
def residual_mlp(norm, dim=16, hidden=32, classes=3):
    return nn.Sequential(
        nn.Linear(8, dim),
        nn.Residual(nn.Sequential(nn.Linear(dim, hidden), norm(hidden), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(hidden, dim), norm(dim))),
        nn.ReLU(),
        nn.Linear(dim, classes))


@pytest.mark.parametrize("norm", [nn.BatchNorm1d, nn.LayerNorm1d])
@pytest.mark.parametrize("optimizer", [lambda p: ndl.optim.SGD(p, lr=0.1, momentum=0.9),
                                       lambda p: ndl.optim.Adam(p, lr=0.01, weight_decay=1e-4)],
                         ids=["sgd", "adam"])
def test_residual_mlp_loss_falls(norm, optimizer):
    x = np.random.randn(64, 8).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    model, loss_fn = residual_mlp(norm), nn.SoftmaxLoss()
    opt = optimizer(model.parameters())
    losses = []
    for _ in range(30):
        opt.reset_grad()
        loss = loss_fn(model(tensor(x, requires_grad=False)), ndl.Tensor(y))
        loss.backward()
        opt.step()
        losses.append(float(loss.numpy()))
    assert losses[-1] < 0.5 * losses[0], losses


# ---- PyTorch as an oracle (set up to match needle's conventions) -------------------------
@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def torch_grads(torch, fn, x, g):
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    out = fn(xt)
    out.backward(torch.tensor(g, dtype=torch.float32))
    return out.detach().numpy(), xt.grad.numpy()


def test_linear_matches_torch_with_transposed_weight(torch):
    layer = nn.Linear(6, 4)
    ref = torch.nn.Linear(6, 4)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(layer.weight.numpy().T))  # PyTorch keeps (out, in)
        ref.bias.copy_(torch.tensor(layer.bias.numpy().reshape(4)))
    x, g = np.random.randn(3, 6), np.random.randn(3, 4)
    out, dx = grads(layer, x, g)
    ref_out, ref_dx = torch_grads(torch, ref, x, g)
    np.testing.assert_allclose(out, ref_out, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dx, ref_dx, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.weight.grad.numpy(), ref.weight.grad.numpy().T, rtol=RTOL, atol=ATOL)


def test_softmax_loss_matches_torch_cross_entropy(torch):
    z, y = np.random.randn(5, 7), np.random.randint(0, 7, 5)
    out, dz = grads(lambda t: nn.SoftmaxLoss()(t, y), z, np.ones(()))
    ref, ref_dz = torch_grads(torch, lambda t: torch.nn.functional.cross_entropy(t, torch.tensor(y)),
                              z, np.ones(()))
    np.testing.assert_allclose(out, ref, rtol=RTOL)
    np.testing.assert_allclose(dz, ref_dz, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dims", [1, 2])
def test_batchnorm_matches_torch_in_train_and_eval(torch, dims):
    shape = (6, 4) if dims == 1 else (3, 4, 5, 2)
    bn = nn.BatchNorm1d(4) if dims == 1 else nn.BatchNorm2d(4)
    ref = torch.nn.BatchNorm1d(4) if dims == 1 else torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([1.0, 0.5, -2.0, 3.0]))
        ref.bias.copy_(torch.tensor([0.0, 1.0, 0.2, -0.3]))
    bn.weight.data = tensor(ref.weight.detach().numpy())
    bn.bias.data = tensor(ref.bias.detach().numpy())
    x, g = np.random.randn(*shape), np.random.randn(*shape)
    out, dx = grads(bn, x, g)
    ref_out, ref_dx = torch_grads(torch, ref, x, g)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.weight.grad.numpy(), ref.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.running_mean.numpy(), ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # PyTorch's running variance is unbiased; needle's is biased
        ref.running_var.copy_(torch.tensor(bn.running_var.numpy()))
    bn.eval(), ref.eval()
    x = np.random.randn(*shape)
    np.testing.assert_allclose(bn(tensor(x)).numpy(), ref(torch.tensor(x, dtype=torch.float32)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


def test_layernorm_matches_torch(torch):
    ln, ref = nn.LayerNorm1d(6), torch.nn.LayerNorm(6, eps=1e-5)
    x, g = np.random.randn(4, 6), np.random.randn(4, 6)
    out, dx = grads(ln, x, g)
    ref_out, ref_dx = torch_grads(torch, ref, x, g)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ln.weight.grad.numpy(), ref.weight.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel, stride", [(3, 1), (3, 2), (5, 1), (1, 1)])
def test_conv_matches_torch(torch, kernel, stride):
    conv = nn.Conv(3, 4, kernel, stride=stride)
    x = np.random.randn(2, 3, 7, 7)
    ref = lambda t: torch.nn.functional.conv2d(  # noqa: E731  (weight (k,k,in,out) -> (out,in,k,k))
        t, torch.tensor(conv.weight.numpy()).permute(3, 2, 0, 1), torch.tensor(conv.bias.numpy()),
        stride=stride, padding=kernel // 2)
    g = np.random.randn(*ref(torch.tensor(x, dtype=torch.float32)).shape)
    out, dx = grads(conv, x, g)
    ref_out, ref_dx = torch_grads(torch, ref, x, g)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("module, functional", [(nn.AvgPool2d(2), "avg_pool2d"),
                                                (nn.MaxPool2d(3, stride=2), "max_pool2d")])
def test_pooling_matches_torch(torch, module, functional):
    x, fn = np.random.randn(2, 3, 7, 7), getattr(torch.nn.functional, functional)
    ref = lambda t: fn(t, module.kernel_size, module.stride)  # noqa: E731
    g = np.random.randn(*ref(torch.tensor(x, dtype=torch.float32)).shape)
    out, dx = grads(module, x, g)
    ref_out, ref_dx = torch_grads(torch, ref, x, g)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-6)


def test_all_modules_lists_a_sequential_and_every_module_inside_it_once():
    """Not `modules()`: needle's Sequential keeps its layers in an attribute of that name."""
    bn = nn.BatchNorm1d(3)
    inner = nn.Sequential(nn.Linear(2, 3), bn)
    model = nn.Sequential(inner, nn.ReLU(), inner)
    found = model.all_modules()
    assert found[0] is model and bn in found and len(found) == len({id(m) for m in found}) == 5
