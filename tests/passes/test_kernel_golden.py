"""The kernel passes as text: a program (or, for fusion, a graph) goes in, one pass runs, the expected
Kernel IR text must come out (parse_kernels reads the input; see test_simplify.py for the graph
passes' form). Inputs are small, as the passes print them, or written by hand."""
from ndlc.ir import parse, parse_kernels
from ndlc.passes.fusion import fuse
from ndlc.passes.memory import plan_memory
from ndlc.passes.merge import merge_kernels
from ndlc.passes.schedule import GpuTarget, schedule, schedule_gpu

EMULATED = GpuTarget(multiprocessors=2, block_threads=64, blocks_per_multiprocessor=2, chunk_elements=16)


def check(run_pass, before, after):
    got = str(run_pass(parse_kernels(before)))
    assert got == after.strip("\n"), got


def test_fusion_gives_a_gemm_its_epilogue_and_starts_a_kernel_after_it():
    """matmul + bias + relu is one BLAS call and its epilogue; the row sum of its output is a kernel
    of its own, and the dump says why."""
    got = str(fuse(parse("""
graph @dense(%x: f32[8,4], %w: f32[4,3], %b: f32[3]) {
  %0 = matmul(%x, %w) : f32[8,3]
  %1 = broadcast_to(%b, shape=(8, 3)) : f32[8,3]
  %2 = add(%0, %1) : f32[8,3]
  %3 = relu(%2) : f32[8,3]
  %4 = summation(%3, axes=(1,)) : f32[8]
  return %3, %4
}"""), use_blas=True))
    assert got == """
program @dense(%x, %w, %b) -> (%3, %4)
  %x: f32[8,4] input
  %w: f32[4,3] input
  %b: f32[3] input
  %3: f32[8,3] output
  %4: f32[8] output

kernel k0 -> %3
  fuses: %0 matmul, %1 broadcast_to, %2 add, %3 relu
  stored because: %3: used by 2 nodes
  loops: i0<8 i1<3
  call sgemm(%x, %w) -> %3  (8x4 @ 4x3)
  $0 = %3[3*i0 + i1]
  $1 = %b[i1]
  store %3[3*i0 + i1] = max(add($0, $1), 0)

kernel k1 -> %4
  fuses: %4 summation
  stored because: %4: graph output
  not merged into the kernel before: only elementwise work over a BLAS call's output joins it
  loops: i0<8 | i1<3
  $0 = %3[3*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %4[i0] = acc0""".strip("\n"), got


def test_merge_joins_a_softmax_into_one_kernel_of_four_phases():
    """max, exponentials, sum and quotient over the same rows: one kernel, one phase each, and why."""
    check(merge_kernels, """
program @softmax(%x) -> (%9)
  %x: f32[256,8] input
  %0: f32[256] temp
  %5: f32[256,8] temp
  %6: f32[256] temp
  %9: f32[256,8] output

kernel k0 -> %0
  fuses: %0 max
  stored because: %0: read by reshape (a reduction result feeds only elementwise epilogues)
  loops: i0<256 | i1<8
  $0 = %x[8*i0 + i1]
  phase 0: reduce
    acc0 = max of $0
    store %0[i0] = acc0

kernel k1 -> %5
  fuses: %1 reshape, %2 broadcast_to, %3 negate, %4 add, %5 exp
  stored because: %5: used by 2 nodes
  loops: i0<256 i1<8
  $0 = %x[8*i0 + i1]
  $1 = %0[i0]
  store %5[8*i0 + i1] = exp(add($0, neg($1)))

kernel k2 -> %6
  fuses: %6 summation
  stored because: %6: read by reshape (a reduction result feeds only elementwise epilogues)
  loops: i0<256 | i1<8
  $0 = %5[8*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %6[i0] = acc0

kernel k3 -> %9
  fuses: %7 reshape, %8 broadcast_to, %9 divide
  stored because: %9: graph output
  loops: i0<256 i1<8
  $0 = %5[8*i0 + i1]
  $1 = %6[i0]
  store %9[8*i0 + i1] = div($0, $1)""", """
program @softmax(%x) -> (%9)
  %x: f32[256,8] input
  %0: f32[256] temp
  %5: f32[256,8] temp
  %6: f32[256] temp
  %9: f32[256,8] output

kernel k0 -> %0, %5, %6, %9
  fuses: %0 max, %1 reshape, %2 broadcast_to, %3 negate, %4 add, %5 exp, %6 summation, %7 reshape, %8 broadcast_to, %9 divide
  stored because: %0: read by reshape (a reduction result feeds only elementwise epilogues); %5: used by 2 nodes; %6: read by reshape (a reduction result feeds only elementwise epilogues); %9: graph output
  merged: %5 (a later phase of the same loops, over the inner loops)
  merged: %6 (a later phase of the same loops)
  merged: %9 (a later phase of the same loops, over the inner loops)
  loops: i0<256 | i1<8
  $0 = %x[8*i0 + i1]
  $1 = %0[i0]
  $2 = %5[8*i0 + i1]
  $3 = %6[i0]
  phase 0: reduce
    acc0 = max of $0
    store %0[i0] = acc0
  phase 1: map over the inner loops
    store %5[8*i0 + i1] = exp(add($0, neg($1)))
  phase 2: reduce
    acc0 = add of $2
    store %6[i0] = acc0
  phase 3: map over the inner loops
    store %9[8*i0 + i1] = div($2, $3)""")


# the fused program both schedules take: column, row and full sums, and an elementwise map
SUMS = """
program @sums(%x, %y, %z, %s, %t) -> (%0, %1, %2, %3, %4, %5, %6)
  %x: f32[512,64] input
  %y: f32[1024,256] input
  %z: f32[8,512,16] input
  %s: f32[4,6] input
  %t: f32[16,16] input
  %0: f32[64] output
  %1: f32[1024] output
  %2: f32[1024,256] output
  %3: f32[8,16] output
  %4: f32[4] output
  %5: f32[] output
  %6: f32[16,16] output

kernel k0 -> %0
  fuses: %0 summation
  stored because: %0: graph output
  loops: i0<64 | i1<512
  $0 = %x[i0 + 64*i1]
  phase 0: reduce
    acc0 = add of $0
    store %0[i0] = acc0

kernel k1 -> %1, %2
  fuses: %1 summation, %2 exp
  stored because: %1: graph output; %2: graph output
  merged: %2 (a later phase of the same loops, over the inner loops)
  not merged into the kernel before: its loops (i0<1024 | i1<256) differ from (i0<64 | i1<512)'s loops
  loops: i0<1024 | i1<256
  $0 = %y[256*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %1[i0] = acc0
  phase 1: map over the inner loops
    store %2[256*i0 + i1] = exp($0)

kernel k2 -> %3
  fuses: %3 summation
  stored because: %3: graph output
  not merged into the kernel before: its loops (i0<8 i1<16 | i2<512) differ from (i0<1024 | i1<256)'s loops
  loops: i0<8 i1<16 | i2<512
  $0 = %z[8192*i0 + i1 + 16*i2]
  phase 0: reduce
    acc0 = add of $0
    store %3[16*i0 + i1] = acc0

kernel k3 -> %4
  fuses: %4 summation
  stored because: %4: graph output
  not merged into the kernel before: its loops (i0<4 | i1<6) differ from (i0<8 i1<16 | i2<512)'s loops
  loops: i0<4 | i1<6
  $0 = %s[6*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %4[i0] = acc0

kernel k4 -> %5
  fuses: %5 summation
  stored because: %5: graph output
  not merged into the kernel before: its loops (scalar | i0<512 i1<64) differ from (i0<4 | i1<6)'s loops
  loops: (scalar) | i0<512 i1<64
  $0 = %x[64*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %5[0] = acc0

kernel k5 -> %6
  fuses: %6 exp
  stored because: %6: graph output
  not merged into the kernel before: its loops (i0<16 i1<16) differ from (scalar | i0<512 i1<64)'s loops
  loops: i0<16 i1<16
  $0 = %t[16*i0 + i1]
  store %6[16*i0 + i1] = exp($0)"""


def test_schedule_for_the_cpu_chooses_strategies_and_splits():
    """Column sums in chunks or row blocks, row sums point by point, a big kernel on 2 threads, small
    ones serial, each with its reason."""
    check(lambda program: schedule(program, 2), SUMS, """
program @sums(%x, %y, %z, %s, %t) -> (%0, %1, %2, %3, %4, %5, %6)
  %x: f32[512,64] input
  %y: f32[1024,256] input
  %z: f32[8,512,16] input
  %s: f32[4,6] input
  %t: f32[16,16] input
  %0: f32[64] output
  %1: f32[1024] output
  %2: f32[1024,256] output
  %3: f32[8,16] output
  %4: f32[4] output
  %5: f32[] output
  %6: f32[16,16] output
  %k0.partials0: f32[16,64] temp

kernel k0 -> %0
  fuses: %0 summation
  stored because: %0: graph output
  loops: i0<64 | i1<512
  strategy: chunks (i1 cut into 16 chunks whose partial results, %k0.partials0, combine in order; whole rows stream)
  serial: too small (work 32832 < 131072)
  $0 = %x[i0 + 64*i1]
  phase 0: reduce
    acc0 = add of $0
    store %0[i0] = acc0

kernel k1 -> %1, %2
  fuses: %1 summation, %2 exp
  stored because: %1: graph output; %2: graph output
  merged: %2 (a later phase of the same loops, over the inner loops)
  not merged into the kernel before: its loops (i0<1024 | i1<256) differ from (i0<64 | i1<512)'s loops
  loops: i0<1024 | i1<256
  parallel over i0 in 4 pieces of 256, taken in turn (2 threads)
  $0 = %y[256*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %1[i0] = acc0
  phase 1: map over the inner loops
    store %2[256*i0 + i1] = exp($0)

kernel k2 -> %3
  fuses: %3 summation
  stored because: %3: graph output
  not merged into the kernel before: its loops (i0<8 i1<16 | i2<512) differ from (i0<1024 | i1<256)'s loops
  loops: i0<8 i1<16 | i2<512
  strategy: rows (blocks of 4096 i1 accumulate side by side; the reductions read strided along i2)
  serial: too small (work 65664 < 131072)
  $0 = %z[8192*i0 + i1 + 16*i2]
  phase 0: reduce
    acc0 = add of $0
    store %3[16*i0 + i1] = acc0

kernel k3 -> %4
  fuses: %4 summation
  stored because: %4: graph output
  not merged into the kernel before: its loops (i0<4 | i1<6) differ from (i0<8 i1<16 | i2<512)'s loops
  loops: i0<4 | i1<6
  serial: too small (work 28 < 131072)
  $0 = %s[6*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %4[i0] = acc0

kernel k4 -> %5
  fuses: %5 summation
  stored because: %5: graph output
  not merged into the kernel before: its loops (scalar | i0<512 i1<64) differ from (i0<4 | i1<6)'s loops
  loops: (scalar) | i0<512 i1<64
  serial: no non-reduced loop to split
  $0 = %x[64*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %5[0] = acc0

kernel k5 -> %6
  fuses: %6 exp
  stored because: %6: graph output
  not merged into the kernel before: its loops (i0<16 i1<16) differ from (scalar | i0<512 i1<64)'s loops
  loops: i0<16 i1<16
  serial: too small (work 2560 < 131072)
  $0 = %t[16*i0 + i1]
  store %6[16*i0 + i1] = exp($0)""")


def test_schedule_for_cuda_chooses_blocks_lanes_vectors_and_chunks():
    """Column reductions in tiles, rows on lanes, a full sum cut into chunks, an aligned elementwise
    kernel on float4."""
    check(lambda program: schedule_gpu(program, EMULATED), SUMS, """
program @sums(%x, %y, %z, %s, %t) -> (%0, %1, %2, %3, %4, %5, %6)
  %x: f32[512,64] input
  %y: f32[1024,256] input
  %z: f32[8,512,16] input
  %s: f32[4,6] input
  %t: f32[16,16] input
  %0: f32[64] output
  %1: f32[1024] output
  %2: f32[1024,256] output
  %3: f32[8,16] output
  %4: f32[4] output
  %5: f32[] output
  %6: f32[16,16] output
  %k0.partials0: f32[2,64] temp
  %k4.partials0: f32[4,1] temp

kernel k0 -> %0
  fuses: %0 summation
  stored because: %0: graph output
  loops: i0<64 | i1<512
  cuda: 2 blocks of 32x2 threads, 2 chunks into %k0.partials0 (column reduction: a warp reads 32 consecutive outputs' elements (a full 128-byte row of float32 where there are 32), lanes combine in shared memory; the reduced loops cut into 2 chunks (blocks over its outer points alone: 2, too few for 2 multiprocessors), whose partials combine in chunk order in a second launch; stores over the reduced loops run as map launches whose points go in memory order (the stored buffer's stride-1 loop fastest: coalesced))
  $0 = %x[i0 + 64*i1]
  phase 0: reduce
    acc0 = add of $0
    store %0[i0] = acc0

kernel k1 -> %1, %2
  fuses: %1 summation, %2 exp
  stored because: %1: graph output; %2: graph output
  merged: %2 (a later phase of the same loops, over the inner loops)
  not merged into the kernel before: its loops (i0<1024 | i1<256) differ from (i0<64 | i1<512)'s loops
  loops: i0<1024 | i1<256
  cuda: 4 blocks of 1x64 threads, lanes fastest (row reduction: 64 threads per row combine with warp shuffles)
  $0 = %y[256*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %1[i0] = acc0
  phase 1: map over the inner loops
    store %2[256*i0 + i1] = exp($0)

kernel k2 -> %3
  fuses: %3 summation
  stored because: %3: graph output
  not merged into the kernel before: its loops (i0<8 i1<16 | i2<512) differ from (i0<1024 | i1<256)'s loops
  loops: i0<8 i1<16 | i2<512
  cuda: 4 blocks of 32x2 threads (column reduction: a warp reads 32 consecutive outputs' elements (a full 128-byte row of float32 where there are 32), lanes combine in shared memory)
  $0 = %z[8192*i0 + i1 + 16*i2]
  phase 0: reduce
    acc0 = add of $0
    store %3[16*i0 + i1] = acc0

kernel k3 -> %4
  fuses: %4 summation
  stored because: %4: graph output
  not merged into the kernel before: its loops (i0<4 | i1<6) differ from (i0<8 i1<16 | i2<512)'s loops
  loops: i0<4 | i1<6
  cuda: 2 blocks of 2x32 threads, lanes fastest (row reduction: 32 threads per row combine with warp shuffles)
  $0 = %s[6*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %4[i0] = acc0

kernel k4 -> %5
  fuses: %5 summation
  stored because: %5: graph output
  not merged into the kernel before: its loops (scalar | i0<512 i1<64) differ from (i0<4 | i1<6)'s loops
  loops: (scalar) | i0<512 i1<64
  cuda: 1 blocks of 1x64 threads, lanes fastest, 4 chunks into %k4.partials0 (row reduction: 64 threads per row combine with warp shuffles; the reduced loops cut into 4 chunks (blocks over its outer points alone: 1, too few for 2 multiprocessors), whose partials combine in chunk order in a second launch; stores over the reduced loops run as map launches whose points go in memory order (the stored buffer's stride-1 loop fastest: coalesced))
  $0 = %x[64*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %5[0] = acc0

kernel k5 -> %6
  fuses: %6 exp
  stored because: %6: graph output
  not merged into the kernel before: its loops (i0<16 i1<16) differ from (scalar | i0<512 i1<64)'s loops
  loops: i0<16 i1<16
  cuda: 1 blocks of 64x1 threads, 4 points a thread (elementwise, 4 consecutive points a thread (float4 loads and stores))
  $0 = %t[16*i0 + i1]
  store %6[16*i0 + i1] = exp($0)""")


def test_memory_plans_rows_kept_per_thread_and_updates_in_place():
    """A softmax's exponentials and sums stay in one row per thread; %w's update overwrites %w, but
    %v's cannot: a later kernel reads %v."""
    check(plan_memory, """
program @step(%x, %w, %v) -> (%y, %z, new %w = %w2, new %v = %v2)
  %x: f32[64,8] input
  %w: f32[64,8] input
  %v: f32[8] input
  %e: f32[64,8] temp
  %s: f32[64] temp
  %y: f32[64,8] output
  %z: f32[8] output
  %w2: f32[64,8] output
  %v2: f32[8] output

kernel k0 -> %e, %s, %y
  loops: i0<64 | i1<8
  serial: one thread (NDLC_THREADS=1 or no thread team on this system)
  $0 = %x[8*i0 + i1]
  $1 = %e[8*i0 + i1]
  $2 = %s[i0]
  phase 0: map over the inner loops
    store %e[8*i0 + i1] = exp($0)
  phase 1: reduce
    acc0 = add of $1
    store %s[i0] = acc0
  phase 2: map over the inner loops
    store %y[8*i0 + i1] = div($1, $2)

kernel k1 -> %v2
  loops: i0<8 | i1<64
  strategy: rows (blocks of 4096 i0 accumulate side by side; the reductions read strided along i1)
  serial: one thread (NDLC_THREADS=1 or no thread team on this system)
  $0 = %w[i0 + 8*i1]
  $1 = %v[i0]
  phase 0: reduce
    acc0 = add of $0
    store %v2[i0] = add(mul($1, 0.9), acc0)

kernel k2 -> %w2
  loops: i0<64 i1<8
  serial: one thread (NDLC_THREADS=1 or no thread team on this system)
  $0 = %w[8*i0 + i1]
  $1 = %y[8*i0 + i1]
  store %w2[8*i0 + i1] = sub($0, mul($1, 0.1))

kernel k3 -> %z
  loops: i0<8
  serial: one thread (NDLC_THREADS=1 or no thread team on this system)
  $0 = %v[i0]
  store %z[i0] = mul($0, 2.0)""", """
program @step(%x, %w, %v) -> (%y, %z, new %w = %w2, new %v = %v2)
  %x: f32[64,8] input
  %w: f32[64,8] input
  %v: f32[8] input
  %e: f32[64,8] local
  %s: f32[64] local
  %y: f32[64,8] output
  %z: f32[8] output
  %w2: f32[64,8] output
  %v2: f32[8] output
  %w2 is written in place of %w

kernel k0 -> %e, %s, %y
  loops: i0<64 | i1<8
  serial: one thread (NDLC_THREADS=1 or no thread team on this system)
  %e is local: one row of 8 per thread
  %s is local: one row of 1 per thread
  $0 = %x[8*i0 + i1]
  $1 = %e[8*i0 + i1]
  $2 = %s[i0]
  phase 0: map over the inner loops
    store %e[8*i0 + i1] = exp($0)
  phase 1: reduce
    acc0 = add of $1
    store %s[i0] = acc0
  phase 2: map over the inner loops
    store %y[8*i0 + i1] = div($1, $2)

kernel k1 -> %v2
  loops: i0<8 | i1<64
  strategy: rows (blocks of 4096 i0 accumulate side by side; the reductions read strided along i1)
  serial: one thread (NDLC_THREADS=1 or no thread team on this system)
  $0 = %w[i0 + 8*i1]
  $1 = %v[i0]
  phase 0: reduce
    acc0 = add of $0
    store %v2[i0] = add(mul($1, 0.9), acc0)

kernel k2 -> %w2
  loops: i0<64 i1<8
  serial: one thread (NDLC_THREADS=1 or no thread team on this system)
  $0 = %w[8*i0 + i1]
  $1 = %y[8*i0 + i1]
  store %w2[8*i0 + i1] = sub($0, mul($1, 0.1))

kernel k3 -> %z
  loops: i0<8
  serial: one thread (NDLC_THREADS=1 or no thread team on this system)
  $0 = %v[i0]
  store %z[i0] = mul($0, 2.0)""")
