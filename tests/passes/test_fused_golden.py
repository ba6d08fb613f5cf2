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
program @lambda(%x, %bn.weight, %bn.bias, %bn.running_mean, %bn.running_var) -> (%19, new %bn.running_mean = %24, new %bn.running_var = %29)
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
program @update(%g, %opt.lr, %opt.beta1, %opt.beta2, %opt.eps, %opt.weight_decay, %opt.params.0, %opt.t, %opt.m.0, %opt.v.0) -> (%1, new %opt.params.0 = %44, new %opt.t = %17, new %opt.m.0 = %15, new %opt.v.0 = %32)
  %g: f32[3,4] input
  %opt.lr: f32[] input
  %opt.beta1: f32[] input
  %opt.beta2: f32[] input
  %opt.eps: f32[] input
  %opt.weight_decay: f32[] input
  %opt.params.0: f32[3,4] input
  %opt.t: f32[] input
  %opt.m.0: f32[3,4] input
  %opt.v.0: f32[3,4] input
  %15: f32[3,4] output
  %20: f32[] temp
  %32: f32[3,4] output
  %35: f32[] temp
  %1: f32[] output
  %44: f32[3,4] output
  %17: f32[] output

kernel k0 -> %20, %35, %17, %1
  fuses: %16 add_scalar, %17 stop_gradient, %18 power, %19 negate, %20 add_scalar, %33 power, %34 negate, %35 add_scalar, %0 multiply, %1 summation
  stored because: %20: broadcast_to reads elements repeatedly; %35: broadcast_to reads elements repeatedly; %17: graph output; %1: graph output
  recomputes: %17 stop_gradient (used by 3 nodes, cost 1 <= 6)
  merged: %35 (in the pass of phase 0)
  merged: %17 (in the pass of phase 0)
  merged: %1 (a later phase of the same loops, once per outer point)
  loops: (scalar) | i0<3 i1<4
  $0 = %opt.beta1[0]
  $1 = %opt.t[0]
  $2 = %opt.beta2[0]
  $3 = %opt.params.0[4*i0 + i1]
  $4 = %g[4*i0 + i1]
  phase 0: per outer point
    store %20[0] = add(neg(pow($0, add($1, 1.0))), 1.0)
    store %35[0] = add(neg(pow($2, add($1, 1.0))), 1.0)
    store %17[0] = add($1, 1.0)
  phase 1: reduce
    acc0 = add of mul($3, $4)
    store %1[0] = acc0

kernel k1 -> %15, %32, %44
  fuses: %4 broadcast_to, %5 multiply, %6 negate, %7 add_scalar, %8 broadcast_to, %9 stop_gradient, %10 broadcast_to, %2 stop_gradient, %11 multiply, %12 add, %13 multiply, %14 add, %15 stop_gradient, %24 broadcast_to, %25 multiply, %26 negate, %27 add_scalar, %28 broadcast_to, %29 power_scalar, %30 multiply, %31 add, %32 stop_gradient, %3 broadcast_to, %21 broadcast_to, %22 divide, %23 multiply, %36 broadcast_to, %37 divide, %38 power_scalar, %39 broadcast_to, %40 add, %41 divide, %42 negate, %43 add, %44 stop_gradient
  stored because: %15: used by 2 nodes; %32: used by 2 nodes; %44: graph output
  recomputes: %12 add (used by 2 nodes, cost 2 <= 6)
  merged: %32 (in the pass of phase 0)
  merged: %44 (in the pass of phase 0)
  not merged into the kernel before: its loops (i0<3 i1<4) differ from (scalar)'s loops
  loops: i0<3 i1<4
  $0 = %opt.beta1[0]
  $1 = %opt.m.0[4*i0 + i1]
  $2 = %g[4*i0 + i1]
  $3 = %opt.weight_decay[0]
  $4 = %opt.params.0[4*i0 + i1]
  $5 = %opt.beta2[0]
  $6 = %opt.v.0[4*i0 + i1]
  $7 = %opt.lr[0]
  $8 = %20[0]
  $9 = %35[0]
  $10 = %opt.eps[0]
  store %15[4*i0 + i1] = add(mul($0, $1), mul(add(neg($0), 1.0), add($2, mul($3, $4))))
  store %32[4*i0 + i1] = add(mul($5, $6), mul(add(neg($5), 1.0), pow(add($2, mul($3, $4)), 2.0)))
  store %44[4*i0 + i1] = add($4, neg(div(mul($7, div(add(mul($0, $1), mul(add(neg($0), 1.0), add($2, mul($3, $4)))), $8)), add(sqrt(div(add(mul($5, $6), mul(add(neg($5), 1.0), pow(add($2, mul($3, $4)), 2.0))), $9)), $10))))"""


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
