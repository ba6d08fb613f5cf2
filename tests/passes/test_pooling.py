"""Pooling as fusion sees it, as text: an average pooling is the sum of its window planes, one
elementwise definition that fuses into its consumer; a large window keeps its loop nest."""
from ndlc.ir import parse
from ndlc.passes.decompose import decompose
from ndlc.passes.fusion import fuse


def test_average_pooling_is_a_sum_of_strided_planes_fused_into_its_consumer():
    program = fuse(decompose(parse("""
graph @pool(%x: f32[2,3,4,6], %y: f32[1,1,5,6]) {
  %0 = avg_pool2d(%x, kernel=2, stride=2) : f32[2,3,2,3]
  %1 = sigmoid(%0) : f32[2,3,2,3]
  %2 = avg_pool2d(%y, kernel=5, stride=1) : f32[1,1,1,2]
  return %1, %2
}""")))
    assert str(program) == """\
program @pool(%x, %y) -> (%13, %14)
  %x: f32[2,3,4,6] input
  %y: f32[1,1,5,6] input
  %13: f32[2,3,2,3] output
  %14: f32[1,1,1,2] output

kernel k0 -> %13
  fuses: %0 windows, %1 slice, %2 reshape, %3 slice, %4 reshape, %9 add, %5 slice, %6 reshape, %10 add, \
%7 slice, %8 reshape, %11 add, %12 divide_scalar, %13 sigmoid
  stored because: %13: graph output
  loops: i0<2 i1<3 i2<2 i3<3
  $0 = %x[72*i0 + 24*i1 + 12*i2 + 2*i3]
  $1 = %x[72*i0 + 24*i1 + 12*i2 + 2*i3 + 1]
  $2 = %x[72*i0 + 24*i1 + 12*i2 + 2*i3 + 6]
  $3 = %x[72*i0 + 24*i1 + 12*i2 + 2*i3 + 7]
  store %13[18*i0 + 6*i1 + 3*i2 + i3] = div(1, add(1, exp(neg(div(add(add(add($0, $1), $2), $3), 4.0)))))

kernel k1 -> %14
  fuses: %14 avg_pool2d
  stored because: %14: graph output
  not merged into the kernel before: its loops (i0<2 | i1<5 i2<5) differ from (i0<2 i1<3 i2<2 i3<3)'s loops
  loops: i0<2 | i1<5 i2<5
  $0 = %y[i0 + 6*i1 + i2]
  phase 0: reduce
    acc0 = add of $0
    store %14[i0] = div(acc0, 25.0)"""
