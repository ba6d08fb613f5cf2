"""JAX's contender: a case's forward (or jax.grad of it) under jax.jit. jax.jit has no eager
fallback: a function it cannot trace raises, and the table shows why (n/a), so no check of the
kind torch_runner.py makes is needed."""


def jax_runner(fn, a, wrt):
    """Calls of `fn(arrays by name)` under jax.jit (of jax.grad over `wrt` when given), waited for."""
    import jax
    import jax.numpy as jnp
    names = list(a)
    args = [jnp.asarray(a[name]) for name in names]
    call = _positional(fn, names)
    if wrt:
        call = jax.grad(call, argnums=tuple(names.index(name) for name in wrt))
    call = jax.jit(call)
    return lambda: jax.block_until_ready(call(*args))


def _positional(fn, names):
    """`fn` of a dict of named values, as a function of those values in `names` order."""
    return lambda *values: fn(dict(zip(names, values)))
