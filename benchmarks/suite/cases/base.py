"""What a benchmark case is: an Op (its arrays, its forward in each framework, numpy's gradients by
hand), the Case that makes a table row of it (forward, or forward and backward), and the helpers
the ops share for their arrays and ndlc modules."""
from typing import Callable, NamedTuple

import numpy as np

import ndlc as ndl
from suite.jax_runner import jax_runner
from suite.ndlc_runner import ndlc_runner
from suite.torch_runner import torch_runner

EPS, MOMENTUM, LR = 1e-5, 0.1, 1e-3


class NdlcModel(NamedTuple):
    """An op in ndlc: `forward(tensors by name)`, the modules holding its state, and the tensors
    they hold by array name (parameters, running statistics), which are not program inputs."""
    forward: Callable
    modules: list = []
    held: dict = {}


def _hold(module, a, params=(), buffers=(), prefix=""):
    """Load arrays into `module` (its Parameters `params`, its plain tensors `buffers`, from the
    arrays named `prefix` + attribute); returns the held tensors by array name."""
    for name in params:
        setattr(module, name, ndl.nn.Parameter(a[prefix + name]))
    for name in buffers:
        setattr(module, name, ndl.Tensor(a[prefix + name], requires_grad=False))
    return {prefix + name: getattr(module, name) for name in params + buffers}


def normal(rng, *shape, scale=1.0):
    """float32 standard normal samples, scaled."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)


class Op:
    """An op under test, shared by its fwd and fwd+bwd cases: its arrays, its forward in each
    framework and numpy's gradients by hand. fwd+bwd differentiates loss = (output * c).sum(),
    or output.sum() where the op has no `cotangent`, with respect to `wrt`."""
    label = ""
    wrt = ()
    cotangent = None

    def __init__(self, full, quick):
        self.full, self.quick = full, quick

    def size(self, shape):
        """The shape as the case's name shows it."""
        return "x".join(map(str, shape))

    def arrays(self, rng, shape):
        """The op's arrays by name (float32; int labels), drawn from `rng`, for `shape`."""
        raise NotImplementedError

    def ndlc(self, a):
        """The op for ndl.compile: an NdlcModel, its modules loaded from `a`."""
        raise NotImplementedError

    def numpy(self, a):
        """The forward's outputs in numpy (state in `a`, such as running statistics, moved on)."""
        raise NotImplementedError

    def numpy_grads(self, a):
        """The gradients of `wrt`, written by hand in numpy."""
        raise NotImplementedError

    def torch(self, t):
        """The forward's outputs in PyTorch, from tensors by name."""
        raise NotImplementedError

    def jax(self, a):
        """JAX runs the numpy forward where that uses only operators and array methods."""
        return self.numpy(a)

    def traffic(self, a):
        """Bytes the forward must move at least (None: not a bandwidth-bound case)."""
        return None

    def flops(self, a):
        """Floating-point operations of the forward's products (None: not counted)."""
        return None


class Case:
    """A row of the table: its arrays, and for each contender a callable computing its results
    from fresh copies of them (each builder compiles or sets up; the callable is what is timed)."""

    def name(self, quick):
        """The row's name, with the sizes that --quick (or not) uses."""
        raise NotImplementedError

    def arrays(self, rng, quick):
        """The inputs and initial state by name."""
        raise NotImplementedError

    def traffic(self, a):
        """Bytes ndlc must move at least, where the case is memory-bound (for GB/s), else None."""
        return None

    def flops(self, a):
        """Floating-point operations of its products, where the case counts them (for GFLOP/s)."""
        return None

    def ndlc(self, a, device):
        """ndlc: compiled by ndl.compile for `device`."""
        raise NotImplementedError

    def numpy(self, a):
        """numpy, vectorised by hand: the reference the others are checked against."""
        raise NotImplementedError

    def torch(self, a):
        """PyTorch, eager."""
        raise NotImplementedError

    def torch_compile(self, a):
        """PyTorch through torch.compile (its default inductor backend)."""
        raise NotImplementedError

    def jax(self, a):
        """JAX under jax.jit, waited for."""
        raise NotImplementedError


class OpCase(Case):
    """An op's forward pass (with its state updates), or forward and backward (its `wrt`
    gradients), in every framework."""

    def __init__(self, op, backward=False):
        self.op, self.backward = op, backward
        self.wrt = op.wrt if backward else ()

    def name(self, quick):
        shape = self.op.quick if quick else self.op.full
        return f"{self.op.label} {self.op.size(shape)} {'fwd+bwd' if self.backward else 'fwd'}"

    def arrays(self, rng, quick):
        a = self.op.arrays(rng, self.op.quick if quick else self.op.full)
        if not self.backward:
            a.pop(self.op.cotangent, None)
        return a

    def traffic(self, a):
        return None if self.backward else self.op.traffic(a)

    def flops(self, a):
        """The forward's products, and with backward the two gradient products (input, weight) of
        as many operations each."""
        flops = self.op.flops(a)
        return flops * (3 if self.backward else 1) if flops else None

    def ndlc(self, a, device):
        model = self.op.ndlc(a)
        return ndlc_runner(model._replace(forward=self._loss(model.forward)), a, self.wrt, device)

    def numpy(self, a):
        fn = self.op.numpy_grads if self.backward else self.op.numpy
        return lambda: fn(a)

    def torch(self, a):
        return torch_runner(self._loss(self.op.torch), a, self.wrt)

    def torch_compile(self, a):
        return torch_runner(self._loss(self.op.torch), a, self.wrt, compile=True)

    def jax(self, a):
        return jax_runner(self._loss(self.op.jax), a, self.wrt)

    def _loss(self, forward):
        """`forward`, or with backward the scalar loss on its (first) output: times the op's
        cotangent, summed."""
        if not self.backward:
            return forward

        def loss(t):
            out = forward(t)
            out = out[0] if isinstance(out, tuple) else out
            return (out * t[self.op.cotangent]).sum() if self.op.cotangent else out.sum()
        return loss


def both(op):
    """The op's forward case and its forward+backward case."""
    return [OpCase(op), OpCase(op, backward=True)]
