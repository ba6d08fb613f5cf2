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
    args = [a[name] for name in inputs]
    return lambda: compiled(*args)
