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
program @lambda(%x, %bn.weight, %bn.bias, %bn.running_mean, %bn.running_var) -> (%21, new %bn.running_mean = %26, new %bn.running_var = %31)
  %x: f32[8,4] input
  %bn.weight: f32[4] input
  %bn.bias: f32[4] input
  %bn.running_mean: f32[4] input
  %bn.running_var: f32[4] input
  %1: f32[4] temp
  %13: f32[1,4] temp
  %21: f32[8,4] output
  %26: f32[4] output
  %31: f32[4] output

kernel k0 -> %1, %26, %13, %31
  fuses: %0 summation, %1 divide_scalar, %2 reshape, %3 broadcast_to, %4 negate, %5 add, %6 power_scalar, %7 summation, %8 divide_scalar, %22 mul_scalar, %23 stop_gradient, %24 mul_scalar, %25 add, %26 stop_gradient, %11 full, %9 add_scalar, %10 power_scalar, %12 divide, %13 reshape, %27 mul_scalar, %28 stop_gradient, %29 mul_scalar, %30 add, %31 stop_gradient
  stored because: %1: used by 2 nodes; %26: graph output; %13: broadcast_to reads elements repeatedly; %31: graph output
  recomputes: %5 add (used by 2 nodes, cost 2 <= 6)
  merged: %8 (a later phase of the same loops)
  merged: %26 (in the pass of phase 0, once per outer point)
  merged: %13 (in the pass of phase 1, once per outer point)
  merged: %31 (in the pass of phase 1, once per outer point)
  merged: statistics of %x in one pass: sums shifted by its first inner element
  merged: %8 recomputed in registers, not stored
  loops: i0<4 | i1<8
  $0 = %x[i0 + 4*i1]
  $1 = %bn.running_mean[i0]
  $2 = %bn.running_var[i0]
  $3 = %x[i0]
  phase 0: reduce
    acc0 = add of sub(mul($0, 0.0625), mul($3, 0.0625))
    acc1 = add of mul(sub(mul($0, 0.0625), mul($3, 0.0625)), sub(mul($0, 0.0625), mul($3, 0.0625)))
    store %1[i0] = mul(div(mul(add(acc0, mul(mul($3, 0.0625), 8.0)), 8.0), 8.0), 2.0)
    store %26[i0] = add(mul($1, 0.9), mul(mul(div(mul(add(acc0, mul(mul($3, 0.0625), 8.0)), 8.0), 8.0), 2.0), 0.1))
    store %13[i0] = div(cast(1.0, f32), sqrt(add(div(mul(max(sub(acc1, min(div(mul(acc0, acc0), 8.0), 3.4028234663852886e+38)), 0.0), 256.0), 8.0), 1e-05)))
    store %31[i0] = add(mul($2, 0.9), mul(div(mul(max(sub(acc1, min(div(mul(acc0, acc0), 8.0), 3.4028234663852886e+38)), 0.0), 256.0), 8.0), 0.1))

kernel k1 -> %21
  fuses: %2 reshape, %3 broadcast_to, %4 negate, %5 add, %14 broadcast_to, %15 multiply, %16 reshape, %17 broadcast_to, %18 multiply, %19 reshape, %20 broadcast_to, %21 add
  stored because: %21: graph output
  recomputes: %5 add (used by 2 nodes, cost 2 <= 6)
  not merged into the kernel before: an elementwise pass over the inner loops of (i0<4 | i1<8) would run on 4 outer point(s): too few to share among threads
  loops: i0<8 i1<4
  $0 = %x[4*i0 + i1]
  $1 = %1[i1]
  $2 = %13[i1]
  $3 = %bn.weight[i1]
  $4 = %bn.bias[i1]
  store %21[4*i0 + i1] = add(mul(mul(add($0, neg($1)), $2), $3), $4)"""


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
program @update(%g, %opt.lr, %opt.beta1, %opt.beta2, %opt.eps, %opt.weight_decay, %opt.params.0, %opt.t, %opt.m.0, %opt.v.0) -> (%1, new %opt.params.0 = %47, new %opt.t = %17, new %opt.m.0 = %15, new %opt.v.0 = %34)
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
  %34: f32[3,4] output
  %1: f32[] output
  %47: f32[3,4] output
  %17: f32[] output

kernel k0 -> %17, %1
  fuses: %16 add_scalar, %17 stop_gradient, %0 multiply, %1 summation
  stored because: %17: graph output; %1: graph output
  recomputes: %17 stop_gradient (used by 3 nodes, cost 1 <= 6)
  merged: %1 (a later phase of the same loops, once per outer point)
  loops: (scalar) | i0<3 i1<4
  $0 = %opt.t[0]
  $1 = %opt.params.0[4*i0 + i1]
  $2 = %g[4*i0 + i1]
  phase 0: per outer point
    store %17[0] = add($0, 1.0)
  phase 1: reduce
    acc0 = add of mul($1, $2)
    store %1[0] = acc0

kernel k1 -> %15, %34, %47
  fuses: %4 broadcast_to, %5 multiply, %6 negate, %7 add_scalar, %8 broadcast_to, %9 stop_gradient, %10 broadcast_to, %2 stop_gradient, %11 multiply, %12 add, %13 multiply, %14 add, %15 stop_gradient, %26 broadcast_to, %27 multiply, %28 negate, %29 add_scalar, %30 broadcast_to, %31 power_scalar, %32 multiply, %33 add, %34 stop_gradient, %3 broadcast_to, %21 full, %16 add_scalar, %17 stop_gradient, %18 power, %19 negate, %20 add_scalar, %22 divide, %23 broadcast_to, %24 multiply, %25 multiply, %35 power, %36 negate, %37 add_scalar, %38 divide, %39 broadcast_to, %40 multiply, %41 power_scalar, %42 broadcast_to, %43 add, %44 divide, %45 negate, %46 add, %47 stop_gradient
  stored because: %15: used by 2 nodes; %34: used by 2 nodes; %47: graph output
  recomputes: %12 add (used by 2 nodes, cost 2 <= 6)
  recomputes: %21 full (used by 2 nodes, cost 1 <= 6)
  recomputes: %17 stop_gradient (used by 3 nodes, cost 1 <= 6)
  recomputes: %22 divide (read by broadcast_to, one loop-invariant element (the compiler hoists it out of the loops))
  recomputes: %38 divide (read by broadcast_to, one loop-invariant element (the compiler hoists it out of the loops))
  merged: %34 (in the pass of phase 0)
  merged: %47 (in the pass of phase 0)
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
  $8 = %opt.t[0]
  $9 = %opt.eps[0]
  store %15[4*i0 + i1] = add(mul($0, $1), mul(add(neg($0), 1.0), add($2, mul($3, $4))))
  store %34[4*i0 + i1] = add(mul($5, $6), mul(add(neg($5), 1.0), pow(add($2, mul($3, $4)), 2.0)))
  store %47[4*i0 + i1] = add($4, neg(div(mul($7, mul(add(mul($0, $1), mul(add(neg($0), 1.0), add($2, mul($3, $4)))), div(cast(1.0, f32), add(neg(pow($0, add($8, 1.0))), 1.0)))), add(sqrt(mul(add(mul($5, $6), mul(add(neg($5), 1.0), pow(add($2, mul($3, $4)), 2.0))), div(cast(1.0, f32), add(neg(pow($5, add($8, 1.0))), 1.0)))), $9))))"""


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
    assert "ndlc.fusion: lambda: %15 joins the kernel of %3: a later phase of the same loops\n" in err
    assert "%21 joins the kernel of %3, %15: a later phase of the same loops, over the inner loops" in err
    configure("nonsense")
    assert "NDLC_LOG names no logger 'nonsense'" in caplog.text
