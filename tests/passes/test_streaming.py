"""passes/streaming.py as text: which stores the schedule makes streaming stores, and why, in
the `scheduled` stage (parsed back to the same text)."""
from ndlc.ir import parse_kernels
from ndlc.ir.streams import Streams, parse_streams, stream_lines
from ndlc.passes.schedule import schedule


def scheduled(text):
    got = str(schedule(parse_kernels(text), threads=1))
    assert str(parse_kernels(got)) == got
    return got


def elementwise(n):
    return f"""
program @p(%x) -> (%y)
  %x: f32[{n}] input
  %y: f32[{n}] output

kernel k0 -> %y
  loops: i0<{n}
  $0 = %x[i0]
  store %y[i0] = exp($0)
"""


def test_a_large_elementwise_output_streams_and_says_why():
    got = scheduled(elementwise(1 << 22))
    assert "  streaming stores to %y: 16.0 MiB, in a kernel moving 32.0 MiB (over 16 MiB: its data leaves the " \
           "cache anyway)\n" in got, got


def test_kernels_whose_data_fits_the_cache_print_no_decision():
    for n in (1 << 10, 1 << 20):  # 8 KiB, 8 MiB moved
        assert "stor" not in scheduled(elementwise(n)).split("loops:")[1].split("$0")[0]


def test_a_buffer_the_kernel_reads_is_not_streamed():
    """%y is read back by the kernel's next phase: only %z streams."""
    got = scheduled("""
program @p(%x) -> (%y, %z)
  %x: f32[4194304] input
  %y: f32[4194304] output
  %z: f32[4194304] output

kernel k0 -> %y, %z
  loops: i0<4194304
  $0 = %x[i0]
  $1 = %y[i0]
  phase 0: per outer point
    store %y[i0] = exp($0)
  phase 1: per outer point
    store %z[i0] = add($1, 1.0)
""")
    assert "  streaming stores to %z: 16.0 MiB, in a kernel moving 48.0 MiB (over 16 MiB: its data leaves the " \
           "cache anyway); %y cached: a kernel that reads it, or guarded loads\n" in got, got


def test_a_row_sum_stored_once_per_outer_point_is_not_streamed():
    got = scheduled("""
program @p(%x) -> (%y)
  %x: f32[1048576,8] input
  %y: f32[1048576] output

kernel k0 -> %y
  loops: i0<1048576 | i1<8
  $0 = %x[8*i0 + i1]
  phase 0: reduce
    acc0 = add of $0
    store %y[i0] = acc0
""")
    assert "  stores cached: %y cached: stored once per outer point\n" in got, got


def test_the_decision_reads_back():
    for streams in (Streams(("a", "b.c"), "why: 1; 2"), Streams((), "the kernel moves 1.0 MiB")):
        (line,) = stream_lines(streams)
        assert parse_streams(line) == streams
    assert stream_lines(None) == [] and parse_streams("  serial: too small") is None


def rows(r, c):
    return f"""
program @p(%x, %w) -> (%y)
  %x: f32[{r},{c}] input
  %w: f32[1,{c}] input
  %y: f32[{r},{c}] output

kernel k0 -> %y
  loops: i0<{r} i1<{c}
  $0 = %x[{c}*i0 + i1]
  $1 = %w[i1]
  store %y[{c}*i0 + i1] = mul($0, $1)
"""


def test_a_map_over_short_rows_that_are_not_whole_lines_stays_cached():
    """Rows of 31 float32 (124 bytes) and of 255 (1020) stay cached; rows of 256 and of 48 (whole
    lines) and of 257 (over 1 KiB) stream."""
    for c in (31, 255):
        got = scheduled(rows((1 << 22) // c, c))
        assert f"  stores cached: %y cached: rows of {4 * c} bytes, not whole 64-byte lines\n" in got, got
    for c in (256, 257, 48):
        assert "  streaming stores to %y: " in scheduled(rows((1 << 22) // c, c))
