"""The ops the sweep (benchmarks/sweep.py) adds to the bench's: softmax, logsumexp, reductions over
one axis, batched and broadcast matrix products, Linear with an activation, a transcendental chain
with a broadcast row, BatchNorm2d, pooling, and optimizer steps over many small parameters. Each
has its forward in ndlc and PyTorch; the sweep checks ndlc against PyTorch run in float64."""
import numpy as np

import ndlc as ndl
from ndlc.frontend.nn.transformer import softmax
from suite.cases.base import EPS, MOMENTUM, Case, NdlcModel, Op, _hold, normal
from suite.cases.norms import BatchNorm
from suite.ndlc_runner import Calls as NdlcCalls
from suite.torch_runner import Calls, compiled

ACTIVATIONS = {"relu": (ndl.relu, "relu"), "tanh": (ndl.ops.tanh, "tanh"), "sigmoid": (ndl.ops.sigmoid, "sigmoid")}


class Unary(Op):
    """An op of one (N, D) or higher-rank input `x`, differentiated with respect to it through a
    drawn cotangent (a softmax's plain sum would have a zero gradient)."""
    wrt = ("x",)
    cotangent = "c"

    def arrays(self, rng, shape):
        return {"x": normal(rng, *shape, scale=2.0), "c": normal(rng, *self.result_shape(shape))}

    def result_shape(self, shape):
        """The op's output shape for an input of `shape`: one axis reduced, the last by default."""
        return shape[:-1]


class Softmax(Unary):
    """softmax over the last axis, spelled as ndlc's attention spells it (max-shifted exp over its
    sum)."""
    label = "softmax"

    def result_shape(self, shape):
        return shape

    def ndlc(self, a):
        return NdlcModel(lambda t: softmax(t["x"]))

    def torch(self, t):
        import torch
        return torch.softmax(t["x"], -1)


class LogSumExp(Unary):
    """logsumexp over the last axis (ndl.ops.logsumexp)."""
    label = "logsumexp"

    def ndlc(self, a):
        return NdlcModel(lambda t: ndl.ops.logsumexp(t["x"], (t["x"].ndim - 1,)))

    def torch(self, t):
        import torch
        return torch.logsumexp(t["x"], -1)


class Reduce(Unary):
    """A sum or max over one axis of `x`."""

    def __init__(self, full, quick, kind, axis):
        super().__init__(full, quick)
        self.kind, self.axis = kind, axis
        self.label = f"{kind} over axis {axis}"

    def result_shape(self, shape):
        return shape[:self.axis] + shape[self.axis + 1:]

    def ndlc(self, a):
        return NdlcModel(lambda t: getattr(t["x"], self.kind)((self.axis,)))

    def torch(self, t):
        return t["x"].sum(self.axis) if self.kind == "sum" else t["x"].amax(self.axis)


class Product(Op):
    """a @ b for (…, M, K) `a` and (…, K, N) `b` given as `shape` = (a's shape, b's shape): batched,
    broadcast over a batch, one row or one column."""
    label = "matmul"
    wrt = ("a", "b")

    def size(self, shape):
        return " @ ".join("x".join(map(str, s)) for s in shape)

    def arrays(self, rng, shape):
        return {"a": normal(rng, *shape[0]), "b": normal(rng, *shape[1])}

    def ndlc(self, a):
        return NdlcModel(self.forward)

    def torch(self, t):
        return self.forward(t)

    def forward(self, t):
        """The product, for ndlc Tensors and torch tensors alike."""
        return t["a"] @ t["b"]

    def flops(self, a):
        return 2 * int(np.prod(np.broadcast_shapes(a["a"].shape[:-1] + (1,), a["b"].shape[:-2] + (1, 1)))) \
            * a["a"].shape[-1] * a["b"].shape[-1]


class LinearAct(Op):
    """nn.Linear (weight (in, out), bias (1, out)) then an activation, on an (N, in) batch: `shape`
    = (N, in, out)."""
    wrt = ("x", "weight", "bias")

    def __init__(self, full, quick, activation):
        super().__init__(full, quick)
        self.activation = activation
        self.label = f"Linear+{activation}"

    def arrays(self, rng, shape):
        n, fan_in, out = shape
        return {"x": normal(rng, n, fan_in), "weight": normal(rng, fan_in, out, scale=fan_in ** -0.5),
                "bias": normal(rng, 1, out, scale=0.1)}

    def ndlc(self, a):
        fan_in, out = a["weight"].shape
        linear = ndl.nn.Linear(fan_in, out)
        act = ACTIVATIONS[self.activation][0]
        return NdlcModel(lambda t: act(linear(t["x"])), [linear], _hold(linear, a, ("weight", "bias")))

    def torch(self, t):
        import torch
        return getattr(torch, ACTIVATIONS[self.activation][1])(t["x"] @ t["weight"] + t["bias"])

    def flops(self, a):
        return 2 * a["x"].shape[0] * a["weight"].shape[0] * a["weight"].shape[1]


class TransChain(Op):
    """tanh(x) * sigmoid(y * row) + exp(-x*x): transcendental, with a (1, D) row broadcast over
    (N, D)."""
    label = "tanh(x)*sigmoid(y*row)+exp(-x*x)"
    wrt = ("x", "y", "row")

    def arrays(self, rng, shape):
        return {"x": normal(rng, *shape), "y": normal(rng, *shape), "row": normal(rng, 1, shape[1])}

    def ndlc(self, a):
        return NdlcModel(lambda t: ndl.ops.tanh(t["x"]) * ndl.ops.sigmoid(t["y"] * t["row"])
                         + ndl.ops.exp(-(t["x"] * t["x"])))

    def torch(self, t):
        import torch
        return torch.tanh(t["x"]) * torch.sigmoid(t["y"] * t["row"]) + torch.exp(-(t["x"] * t["x"]))

    def traffic(self, a):
        return 3 * a["x"].nbytes


class BatchNorm2d(BatchNorm):
    """BatchNorm2d in training mode on an NCHW batch, `shape` = (N, C, H, W): statistics per channel
    over N, H and W, running statistics moved on."""
    label = "BatchNorm2d train"
    axis = (0, 2, 3)

    def arrays(self, rng, shape):
        c = shape[1]
        return {"x": normal(rng, *shape), "weight": 1 + normal(rng, c, scale=0.1),
                "bias": normal(rng, c, scale=0.1), "c": normal(rng, *shape),
                "running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32)}

    def ndlc(self, a):
        bn = ndl.nn.BatchNorm2d(a["x"].shape[1], eps=EPS, momentum=MOMENTUM)
        held = _hold(bn, a, ("weight", "bias"), ("running_mean", "running_var"))
        return NdlcModel(lambda t: (bn(t["x"]), bn.running_mean, bn.running_var), [bn], held)


class Pool(Op):
    """Max or average pooling of an NCHW batch over k x k windows at `stride`: `shape` = (N, C, H, W)."""
    wrt = ("x",)
    cotangent = "c"

    def __init__(self, full, quick, kind, k, stride):
        super().__init__(full, quick)
        self.kind, self.k, self.stride = kind, k, stride
        self.label = f"{kind}_pool k{k} stride {stride}"

    def arrays(self, rng, shape):
        n, c, h, w = shape
        out = [(d - self.k) // self.stride + 1 for d in (h, w)]
        return {"x": normal(rng, *shape), "c": normal(rng, n, c, *out)}

    def ndlc(self, a):
        pool = (ndl.nn.MaxPool2d if self.kind == "max" else ndl.nn.AvgPool2d)(self.k, self.stride)
        return NdlcModel(lambda t: pool(t["x"]), [pool])

    def torch(self, t):
        import torch.nn.functional as F
        return getattr(F, f"{self.kind}_pool2d")(t["x"], self.k, self.stride)


class OptimizerSteps(Case):
    """One optimizer update (Adam lr 1e-3, or SGD lr 0.1 with weight decay, no momentum: where
    needle's and PyTorch's rules agree) of many small parameters, their gradients given (loss =
    Σ (w_i * g_i).sum(), so w_i.grad == g_i). Parameters start small (1e-3) so that the checked
    parameters show the update."""

    def __init__(self, kind, shapes, quick_shapes):
        self.kind, self.full, self.quick = kind, shapes, quick_shapes

    def name(self, quick):
        shapes = self.quick if quick else self.full
        size = sum(int(np.prod(s)) for s in shapes)
        return f"{self.kind} step, {len(shapes)} params, {size} floats"

    def arrays(self, rng, quick):
        shapes = self.quick if quick else self.full
        return {**{f"w{i}": normal(rng, *s, scale=1e-3) for i, s in enumerate(shapes)},
                **{f"g{i}": normal(rng, *s) for i, s in enumerate(shapes)}}

    def count(self, a):
        return sum(name.startswith("w") for name in a)

    def ndlc(self, a, device):
        params = [ndl.nn.Parameter(a[f"w{i}"]) for i in range(self.count(a))]
        opt = ndl.optim.Adam(params, lr=1e-3) if self.kind == "Adam" else \
            ndl.optim.SGD(params, lr=0.1, weight_decay=1e-2)

        def step(*grads):
            opt.reset_grad()
            loss = sum((w * g).sum() for w, g in zip(params, grads))
            loss.backward()
            opt.step()
            return loss
        compiled_step = ndl.compile(step, device=device, state=[*params, opt])
        return NdlcCalls(compiled_step, [a[f"g{i}"] for i in range(len(params))], result=lambda loss: tuple(params))

    def torch(self, a, compile=False):
        """PyTorch's own optimizer (its default implementation on the CPU), eager or compiled."""
        import torch
        params = [torch.from_numpy(a[f"w{i}"]).requires_grad_() for i in range(self.count(a))]
        grads = [torch.from_numpy(a[f"g{i}"]) for i in range(len(params))]
        opt = torch.optim.Adam(params, lr=1e-3) if self.kind == "Adam" else \
            torch.optim.SGD(params, lr=0.1, weight_decay=1e-2)
        update = compiled(opt.step) if compile else opt.step

        def step():
            for w, g in zip(params, grads):
                w.grad = g
            update()
            return tuple(params)
        return Calls(update, step)

    def torch_compile(self, a):
        return self.torch(a, compile=True)
