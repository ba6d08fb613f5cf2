"""ndlc's contender: a case's forward (and its gradients) compiled by ndl.compile."""
import ndlc as ndl


def ndlc_runner(model, a, wrt, device):
    """Calls of `model.forward` compiled by ndl.compile (returning the gradients of `wrt` when
    there are any: the forward is then the loss)."""
    inputs = [name for name in a if name not in model.held]

    def step(*batch):
        t = {**dict(zip(inputs, batch)), **model.held}
        for name in wrt:
            t[name].requires_grad = True
        out = model.forward(t)
        if not wrt:
            return out
        out.backward()
        return tuple(t[name].grad for name in wrt)

    compiled = ndl.compile(step, device=device, state=model.modules)
    return Calls(compiled, [a[name] for name in inputs])


class Calls:
    """ndlc's timed callable: a compiled function on fixed arguments (its result passed through
    `result` where the case checks something else, such as the updated parameter); `kernels()`
    counts the kernels of the program it ran, for the table."""

    def __init__(self, compiled, args, result=None):
        self.compiled, self.args, self.result = compiled, args, result

    def __call__(self):
        out = self.compiled(*self.args)
        return self.result(out) if self.result else out

    def kernels(self):
        return sum(line.startswith("kernel ") for line in self.compiled.ir("fused").splitlines())
