"""Kernels on several threads of ndlc's team: results equal the serial build bit for bit (above and below
the threshold, with even and uneven ranges), the dump says which kernels split and why others do
not, NDLC_THREADS=1 emits no call of ndlc's team, a system without the team means serial code and
one warning, and cached native code finds the team by name in a second process."""
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ndlc as ndl
from ndlc.passes.fusion import fuse
from ndlc.passes.schedule import schedule
from ndlc.ir.ops.conv_rows import spread_row
from ndlc.ir.tiles import ragged_pieces, register_tile
from ndlc.runtime import libraries
from ndlc.examples.train_mlp import training_step
from ndlc.jit.compile import compile_graph
from ndlc.ir import parse

needs_team = pytest.mark.skipif(not libraries.team_runs(), reason="ndlc's thread team does not run here")


def elementwise(rows, cols):
    return f"""
graph @ew(%x: f32[{rows},{cols}], %y: f32[{cols}]) {{
  %0 = broadcast_to(%y, shape=({rows}, {cols})) : f32[{rows},{cols}]
  %1 = exp(%x) : f32[{rows},{cols}]
  %2 = multiply(%1, %0) : f32[{rows},{cols}]
  %3 = add_scalar(%2, scalar=1.0) : f32[{rows},{cols}]
  return %3
}}""", [(rows, cols), (cols,)]


def reductions(rows, cols):
    return f"""
graph @red(%x: f32[{rows},{cols}]) {{
  %0 = logsoftmax(%x, axis=1) : f32[{rows},{cols}]
  %1 = summation(%x, axes=(0,)) : f32[{cols}]
  %2 = max(%x, axes=(0,)) : f32[{cols}]
  return %0, %1, %2
}}""", [(rows, cols)]


def conv(n, size):
    return f"""
graph @conv(%x: f32[{n},{size},{size},8], %w: f32[3,3,8,16]) {{
  %0 = conv(%x, %w, stride=1, padding=1) : f32[{n},{size},{size},16]
  %1 = relu(%0) : f32[{n},{size},{size},16]
  return %1
}}""", [(n, size, size, 8), (3, 3, 8, 16)]


def pooling(n, size):
    half = size // 2
    return f"""
graph @pool(%x: f32[{n},16,{size},{size}]) {{
  %0 = max_pool2d(%x, kernel=2, stride=2) : f32[{n},16,{half},{half}]
  %1 = avg_pool2d(%x, kernel=2, stride=2) : f32[{n},16,{half},{half}]
  return %0, %1
}}""", [(n, 16, size, size)]


def gemms(rows, cols):
    return f"""
graph @mm(%x: f32[{rows},{cols}], %w: f32[{cols},{cols}], %b: f32[3,{rows},{cols}]) {{
  %0 = matmul(%x, %w) : f32[{rows},{cols}]
  %1 = relu(%0) : f32[{rows},{cols}]
  %2 = broadcast_to(%w, shape=(3, {cols}, {cols})) : f32[3,{cols},{cols}]
  %3 = matmul(%b, %2) : f32[3,{rows},{cols}]
  return %1, %3
}}""", [(rows, cols), (cols, cols), (3, rows, cols)]


def build(text, threads, monkeypatch):
    monkeypatch.setenv("NDLC_THREADS", str(threads))
    return compile_graph(parse(text))


@needs_team
@pytest.mark.parametrize("case,large,small", [(elementwise, (301, 517), (7, 9)), (reductions, (301, 517), (9, 11)),
                                              (conv, (3, 23), (1, 4)), (pooling, (7, 34), (1, 4)),
                                              (gemms, (97, 64), (3, 4))],
                         ids=["elementwise", "reductions", "conv", "pooling", "gemms"])
def test_threaded_results_equal_serial_bit_for_bit(case, large, small, monkeypatch):
    rng = np.random.default_rng(0)
    for sizes, split in ((large, True), (small, False)):
        text, shapes = case(*sizes)
        inputs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        want = build(text, 1, monkeypatch).run(*inputs)
        for threads in (2, 3):
            program = build(text, threads, monkeypatch)
            assert any(k.split for k in program.kernels.kernels) == split, program.ir("planned")
            for got, expected in zip(program.run(*inputs), want):
                assert got.tobytes() == expected.tobytes()


@needs_team
def test_threaded_training_step_equals_serial_bit_for_bit(monkeypatch):
    monkeypatch.setenv("NDLC_BLAS", "0")  # matmuls as loop nests, so the step has threaded kernels
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((64, 100)).astype(np.float32), rng.integers(0, 10, 64)) for _ in range(3)]
    results = {}
    for threads in (1, 2):
        monkeypatch.setenv("NDLC_THREADS", str(threads))
        np.random.seed(0)
        model = ndl.nn.Sequential(ndl.nn.Linear(100, 128), ndl.nn.BatchNorm1d(128), ndl.nn.ReLU(),
                                  ndl.nn.Linear(128, 10))
        step = ndl.compile(training_step(model, ndl.optim.Adam(model.parameters(), lr=0.01)))
        losses = [step(x, y).numpy().tobytes() for x, y in data]
        assert ("parallel over" in step.ir("planned")) == (threads > 1)
        results[threads] = losses, [p.numpy().tobytes() for p in model.parameters()]
    assert results[1] == results[2]


def test_dump_says_which_kernels_split_and_why_others_do_not():
    program = schedule(fuse(parse("""
graph @p(%x: f32[600,300], %s: f32[6,5]) {
  %0 = summation(%x, axes=(0,)) : f32[300]
  %1 = summation(%x, axes=(0, 1)) : f32[]
  %2 = exp(%s) : f32[6,5]
  return %0, %1, %2
}"""), use_blas=False), 2)
    columns, total, small = program.kernels
    assert str(columns) == """\
kernel k0 -> %0
  fuses: %0 summation
  stored because: %0: graph output
  loops: i0<300 | i1<600
  strategy: chunks (i1 cut into 16 chunks whose partial results, %k0.partials0, combine in order; whole rows stream)
  parallel over its chunks (2 threads)
  $0 = %x[i0 + 300*i1]
  phase 0: reduce
    acc0 = add of $0
    store %0[i0] = acc0"""
    assert "  serial: no non-reduced loop to split" in str(total)
    assert "  serial: too small (work 300 < 131072)" in str(small)
    assert all("serial: one thread" in str(k) for k in schedule(program, 1).kernels)


def test_work_counts_what_several_stores_share_once():
    """tanh(exp(x)) is computed once for both stores (as LLVM does): 29 a point, not 48, so 4096
    points stay under the threshold (the LSTM LM's per-step gate-gradient concatenation, 2048
    points, 4 loads for 2 stores, no longer splits)."""
    text = """
graph @p(%x: f32[32,128]) {
  %0 = exp(%x) : f32[32,128]
  %1 = tanh(%0) : f32[32,128]
  %2 = exp(%1) : f32[32,128]
  return %1, %2
}"""
    kernel, = schedule(fuse(parse(text)), 2).kernels
    assert "  serial: too small (work 118784 < 131072)" in str(kernel)


def test_a_split_loop_is_cut_into_pieces_the_threads_share_evenly():
    text = """
graph @p(%x: f32[10,100,256]) {
  %0 = exp(%x) : f32[10,100,256]
  return %0
}"""
    short = schedule(fuse(parse(text)), 2).kernels[0]  # 5 pieces of 2 would leave one thread 3 to the other's 2
    assert "  parallel over i0 in 10 pieces of 1, taken in turn (2 threads)" in str(short)
    even = schedule(fuse(parse(text.replace("10,", "16,"))), 2).kernels[0]
    assert "  parallel over i0 in 4 pieces of 4, taken in turn (2 threads)" in str(even)
    odd = schedule(fuse(parse(text.replace("10,", "7,"))), 2).kernels[0]  # no piece balances: the best, 1
    assert "  parallel over i0 in 7 pieces of 1, taken in turn (2 threads)" in str(odd)


@needs_team
@pytest.mark.skipif(not libraries.blas_available(), reason="numpy ships no 64-bit-integer OpenBLAS here")
def test_gemms_split_their_rows_and_openblas_waits_on_one_thread(monkeypatch):
    text = """
graph @mm(%x: f32[400,300], %w: f32[300,200]) {
  %0 = matmul(%x, %w) : f32[400,200]
  %1 = exp(%x) : f32[400,300]
  return %0, %1
}"""
    gemm, exp = schedule(fuse(parse(text), use_blas=True), 2, "zen").kernels
    assert "  parallel over i0 in 3 pieces of 192, taken in turn (2 threads)" in str(gemm)  # the last: 16 rows
    assert "  parallel over i0 in 4 pieces of 100, taken in turn (2 threads)" in str(exp)
    tall = schedule(fuse(parse(text.replace("400", "1024")), use_blas=True), 2, "zen").kernels[0]
    assert "  parallel over i0 in 2 pieces of 528, taken in turn (2 threads)" in str(tall)  # as balanced as 5 of 240
    lstm = schedule(fuse(parse(text.replace("400", "320")), use_blas=True), 2, "zen").kernels[0]
    assert "  parallel over i0 in 3 pieces of 144, taken in turn (2 threads)" in str(lstm)  # 176 rows as 7 of 48
    narrow = schedule(fuse(parse(text.replace("400", "95")), use_blas=True), 2, "zen").kernels[0]
    assert "  serial: 95 rows: fewer than two pieces of 48 (BLAS's tiles)" in str(narrow)
    seen = []
    monkeypatch.setattr(libraries, "single_threaded_blas", _recording(libraries.single_threaded_blas, seen))
    before = libraries.blas_threads()
    program = build(text, 2, monkeypatch)
    x, w = np.ones((400, 300), np.float32), np.ones((300, 200), np.float32)
    product, _ = program.run(x, w)
    assert seen == ["held"] and libraries.blas_threads() == before
    np.testing.assert_array_equal(product, np.full((400, 200), 300, np.float32))


def test_gemms_on_skylakex_kernels_are_cut_where_every_piece_takes_the_whole_calls_path():
    """Where numpy's OpenBLAS runs SkylakeX's kernels, a gemm is cut at multiples of 4 float32 rows or
    12 float64 ones (1024 rows: 512 x 2, not 528 + 496) where every piece takes the whole call's path:
    the packed one (pieces above SMALL_MACS multiply-adds) or the small-matrix kernels; Haswell's and
    Zen's kernels keep multiples of 48, and other cores pieces of FINE_MACS multiply-adds."""
    text = """
graph @mm(%x: f32[400,300], %w: f32[300,200]) {
  %0 = matmul(%x, %w) : f32[400,200]
  return %0
}"""

    def kernel(text, core):
        return schedule(fuse(parse(text), use_blas=True), 2, core).kernels[0]

    def pieces(text, core):
        return next(line for line in str(kernel(text, core)).splitlines() if "parallel over" in line).strip()
    assert pieces(text, "skylakex") == "parallel over i0 in 2 pieces of 200, taken in turn (2 threads)"
    assert pieces(text, "haswell") == "parallel over i0 in 3 pieces of 192, taken in turn (2 threads)"
    # elsewhere no piece of fewer than FINE_MACS multiply-adds (123 rows here): not 192 x 2 + 16
    assert pieces(text, "") == pieces(text, "sapphirerapids") == "parallel over i0 in 2 pieces of 240, taken in turn (2 threads)"
    assert pieces(text.replace("400", "1024"), "skylakex") == "parallel over i0 in 2 pieces of 512, taken in turn (2 threads)"
    assert pieces(text.replace("f32", "f64"), "skylakex") == "parallel over i0 in 2 pieces of 204, taken in turn (2 threads)"
    narrow = text.replace("200", "60")  # one call packs; 8 calls of 52 rows fit the small-matrix permit
    assert pieces(narrow, "skylakex") == "parallel over i0 in 8 pieces of 52, taken in turn (2 threads)"
    assert kernel(narrow, "skylakex").calls == 52 and kernel(narrow, "haswell").calls == 0
    for core in ("", "sapphirerapids"):  # one call: no two pieces of 408 rows
        assert kernel(narrow, core).split is None
        assert kernel(narrow, core).serial_why == ("400 rows: no pieces of 408 rows or more (7340032 multiply-adds, "
                                                   f"below which OpenBLAS's {core or 'unnamed'} kernels may sum "
                                                   "otherwise than one call)")
    # 64 x 128 @ 128 x 128: 1.05e6 multiply-adds take the packed path, pieces of 32 rows the small-matrix
    # kernels: float64 one call, float32 two small-matrix calls (gemm_pieces.small_calls); with the right
    # operand transposed (ResNet9's) pieces of more than 1200 outputs take the packed path too; 120 x 129
    # @ 129 x 64, 0.99e6, the small-matrix kernels whole and cut
    small = text.replace("400", "64").replace("300", "128").replace("200", "128")
    assert pieces(small, "skylakex") == "parallel over i0 in 2 pieces of 32, taken in turn (2 threads)"
    assert kernel(small.replace("f32", "f64"), "skylakex").split is None
    assert kernel(small.replace("f32", "f64"), "skylakex").serial_why == (
        "64 rows: no pieces of 62 rows or more (below which OpenBLAS's skylakex kernels take their small-matrix "
        "path, the whole call the packed one)")
    transposed = small.replace("%0 = matmul(%x, %w)",
                               "%t = transpose(%w, axes=(0, 1)) : f32[128,128]\n  %0 = matmul(%x, %t)")
    assert pieces(transposed, "skylakex") == "parallel over i0 in 2 pieces of 32, taken in turn (2 threads)"
    smaller = text.replace("400,300", "120,129").replace("300,200", "129,64").replace("400,200", "120,64")
    assert pieces(smaller, "skylakex") == "parallel over i0 in 2 pieces of 60, taken in turn (2 threads)"


def test_a_small_gemm_splits_its_rows_only_where_the_cost_model_says_the_split_is_sooner():
    """A row split costs a region and a BLAS call per piece (schedule.py GEMM_CALL_US): a product
    whose busiest thread would save less than that stays one call on one thread, and says why."""
    text = """
graph @mm(%x: f32[139,109], %w: f32[109,19]) {
  %0 = matmul(%x, %w) : f32[139,19]
  return %0
}"""
    skinny = schedule(fuse(parse(text), use_blas=True), 2, "zen").kernels[0]
    assert skinny.split is None and ("  serial: one BLAS call on one thread, estimated at 9.8 us, against 10.8 us "
                                     "for the busiest of 2 threads taking pieces of 48 rows") in str(skinny)
    wide = schedule(fuse(parse(text.replace("19", "65").replace("109", "129").replace("139", "127")),
                         use_blas=True), 2, "zen").kernels[0]  # 79 of 127 rows on the busiest thread: 24.2 us, not 30.8
    assert "  parallel over i0 in 3 pieces of 48, taken in turn (2 threads)" in str(wide)
    double = schedule(fuse(parse(text.replace("f32", "f64")), use_blas=True), 2, "zen").kernels[0]
    assert double.split is not None  # twice the time a multiply-add: the same product's split pays
    chain = "".join(f"  %{i} = tanh(%{i - 1}) : f32[139,19]\n" for i in range(1, 41))
    heavy = schedule(fuse(parse(text.replace("  return %0", chain + "  return %40")), use_blas=True), 2, "zen").kernels
    assert len(heavy) == 1 and heavy[0].split is not None  # its fused epilogue alone is worth the threads


def _recording(call, seen):
    def held(*args):
        seen.append("held")
        return call(*args)
    return held


@needs_team
def test_one_thread_emits_no_team_calls(monkeypatch):
    text, _ = elementwise(301, 517)
    assert "ndlc_parallel" in build(text, 2, monkeypatch).ir("llvm")
    assert "ndlc_parallel" not in build(text, 1, monkeypatch).ir("llvm")


def test_bad_thread_counts_are_refused(monkeypatch):
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("NDLC_THREADS", bad)
        with pytest.raises(libraries.ThreadsError, match="NDLC_THREADS must be a positive integer"):
            libraries.threads()


def test_without_the_team_kernels_run_serially_and_say_so_once(monkeypatch, caplog):
    monkeypatch.setattr(libraries, "team_runs", lambda: False)
    monkeypatch.setenv("NDLC_THREADS", "2")
    libraries._say_serial.cache_clear()
    text, shapes = elementwise(301, 517)
    inputs = [np.ones(s, np.float32) for s in shapes]
    try:
        with caplog.at_level(logging.WARNING, "ndlc.libraries"):
            programs = [compile_graph(parse(text)) for _ in range(2)]
    finally:
        libraries._say_serial.cache_clear()
    assert all("ndlc_parallel" not in p.ir("llvm") and "serial: one thread" in p.ir("planned") for p in programs)
    np.testing.assert_allclose(programs[0].run(*inputs)[0], np.e + 1, rtol=1e-6)
    assert len(caplog.records) == 1 and "run on one thread" in caplog.records[0].message


CACHE_SCRIPT = textwrap.dedent("""
    import numpy as np
    from ndlc.jit.compile import compile_graph
    from ndlc.ir import parse
    from ndlc.runtime.native import llvm_compilations
    program = compile_graph(parse(%r))
    x, y = np.linspace(-1, 1, 301 * 517, dtype=np.float32).reshape(301, 517), np.ones(517, np.float32)
    out = program.run(x, y)[0]
    print(llvm_compilations(), "ndlc_parallel" in program.ir("llvm"), out.tobytes().hex()[:4096], float(out.sum()))
""" % elementwise(301, 517)[0])


@needs_team
def test_cached_threaded_code_finds_the_team_by_name_in_a_second_process(tmp_path, fresh_machine):
    env = dict(os.environ, NDLC_CACHE_DIR=str(tmp_path), NDLC_THREADS="2")
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", CACHE_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.split())
    assert runs[0][:2] == ["2", "True"] and runs[1][:2] == ["0", "True"] and runs[0][2:] == runs[1][2:]


def test_a_direct_conv_accumulates_a_register_tile():
    """Each step of the taps loads one vector of 16 weights for 6 pixels and one input for 16
    channels: a tile of 6 x 16 outputs, 12 vectors beside the 2 loaded and a broadcast (ir/tiles.py)."""
    program = schedule(fuse(parse("""
graph @c(%x: f32[2,6,10,6], %w: f32[5,5,6,16]) {
  %0 = conv(%x, %w, stride=1, padding=0) : f32[2,2,6,16]
  return %0
}""")), 1)
    assert str(program.kernels[0]) == """\
kernel k0 -> %0
  fuses: %0 conv
  stored because: %0: graph output
  loops: i0<2 i1<2 i2<6 i3<16 | i4<5 i5<5 i6<6
  strategy: rows (blocks of 16 i3 by 6 i2 accumulate side by side; the reductions read strided along i6)
  serial: one thread (NDLC_THREADS=1 or no thread team on this system)
  $0 = %x[360*i0 + 60*i1 + 6*i2 + 60*i4 + 6*i5 + i6]
  $1 = %w[i3 + 480*i4 + 96*i5 + 16*i6]
  phase 0: reduce
    acc0 = add of mul($0, $1)
    store %0[192*i0 + 96*i1 + 16*i2 + i3] = acc0"""


def row_conv_kernel(plane_width):
    """A row_conv of rows of 28 outputs, 6 channels (LeNet conv1's shape) over planes `plane_width` wide, scheduled."""
    return schedule(fuse(parse(f"""
graph @r(%x: f32[2,1,32,{plane_width}], %w: f32[5,5,1,6]) {{
  %0 = row_conv(%x, %w, width=28) : f32[2,6,28,28]
  return %0
}}""")), 1).kernels[0]


def test_a_ragged_row_computes_its_last_block_whole_where_the_planes_carry_its_columns():
    """Rows of 28 in tiles of 6 channels x 16 pixels, the channels' loop moved from before the rows
    (fused: i0<2 i1<6 i2<28 i3<28) next to the pixels: the last block computes 16 and stores 12;
    its reads past the row (4 columns the planes carry: 36 = 28 + 4 + K - 1) stay in the buffer."""
    assert str(row_conv_kernel(36)) == """\
kernel k0 -> %0
  fuses: %0 row_conv
  stored because: %0: graph output
  loops: i0<2 i1<28 i2<6 i3<28 | i4<5 i5<5
  strategy: rows (blocks of 16 i3 by 6 i2 accumulate side by side, the last computing 16 to store 12; the reductions read strided along i5)
  serial: one thread (NDLC_THREADS=1 or no thread team on this system)
  $0 = %x[1152*i0 + 36*i1 + i3 + 36*i4 + i5]
  $1 = %w[i2 + 30*i4 + 6*i5]
  phase 0: reduce
    acc0 = add of mul($0, $1)
    store %0[4704*i0 + 28*i1 + 784*i2 + i3] = acc0"""


def test_a_ragged_row_whose_last_block_would_read_past_its_buffer_takes_no_tile():
    """Planes of exactly 28 + K - 1 columns: the last image's last block would read 4 elements past
    the buffer, so the row takes no tile (blocks of ROWS_BLOCK, as before ragged tiles), and its
    loops keep their order."""
    kernel = str(row_conv_kernel(32))
    assert "strategy: rows (blocks of 4096 i3 accumulate side by side; " in kernel
    assert "loops: i0<2 i1<6 i2<28 i3<28 | i4<5 i5<5" in kernel


@pytest.mark.parametrize("rest,itemsize,pieces", [
    (12, 4, ((0, 8), (8, 4))),  # the last block of rows of 28: a vector and a half
    (7, 4, ((0, 4), (4, 2), (6, 1))),
    (30, 4, ((0, 24), (24, 4), (28, 2))),
    (3, 8, ((0, 2), (2, 1))),  # float64: 4 lanes
])
def test_a_ragged_blocks_remainder_stores_in_whole_vectors_then_halves(rest, itemsize, pieces):
    assert ragged_pieces(rest, itemsize) == pieces


@pytest.mark.parametrize("rows,columns,itemsize,tile", [
    (10, 16, 4, (5, 16)),  # LeNet's conv2: 10 vectors
    (32, 32, 4, (4, 16)),  # 8 vectors, 6 loads a step (2 x 32 has as many: the first found stays)
    (10, 16, 8, (5, 8)),  # float64: half the lanes
    (7, 16, 4, (7, 8)),  # 7 x 16 would be 14 accumulators, 17 registers
    (6, 800, 4, (6, 16)),  # LeNet's conv1 over wide rows: not 3 x 32 (12 accumulators, 17 registers)
    (28, 6, 4, None),  # six channels fill no vector
    (3, 8, 4, None),  # 3 vectors: the adds' latency exposed
])
def test_register_tiles_fill_the_vector_registers(rows, columns, itemsize, tile):
    assert register_tile(rows, columns, itemsize, budget=15) == tile


@pytest.mark.parametrize("rows,columns,itemsize,tile", [
    (32, 32, 4, (4, 32)),  # the 3x3 32 -> 32 layer's rows: 16 accumulators, 4 + 4 loads a step
    (10, 16, 4, (10, 16)),  # LeNet's conv2: 20 accumulators beside 2 loads and a broadcast
    (4, 32, 4, (4, 32)),  # ResNet9's 4x4 layers
    (16, 48, 4, (4, 48)),  # 24 accumulators + 6 loads + 1 broadcast: 31
    (28, 16, 4, (14, 16)),  # 28 rows would be 56 accumulators
])
def test_avx512_register_tiles_fill_its_32_vector_registers_but_one(rows, columns, itemsize, tile):
    assert register_tile(rows, columns, itemsize, budget=31) == tile


@pytest.mark.parametrize("rows,least,channels,row", [
    (30, 34, 16, 35),  # 30 x 34 f32 planes, 4080 bytes apart: all 16 channels' elements in one or two L1 sets
    (34, 34, 16, 34),  # the 3x3 32x32 layer's 4624-byte planes spread already
    (16, 16, 16, 17),  # 1 KiB planes: every fourth channel in one set
    (32, 36, 1, 36),  # one channel
    (16, 16, 512, 16),  # more channels than the sets hold two of: no padding for it
])
def test_a_ragged_convs_planes_are_padded_apart_in_the_l1_cache(rows, least, channels, row):
    assert spread_row(rows, least, channels, 4) == row


@pytest.mark.parametrize("rows,columns,tile", [
    (6, 28, (6, 16)),  # rows of 28: 7/8 of 4 vectors, the last block storing 12
    (8, 14, (8, 8)),  # 14 of 16 lanes
    (16, 10, None),  # LeNet conv2's rows of 10 fill 5/8 of theirs: no ragged tile
    (6, 6, None),  # no whole vector
    (32, 32, (4, 16)),  # where a tile divides the row, ragged ones are not considered
])
def test_ragged_register_tiles_need_rows_that_fill_their_vectors(rows, columns, tile):
    assert register_tile(rows, columns, 4, ragged=True, budget=15) == tile
