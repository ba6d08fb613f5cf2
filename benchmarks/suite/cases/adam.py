"""One Adam update of one parameter, in each framework's own optimizer."""
import numpy as np

import mlp_step
import ndlc as ndl
from suite.cases.base import LR, Case, normal
from suite.ndlc_runner import Calls as NdlcCalls
from suite.torch_runner import Calls, compiled


class AdamStep(Case):
    """One Adam update (needle's: bias-corrected, eps outside the root, lr 1e-3) of one parameter,
    the gradient given (loss = (w*g).sum(), so w.grad == g). The parameter starts at zero, so the
    checked result is the update itself."""

    def __init__(self, full, quick):
        self.full, self.quick = full, quick

    def name(self, quick):
        return f"Adam step {'x'.join(map(str, self.quick if quick else self.full))}"

    def arrays(self, rng, quick):
        shape = self.quick if quick else self.full
        return {"w": np.zeros(shape, np.float32), "g": normal(rng, *shape)}

    def ndlc(self, a, device):
        w = ndl.nn.Parameter(a["w"])
        opt = ndl.optim.Adam([w], lr=LR)

        def adam_step(g):
            opt.reset_grad()
            loss = (w * g).sum()
            loss.backward()
            opt.step()
            return loss
        step = ndl.compile(adam_step, device=device, state=[w, opt])
        return NdlcCalls(step, [a["g"]], result=lambda loss: w)

    def numpy(self, a):
        w, g = a["w"], a["g"]
        m, v, t = np.zeros_like(w), np.zeros_like(w), [0]

        def step():
            t[0] += 1
            mlp_step.adam_update(w, g, m, v, t[0], lr=LR)
            return w
        return step

    def torch(self, a, compile=False):
        """PyTorch's Adam (same rule), its step eager or through torch.compile."""
        import torch
        w, g = torch.from_numpy(a["w"]).requires_grad_(), torch.from_numpy(a["g"])
        opt = torch.optim.Adam([w], lr=LR)
        update = compiled(opt.step) if compile else opt.step

        def step():
            w.grad = g
            update()
            return w
        return Calls(update, step)

    def torch_compile(self, a):
        return self.torch(a, compile=True)

    def jax(self, a):
        import jax
        import jax.numpy as jnp

        @jax.jit
        def update(w, m, v, t, g):
            m, v, t = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g, t + 1
            return w - LR * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)) ** 0.5 + 1e-8), m, v, t
        w, g = jnp.asarray(a["w"]), jnp.asarray(a["g"])
        state = [w, jnp.zeros_like(w), jnp.zeros_like(w), jnp.float32(0)]

        def step():
            state[:] = jax.block_until_ready(update(*state, g))
            return state[0]
        return step
