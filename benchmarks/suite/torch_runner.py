"""PyTorch's contenders: a case's forward (or torch.autograd.grad of it), eager or through
torch.compile. A torch.compile time is only a torch.compile time if dynamo compiled the function:
each case compiles a fresh function after `torch._dynamo.reset()` (a shared function would hit
dynamo's recompile limit of 8 after eight cases and run eagerly from then on, silently), and
`Compiled.fallback()` reads dynamo's counters to say when it ran eagerly anyway."""


def torch_runner(fn, a, wrt, compile=False):
    """Calls of `fn(tensors by name)` in PyTorch, eager or through torch.compile (a Compiled); with
    `wrt`, the gradients of those tensors (torch.autograd.grad of fn's output)."""
    import torch
    names = list(a)
    tensors = [torch.from_numpy(a[name]) for name in names]
    targets = [tensors[names.index(name)].requires_grad_() for name in wrt]

    def case(*values):
        return fn(dict(zip(names, values)))
    call = compiled(case) if compile else case
    if not wrt:
        return Calls(call, lambda: call(*tensors))
    return Calls(call, lambda: torch.autograd.grad(call(*tensors), targets))


class Calls:
    """A contender's timed callable, which answers `fallback()` for the function it calls."""

    def __init__(self, function, call):
        self.function, self.call = function, call

    def __call__(self):
        return self.call()

    def fallback(self):
        return self.function.fallback() if isinstance(self.function, Compiled) else None

    def graph_breaks(self):
        return self.function.graph_breaks() if isinstance(self.function, Compiled) else []


def compiled(fn):
    """`fn` through torch.compile, with dynamo's caches and counters reset first so that what the
    counters say afterwards is about `fn` alone (one contender and case at a time)."""
    import torch
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    return Compiled(torch.compile(fn))


class Compiled:
    """A function torch.compile wraps; `fallback()` says why its calls so far did not run compiled
    code (dynamo's recompile limit hit, or no graph compiled at all), or None."""

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)

    def fallback(self):
        from torch._dynamo.utils import counters
        limit = [reason for reason in counters["unimplemented"] if "recompile limit" in reason.lower()]
        if limit:
            return "dynamo hit its recompile limit and ran the function eagerly"
        if not counters["stats"]["unique_graphs"]:
            return "dynamo compiled no graph: the function ran eagerly"
        return None

    def graph_breaks(self):
        """The first line of each reason dynamo broke the graph (the pieces still run compiled)."""
        from torch._dynamo.utils import counters
        return [reason.splitlines()[0] for reason in counters["graph_break"]]
