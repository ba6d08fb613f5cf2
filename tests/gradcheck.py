"""Central finite differences of eager functions, and a convolution's compiled gradients, for gradient tests."""
import numpy as np

import ndlc as ndl


def check_gradients(fn, *arrays, tol=1e-6, eps=1e-6):
    """Compare autodiff gradients of sum(fn(*tensors) * r) with central differences (float64)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    tensors = [ndl.Tensor(a, dtype="float64") for a in arrays]
    out = fn(*tensors)
    weights = np.random.default_rng(1).standard_normal(out.shape)
    (out * ndl.Tensor(weights, dtype="float64", requires_grad=False)).sum().backward()

    def loss(values):
        return float((fn(*[ndl.Tensor(v, dtype="float64") for v in values]).numpy() * weights).sum())

    for i, (tensor, array) in enumerate(zip(tensors, arrays)):
        numeric = central_differences(loss, arrays, i, eps)
        analytic = tensor.grad.numpy()
        assert analytic.shape == array.shape
        error = np.linalg.norm(analytic - numeric) / max(np.linalg.norm(numeric), 1e-8)
        assert error <= tol, f"gradient of input {i}: relative error {error:.2e}"


def central_differences(loss, arrays, i, eps=1e-6):
    """The gradient of the scalar `loss(arrays)` with respect to arrays[i], by central differences."""
    numeric = np.zeros_like(arrays[i])
    for index in np.ndindex(*arrays[i].shape):
        plus, minus = [a.copy() for a in arrays], [a.copy() for a in arrays]
        plus[i][index] += eps
        minus[i][index] -= eps
        numeric[index] = (loss(plus) - loss(minus)) / (2 * eps)
    return numeric


def compiled_conv_step(conv, output=False):
    """`conv`'s compiled step on (x, c): the gradients of sum(conv(x) * c) with respect to x and
    conv's weight, after conv(x) itself with `output`."""
    def step(t, c):
        t.requires_grad = True
        y = conv(t)
        (y * c).sum().backward()
        return (y,) * output + (t.grad, conv.weight.grad)
    return ndl.compile(step, state=[conv])
