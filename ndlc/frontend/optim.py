"""needle's optimisers (`ndl.optim`) with needle's update rules (DESIGN §8).

Updates run on detached data (`.data`), so a step records no history, and write each parameter
back through `param.data = ...`, keeping the Parameter object (and its dtype) the same. All state
(momentum, Adam's m, v and step count) is Tensors made up front, so a traced step sees it as the
program's persistent state rather than as constants. Each parameter is written before the
optimizer's own slots: a trace that refuses the write (unknown state) has changed nothing yet."""
from .init import zeros, zeros_like


class Optimizer:
    """Holds the parameters; `reset_grad()` clears their gradients."""

    def __init__(self, params):
        self.params = list(params)

    def reset_grad(self):
        for p in self.params:
            p.grad = None

    def _decayed_grad(self, param, weight_decay):
        """The gradient plus L2 weight decay, detached from any history."""
        if weight_decay == 0:
            return param.grad.data
        return param.grad.data + weight_decay * param.data


class SGD(Optimizer):
    """u = momentum*u + (1-momentum)*(grad + wd*w); w -= lr*u (needle's momentum form)."""

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.u = {i: zeros_like(p) for i, p in enumerate(self.params)}

    def step(self):
        for i, param in enumerate(self.params):
            if param.grad is None:
                continue
            grad = self._decayed_grad(param, self.weight_decay)
            u = (self.momentum * self.u[i] + (1 - self.momentum) * grad).data
            param.data = param.data - self.lr * u
            self.u[i] = u


class Adam(Optimizer):
    """Adam with bias correction and L2 weight decay folded into the gradient (needle's)."""

    def __init__(self, params, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay = weight_decay
        self.t = zeros(dtype="float32")
        self.m = {i: zeros_like(p) for i, p in enumerate(self.params)}
        self.v = {i: zeros_like(p) for i, p in enumerate(self.params)}

    def step(self):
        t = (self.t + 1).data
        b1, b2 = self.beta1, self.beta2
        for i, param in enumerate(self.params):
            if param.grad is None:
                continue
            grad = self._decayed_grad(param, self.weight_decay)
            m = (b1 * self.m[i] + (1 - b1) * grad).data
            v = (b2 * self.v[i] + (1 - b2) * grad ** 2).data
            m_hat = m / (1 - b1 ** t)
            v_hat = v / (1 - b2 ** t)
            param.data = param.data - self.lr * m_hat / (v_hat ** 0.5 + self.eps)
            self.m[i], self.v[i] = m, v
        self.t = t


__all__ = ["Adam", "Optimizer", "SGD"]
