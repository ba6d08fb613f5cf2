"""The same normalisations, softmax and losses written several ways, as users write them: a
statistic kept as (1, d) and broadcast implicitly, broadcast explicitly, or broadcast straight
from (d,); epsilon a module-level float (a runtime 0-d input) or a literal; x ** -0.5, 1 / sqrt(x)
or a division by sqrt(x); means as / n or * (1 / n); squares as x * x or x ** 2. Each builder
takes a `Spelling` and returns a function of tensors for ndl.compile."""
from dataclasses import dataclass

import ndlc as ndl

EPS = 1e-5  # read as a global: compiled as a runtime scalar, not a constant
INV_SCALE = 0.5  # likewise, a runtime scalar scaling the losses

EXPANDS = ("keepdims", "broadcast_to", "direct")
RSQRTS = ("pow", "div_sqrt", "recip_sqrt", "div_pow")


@dataclass(frozen=True)
class Spelling:
    expand: str = "keepdims"  # how a statistic meets the full shape (see `expand`)
    rsqrt: str = "pow"  # how (var + eps) ** -0.5 is written (see `normalise`)
    eps_global: bool = True  # epsilon and the loss scale read as globals, or written inline
    mean_by_product: bool = False  # s * (1 / n) instead of s / n
    square_by_power: bool = False  # xc ** 2 instead of xc * xc
    late_expand: bool = False  # the statistic expanded before the rsqrt (computed per element)


def expand(stat, shape, axis, how):
    """`stat` (reduced over `axis`) brought back to `shape`: as keepdims (the binary op that reads it
    broadcasts), reshaped and broadcast explicitly, or broadcast directly (only where `axis` leads)."""
    keep = tuple(1 if i == axis else n for i, n in enumerate(shape))
    if how == "direct" and axis == 0:
        return stat.broadcast_to(shape)
    if how == "broadcast_to":
        return stat.reshape(keep).broadcast_to(shape)
    return stat.reshape(keep)


def _eps(s):
    return EPS if s.eps_global else 1e-5


def _mean(total, n, s):
    return total * (1 / n) if s.mean_by_product else total / n


def normalise(xc, var, s, shape, axis):
    """xc / sqrt(var + eps), with var expanded to `shape` early or late, in one of RSQRTS's forms."""
    v = expand(var, shape, axis, s.expand) if s.late_expand else var
    v = v + _eps(s)
    if s.rsqrt == "pow":
        r = v ** -0.5
    elif s.rsqrt == "recip_sqrt":
        r = 1 / v.sqrt()
    elif s.rsqrt == "div_sqrt":
        r = v.sqrt()
    else:
        r = v ** 0.5
    r = r if s.late_expand else expand(r, shape, axis, s.expand)
    return xc * r if s.rsqrt in ("pow", "recip_sqrt") else xc / r


def norm(s, axis):
    """Hand-written BatchNorm (axis 0: statistics per feature over the batch) or LayerNorm (axis 1:
    per row over the features), with a per-feature scale `g` and shift `b`."""
    def forward(x, g, b):
        shape, n = x.shape, x.shape[axis]
        mu = _mean(x.sum((axis,)), n, s)
        xc = x - expand(mu, shape, axis, s.expand)
        sq = xc ** 2 if s.square_by_power else xc * xc
        var = _mean(sq.sum((axis,)), n, s)
        return normalise(xc, var, s, shape, axis) * g + b
    return forward


def softmax(s):
    """exp(z - max z) / sum(exp(z - max z)) over each row."""
    def forward(z):
        m = z.max((1,))
        e = (z - expand(m, z.shape, 1, s.expand)).exp()
        total = expand(e.sum((1,)), z.shape, 1, s.expand)
        return e * (1 / total) if s.mean_by_product else e / total
    return forward


def softmax_loss(s):
    """Mean over the batch of logsumexp(z) - z[y], the logsumexp written out, scaled by INV_SCALE."""
    def forward(z, onehot):
        n = z.shape[0]
        m = z.max((1,))
        lse = (z - expand(m, z.shape, 1, s.expand)).exp().sum((1,)).log() + m
        loss = _mean((lse - (z * onehot).sum((1,))).sum(), n, s)
        return loss * (INV_SCALE if s.eps_global else 0.5)
    return forward


def with_backward(forward):
    """A step running forward, then backward from (forward(*inputs) * c).sum() with `c` its last
    argument; it returns the gradients of the inputs."""
    def step(*args):
        *inputs, c = args
        for t in inputs:
            t.requires_grad = True
        (forward(*inputs) * c).sum().backward()
        return tuple(t.grad for t in inputs)
    return step
