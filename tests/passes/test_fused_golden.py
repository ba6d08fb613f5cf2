"""Golden text of the `fused` stage: what BatchNorm1d's training forward and an Adam update fuse
into, which kernels were merged and why the remaining boundaries are boundaries."""
import logging

import numpy as np

import ndlc as ndl


def test_batchnorm1d_training_forward():
    bn = ndl.nn.BatchNorm1d(4)
    step = ndl.compile(lambda x: bn(x))
    step(np.ones((8, 4), np.float32))
    assert step.ir("fused") == """\
program @lambda(%x, %bn.weight, %bn.bias, %bn.running_mean, %bn.running_var) -> (%19, %24, %29)
  %x: f32[8,4] input
  %bn.weight: f32[4] input
  %bn.bias: f32[4] input
  %bn.running_mean: f32[4] input
  %bn.running_var: f32[4] input
  %1: f32[4] temp
  %8: f32[4] temp
  %19: f32[8,4] output
  %24: f32[4] output
  %29: f32[4] output

kernel k0 -> %1, %24, %8, %29
  fuses: %0 summation, %1 divide_scalar, %2 reshape, %3 broadcast_to, %4 negate, %5 add, %6 power_scalar, %7 summation, %8 divide_scalar, %20 mul_scalar, %21 stop_gradient, %22 mul_scalar, %23 add, %24 stop_gradient, %25 mul_scalar, %26 stop_gradient, %27 mul_scalar, %28 add, %29 stop_gradient
  stored because: %1: used by 2 nodes; %24: graph output; %8: used by 2 nodes; %29: graph output
  recomputes: %5 add (used by 2 nodes, cost 2 <= 6)
  merged: %8 (a later phase of the same loops)
  merged: %24 (in the pass of phase 0, once per outer point)
  merged: %29 (in the pass of phase 1, once per outer point)
  loops: i0<4 | i1<8
  $0 = %x[i0 + 4*i1]
  $1 = %1[i0]
  $2 = %bn.running_mean[i0]
  $3 = %bn.running_var[i0]
  phase 0: reduce
    acc0 = add of $0
    store %1[i0] = div(acc0, 8.0)
    store %24[i0] = add(mul($2, 0.9), mul(div(acc0, 8.0), 0.1))
  phase 1: reduce
    acc0 = add of pow(add($0, neg($1)), 2.0)
    store %8[i0] = div(acc0, 8.0)
    store %29[i0] = add(mul($3, 0.9), mul(div(acc0, 8.0), 0.1))

kernel k1 -> %19
  fuses: %2 reshape, %3 broadcast_to, %4 negate, %5 add, %9 add_scalar, %10 power_scalar, %11 reshape, %12 broadcast_to, %13 divide, %14 reshape, %15 broadcast_to, %16 multiply, %17 reshape, %18 broadcast_to, %19 add
  stored because: %19: graph output
  recomputes: %5 add (used by 2 nodes, cost 2 <= 6)
  not merged into the kernel before: an elementwise pass over the inner loops of (i0<4 | i1<8) would run on 4 outer point(s): too few to share among threads
  loops: i0<8 i1<4
  $0 = %x[4*i0 + i1]
  $1 = %1[i1]
  $2 = %8[i1]
  $3 = %bn.weight[i1]
  $4 = %bn.bias[i1]
  store %19[4*i0 + i1] = add(mul(div(add($0, neg($1)), sqrt(add($2, 1e-05))), $3), $4)"""


def test_adam_update():
    w = ndl.nn.Parameter(np.ones((3, 4), np.float32))
    opt = ndl.optim.Adam([w], lr=0.01)

    def update(g):
        opt.reset_grad()
        loss = (w * g).sum()
        loss.backward()
        opt.step()
        return loss
    step = ndl.compile(update)
    step(np.ones((3, 4), np.float32))
    assert step.ir("fused") == """\
program @update(%g, %opt.params.0, %opt.t, %opt.m.0, %opt.v.0) -> (%1, %33, %10, %7, %21)
  %g: f32[3,4] input
  %opt.params.0: f32[3,4] input
  %opt.t: f32[] input
  %opt.m.0: f32[3,4] input
  %opt.v.0: f32[3,4] input
  %13: f32[] temp
  %21: f32[3,4] output
  %25: f32[] temp
  %1: f32[] output
  %33: f32[3,4] output
  %10: f32[] output
  %7: f32[3,4] output

kernel k0 -> %13, %25, %10, %1
  fuses: %8 full, %9 add_scalar, %10 stop_gradient, %11 power, %12 negate, %13 add_scalar, %22 full, %23 power, %24 negate, %25 add_scalar, %0 multiply, %1 summation
  stored because: %13: broadcast_to reads elements repeatedly; %25: broadcast_to reads elements repeatedly; %10: graph output; %1: graph output
  recomputes: %10 stop_gradient (used by 3 nodes, cost 1 <= 6)
  merged: %25 (in the pass of phase 0)
  merged: %1 (a later phase of the same loops, once per outer point)
  merged: %10 (in the pass of phase 0, once per outer point)
  loops: (scalar) | i0<3 i1<4
  $0 = %opt.t[0]
  $1 = %opt.params.0[4*i0 + i1]
  $2 = %g[4*i0 + i1]
  phase 0: per outer point
    store %13[0] = add(neg(pow(cast(0.9, f32), add($0, 1.0))), 1.0)
    store %25[0] = add(neg(pow(cast(0.999, f32), add($0, 1.0))), 1.0)
    store %10[0] = add($0, 1.0)
  phase 1: reduce
    acc0 = add of mul($1, $2)
    store %1[0] = acc0

kernel k1 -> %21, %7, %33
  fuses: %17 mul_scalar, %4 stop_gradient, %18 power_scalar, %19 mul_scalar, %20 add, %21 stop_gradient, %3 mul_scalar, %5 mul_scalar, %6 add, %7 stop_gradient, %2 stop_gradient, %14 broadcast_to, %15 divide, %16 mul_scalar, %26 broadcast_to, %27 divide, %28 power_scalar, %29 add_scalar, %30 divide, %31 negate, %32 add, %33 stop_gradient
  stored because: %21: used by 2 nodes; %7: graph output; %33: graph output
  recomputes: %7 stop_gradient (used by 2 nodes, cost 3 <= 6)
  merged: %7 (in the pass of phase 0)
  merged: %33 (in the pass of phase 0)
  not merged into the kernel before: its loops (i0<3 i1<4) differ from (scalar)'s loops
  loops: i0<3 i1<4
  $0 = %opt.v.0[4*i0 + i1]
  $1 = %g[4*i0 + i1]
  $2 = %opt.m.0[4*i0 + i1]
  $3 = %opt.params.0[4*i0 + i1]
  $4 = %13[0]
  $5 = %25[0]
  store %21[4*i0 + i1] = add(mul($0, 0.999), mul(pow($1, 2.0), 0.0010000000000000009))
  store %7[4*i0 + i1] = add(mul($2, 0.9), mul($1, 0.09999999999999998))
  store %33[4*i0 + i1] = add($3, neg(div(mul(div(add(mul($2, 0.9), mul($1, 0.09999999999999998)), $4), 0.01), add(sqrt(div(add(mul($0, 0.999), mul(pow($1, 2.0), 0.0010000000000000009)), $5)), 1e-08))))"""


def test_ndlc_log_fusion_logs_every_decision(capfd, caplog):
    from ndlc.logconfig import configure
    logger = logging.getLogger("ndlc.fusion")
    configure("fusion")
    try:
        ln = ndl.nn.LayerNorm1d(32)
        ndl.compile(lambda x: ln(x))(np.ones((20, 32), np.float32))
    finally:
        logger.handlers.clear()
        logger.propagate, logger.level = True, logging.NOTSET
    err = capfd.readouterr().err
    assert "ndlc.fusion: lambda: %13 joins the kernel of %3: a later phase of the same loops\n" in err
    assert "%19 joins the kernel of %3, %13: a later phase of the same loops, over the inner loops" in err
    configure("nonsense")
    assert "NDLC_LOG names no logger 'nonsense'" in caplog.text
