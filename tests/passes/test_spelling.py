"""Fusion does not depend on how a program is spelled: hand-written normalisations fuse into as
many kernels as the modules, and normalisations, softmax and losses rewritten several ways
(spellings.py) compile to the same number of kernels and the same results, to rounding."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ndlc as ndl
from ndlc.ir import parse
from ndlc.passes.fusion import fuse
from spellings import EXPANDS, RSQRTS, Spelling, norm, softmax, softmax_loss, with_backward

N, D = 64, 48  # at least MIN_OUTER_POINTS rows and features: statistics and outputs share a kernel
FAMILIES = {"batchnorm": lambda s: norm(s, 0), "layernorm": lambda s: norm(s, 1),
            "softmax": softmax, "softmax_loss": softmax_loss}


def arguments(family, backward):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, D)).astype(np.float32)
    if family in ("batchnorm", "layernorm"):
        args = [x, rng.standard_normal(D).astype(np.float32), rng.standard_normal(D).astype(np.float32)]
    elif family == "softmax":
        args = [x]
    else:
        args = [x, np.eye(D, dtype=np.float32)[rng.integers(0, D, N)]]
    if backward:
        args.append(np.float32(0.5) if family == "softmax_loss" else rng.standard_normal((N, D)).astype(np.float32))
    return args


def compiled(family, spelling, backward):
    """(kernels in the `fused` stage, results) of `family` written as `spelling`."""
    forward = FAMILIES[family](spelling)
    step = ndl.compile(with_backward(forward) if backward else forward)
    results = step(*arguments(family, backward))
    results = results if isinstance(results, tuple) else (results,)
    return step.ir("fused").count("\nkernel "), [r.numpy() for r in results]


def eager(family, spelling, backward):
    forward = FAMILIES[family](spelling)
    results = (with_backward(forward) if backward else forward)(
        *[ndl.Tensor(a, requires_grad=False) for a in arguments(family, backward)])
    return [r.numpy() for r in (results if isinstance(results, tuple) else (results,))]


def module_kernels(module, backward):
    norm_module = module(D)

    def step(x, c):
        if not backward:
            return norm_module(x)
        x.requires_grad = True
        (norm_module(x) * c).sum().backward()
        return x.grad, norm_module.weight.grad, norm_module.bias.grad
    compiled_step = ndl.compile(step)
    x, _, _, c = arguments("batchnorm", backward=True)
    compiled_step(x, c)
    return compiled_step.ir("fused").count("\nkernel ")


@pytest.mark.parametrize("family,module", [("batchnorm", ndl.nn.BatchNorm1d), ("layernorm", ndl.nn.LayerNorm1d)])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
def test_hand_written_normalisations_fuse_like_the_modules(family, module, backward):
    """Issue 20's BatchNorm (statistics reshaped to (1, d), EPS a module-level float, ** -0.5) and
    LayerNorm: as many kernels as BatchNorm1d / LayerNorm1d (forward 1, forward+backward <= 2)."""
    kernels, results = compiled(family, Spelling(), backward)
    assert kernels == module_kernels(module, backward) <= (2 if backward else 1)
    for got, want in zip(results, eager(family, Spelling(), backward)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_runtime_scalar_arithmetic_is_recomputed_where_read_not_stored():
    """A computed 0-d value (here from a runtime scalar %s) is loop-invariant: each kernel reading
    it computes it, as it would a folded constant, instead of a one-element kernel before them."""
    program = fuse(parse("""
graph @scaled(%x: f32[4,3], %s: f32[]) {
  %0 = add_scalar(%s, scalar=1.0) : f32[]
  %1 = power_scalar(%0, scalar=-0.5) : f32[]
  %2 = exp(%1) : f32[]
  %3 = broadcast_to(%2, shape=(4, 3)) : f32[4,3]
  %4 = multiply(%x, %3) : f32[4,3]
  %5 = summation(%x, axes=(1,)) : f32[4]
  %6 = broadcast_to(%2, shape=(4,)) : f32[4]
  %7 = add(%5, %6) : f32[4]
  return %4, %7
}"""))
    assert [str(k) for k in program.kernels] == ["""\
kernel k0 -> %4
  fuses: %0 add_scalar, %1 power_scalar, %2 exp, %3 broadcast_to, %4 multiply
  stored because: %4: graph output
  recomputes: %2 exp (read by broadcast_to, one loop-invariant element (the compiler hoists it out of the loops))
  loops: i0<4 i1<3
  $0 = %x[3*i0 + i1]
  $1 = %s[0]
  store %4[3*i0 + i1] = mul($0, exp(div(1, sqrt(add($1, 1.0)))))""", """\
kernel k1 -> %7
  fuses: %5 summation, %0 add_scalar, %1 power_scalar, %2 exp, %6 broadcast_to, %7 add
  stored because: %7: graph output
  recomputes: %2 exp (read by broadcast_to, one loop-invariant element (the compiler hoists it out of the loops))
  not merged into the kernel before: an elementwise pass over the inner loops of (i0<4 | i1<3) would run on 4 outer point(s): too few to share among threads
  loops: i0<4 | i1<3
  $0 = %x[3*i0 + i1]
  $1 = %s[0]
  phase 0: reduce
    acc0 = add of $0
    store %7[i0] = add(acc0, exp(div(1, sqrt(add($1, 1.0)))))"""]


_REFERENCE = {}  # (family, backward) -> compiled (kernels, results) of the plain spelling, checked against eager


def reference(family, backward):
    if (family, backward) not in _REFERENCE:
        kernels, results = compiled(family, Spelling(), backward)
        for got, want in zip(results, eager(family, Spelling(), backward)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        _REFERENCE[family, backward] = kernels, results
    return _REFERENCE[family, backward]


spellings = st.builds(Spelling, expand=st.sampled_from(EXPANDS), rsqrt=st.sampled_from(RSQRTS),
                      eps_global=st.booleans(), mean_by_product=st.booleans(),
                      square_by_power=st.booleans(), late_expand=st.booleans())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.sampled_from(sorted(FAMILIES)), backward=st.booleans(), spelling=spellings)
def test_every_spelling_fuses_into_the_same_kernels_with_the_same_results(family, backward, spelling):
    kernels, results = compiled(family, spelling, backward)
    want_kernels, want = reference(family, backward)
    assert kernels == want_kernels, f"{family} spelled {spelling}"
    for got, expected in zip(results, want):
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)
