"""needle's optimisers (`ndl.optim`) with needle's update rules (DESIGN §8).

Updates run on detached data (`.data`), so a step records no history, and write each parameter
back through `param.data = ...`, keeping the Parameter object (and its dtype) the same. All state
(momentum, Adam's m, v and step count) is Tensors made up front, so a traced step sees it as the
program's persistent state rather than as constants. Each parameter is written before the
optimizer's own slots: a trace that refuses the write (unknown state) has changed nothing yet."""
import math
import numbers

import numpy as np

from ..errors import StateDictError
from .init import zeros, zeros_like
from .nn.module import load_tensor, origin_of
from .tensor import Tensor


class Optimizer:
    """Holds the parameters; `reset_grad()` clears their gradients. `hyperparameters`: the
    attributes holding numbers (lr, ...) that a compiled step reads as runtime arguments, so
    changing one (a schedule) does not recompile; while tracing, each is a 0-d Tensor."""

    hyperparameters = ()
    below_one = ()  # hyperparameters in [0, 1) (momenta, betas); the others in [0, inf)

    def __init__(self, params):
        self.params = list(params)

    def __setattr__(self, name, value):
        """A hyperparameter set later (a schedule: `opt.lr = ...`) is checked as the constructor
        checks it, so eager and compiled steps refuse the same values by name instead of training
        on them or failing inside the update; a 0-d numpy array is taken as its number."""
        if name in self.hyperparameters:
            if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
                value = value[()]
            self._check({name: value})
        object.__setattr__(self, name, value)

    def _check(self, values):
        """Refuse hyperparameters PyTorch's optimizers refuse (lr, eps and weight decay >= 0, momenta
        and betas in [0, 1)), and values that are no number: either would train on NaN or fail
        inside the first step. A 0-d Tensor (a traced schedule) is taken as it is."""
        for name, value in values.items():
            if isinstance(value, Tensor):
                continue
            high = 1 if name in self.below_one else math.inf
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < high:
                raise ValueError(f"{type(self).__name__}: {name} must be a number in [0, {high}), got {value!r}")

    def reset_grad(self):
        for p in self.params:
            p.grad = None

    # state_dict name -> attribute: `slots` hold {parameter index: Tensor}, `counters` one Tensor
    slots = {}
    counters = {}

    def state_dict(self):
        """PyTorch's layout, copies of the tensors: {"state": {index: {slot: Tensor}}, "param_groups":
        [{hyperparameter: value, "params": [indices]}]}, plus the counters (Adam's "step")."""
        state = {i: {name: _copy(getattr(self, attr)[i]) for name, attr in self.slots.items()}
                 for i in range(len(self.params))}
        group = {name: getattr(self, name) for name in self.hyperparameters}
        group["params"] = list(range(len(self.params)))
        counters = {name: _copy(getattr(self, attr)) for name, attr in self.counters.items()}
        return {"state": state, "param_groups": [group], **counters}

    def load_state_dict(self, state_dict):
        """Set the slots, counters and hyperparameters from `state_dict` (of an optimizer of the
        same kind over parameters of the same shapes), in place, so compiled steps keep running."""
        owner = type(self).__name__
        if not isinstance(state_dict, dict):
            raise StateDictError(f"{owner}.load_state_dict: the state dict is a {type(state_dict).__name__}, "
                                 f"not a dict (of an optimizer's state_dict())")
        missing = [key for key in ("state", "param_groups", *self.counters) if key not in state_dict]
        if missing:
            raise StateDictError(f"{owner}.load_state_dict: missing keys {missing}{origin_of(state_dict)}")
        groups, state = state_dict["param_groups"], state_dict["state"]
        malformed = [] if isinstance(groups, (list, tuple)) and all(isinstance(g, dict) for g in groups) \
            else ["param_groups is not a list of dicts"]
        malformed += [] if isinstance(state, dict) and all(isinstance(s, dict) for s in state.values()) \
            else ["state is not a dict of dicts"]
        if malformed:
            raise StateDictError(f"{owner}.load_state_dict: {'; '.join(malformed)}{origin_of(state_dict)}")
        if len(groups) != 1 or len(groups[0].get("params", ())) != len(self.params):
            sizes = [len(g.get("params", ())) for g in groups]
            raise StateDictError(f"{owner}.load_state_dict: the state dict has parameter groups of "
                                 f"{sizes} parameters, this optimizer one of {len(self.params)}{origin_of(state_dict)}")
        wanted = [f"param_groups[0][{name!r}]" for name in self.hyperparameters if name not in groups[0]]
        wanted += [f"state[{i}][{name!r}]" for i in range(len(self.params)) for name in self.slots
                   if name not in state.get(i, {})]
        if wanted:
            raise StateDictError(f"{owner}.load_state_dict: missing {', '.join(wanted)}{origin_of(state_dict)}")
        try:
            self._check({name: groups[0][name] for name in self.hyperparameters})
        except ValueError as e:
            raise StateDictError(f"{owner}.load_state_dict: param_groups[0]: {e}{origin_of(state_dict)}") from None
        for i in range(len(self.params)):
            for name, attr in self.slots.items():
                load_tensor(getattr(self, attr)[i], state[i][name], f"state[{i}][{name!r}]", owner,
                            state_dict, "optimizer")
        for name, attr in self.counters.items():
            load_tensor(getattr(self, attr), state_dict[name], repr(name), owner, state_dict, "optimizer")
        for name in self.hyperparameters:
            setattr(self, name, groups[0][name])

    def _decayed_grad(self, param, weight_decay):
        """The gradient plus L2 weight decay, detached from any history (a traced decay is a
        runtime Tensor, added even when it is 0 now)."""
        if not isinstance(weight_decay, Tensor) and weight_decay == 0:
            return param.grad.data
        return param.grad.data + weight_decay * param.data


class SGD(Optimizer):
    """u = momentum*u + (1-momentum)*(grad + wd*w); w -= lr*u (needle's momentum form)."""

    hyperparameters = ("lr", "momentum", "weight_decay")
    below_one = ("momentum",)
    slots = {"momentum_buffer": "u"}

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self._check({"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
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

    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay")
    below_one = ("beta1", "beta2")
    slots = {"exp_avg": "m", "exp_avg_sq": "v"}
    counters = {"step": "t"}

    def __init__(self, params, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self._check({"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay})
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


def _copy(tensor):
    return Tensor.make_const(tensor.numpy().copy())


__all__ = ["Adam", "Optimizer", "SGD"]
