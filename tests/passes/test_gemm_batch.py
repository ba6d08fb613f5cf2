"""passes/gemm_batch.py: a gemm's batch loop folded into its rows where the items share the right
operand and one call keeps each item's bits (text), and the compiled product's bits then those of
each item's own call, on one and two threads."""
import numpy as np
import pytest

from ndlc.ir import parse
from ndlc.jit.compile import compile_graph
from ndlc.passes.fusion import fuse
from ndlc.passes.gemm_batch import folded_gemm_batches
from ndlc.passes.gemm_pieces import FINE_CORES, TILED_CORES
from ndlc.runtime import libraries


def _batched(a, b, epilogue=False):
    """The graph of a @ b (a batched left operand), with a bias and relu after it where `epilogue`."""
    out = a[:-1] + b[-1:]
    shape = ",".join(map(str, out))
    lines = [f"graph @p(%a: f32[{','.join(map(str, a))}], %b: f32[{','.join(map(str, b))}], %c: f32[{b[-1]}]) {{",
             f"  %0 = matmul(%a, %b) : f32[{shape}]"]
    if epilogue:
        lines += [f"  %1 = broadcast_to(%c, shape=({', '.join(map(str, out))})) : f32[{shape}]",
                  f"  %2 = add(%0, %1) : f32[{shape}]", f"  %3 = relu(%2) : f32[{shape}]"]
    return parse("\n".join(lines + [f"  return %{3 if epilogue else 0}", "}"]))


def _kernel(graph, core):
    (kernel,) = folded_gemm_batches(fuse(graph, use_blas=True), core).kernels
    return str(kernel)


def test_items_sharing_the_right_operand_are_one_call_over_their_rows():
    text = _kernel(_batched((16, 257, 300), (300, 130)), "skylakex")
    assert "loops: i0<4112 i1<130" in text and "call sgemm(%a, %b) -> %0  (4112x300 @ 300x130)" in text


def test_every_batch_loop_folds_and_the_epilogue_reads_the_folded_rows():
    text = _kernel(_batched((2, 3, 192, 100), (100, 63), epilogue=True), "haswell")
    assert "loops: i0<1152 i1<63" in text and "(1152x100 @ 100x63)" in text
    assert "%c[i1]" in text and "%3[63*i0 + i1]" in text


@pytest.mark.parametrize("a, b, core", [
    ((16, 257, 100), (16, 100, 63), "skylakex"),  # each item its own right operand
    ((16, 257, 100), (100, 63), "skylakex"),  # items in small-matrix calls, which a folded call would cut otherwise
    ((16, 33, 100), (100, 63), "skylakex"),  # items on the small-matrix kernels: one call takes the packed path
    ((16, 257, 100), (100, 63), "haswell"),  # rows not a multiple of the tiles'
    ((16, 192, 100), (100, 63), ""),  # a core whose kernels are not modelled
])
def test_a_batch_loop_stays_where_one_call_could_sum_otherwise(a, b, core):
    text = _kernel(_batched(a, b), core)
    assert f"per i0: call sgemm(%a[{a[1] * a[2]}*i0]" in text


@pytest.mark.skipif(libraries.blas_core() not in FINE_CORES + TILED_CORES, reason="folds on modelled kernels only")
@pytest.mark.parametrize("a, b", [((16, 257, 300), (300, 130)), ((4, 3, 96, 260), (260, 129)), ((5, 160, 200), (200, 190))])
def test_a_folded_batch_gives_each_items_own_calls_bits(a, b, monkeypatch):
    rng = np.random.default_rng(0)
    x, w, c = rng.standard_normal(a, dtype=np.float32), rng.standard_normal(b, dtype=np.float32), np.zeros(b[-1], np.float32)
    items = np.stack([x.reshape(-1, *a[-2:])[i] @ w for i in range(int(np.prod(a[:-2])))]).reshape(a[:-1] + b[-1:])
    for threads in (1, 2):
        monkeypatch.setenv("NDLC_THREADS", str(threads))
        monkeypatch.setenv("NDLC_TEAM", "budget")
        program = compile_graph(_batched(a, b))
        (kernel,) = program.kernels.kernels
        assert len(kernel.extents) == 2 or libraries.blas_core() in TILED_CORES
        assert program.run(x, w, c)[0].tobytes() == items.tobytes(), threads


@pytest.mark.skipif(libraries.blas_core() not in FINE_CORES, reason="folds at 257 rows on SkylakeX's kernels")
def test_batch_loops_fold_only_as_far_as_the_epilogue_regroups():
    """A bias of one row per (outer item, row) folds the inner batch loop, not the outer one."""
    import ndlc as ndl
    rng = np.random.default_rng(1)
    x, w, c = (rng.standard_normal(s, dtype=np.float32) for s in ((2, 3, 257, 300), (300, 130), (3, 257, 130)))
    step = ndl.compile(lambda x, w, c: ndl.relu(x @ w + c))
    out = step(x, w, c).numpy()
    assert "per i0: call sgemm(%x[231300*i0], %w) -> %3  (771x300 @ 300x130)" in step.ir("scheduled")
    np.testing.assert_array_equal(out, np.maximum(np.stack([x[i] @ w for i in range(2)]) + c, 0))


@pytest.mark.skipif(libraries.blas_core() not in FINE_CORES, reason="the rule is for SkylakeX's kernels")
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_items_on_the_packed_path_give_one_calls_bits_in_random_products(dtype):
    """The rule `_same_bits` applies, checked on numpy's own OpenBLAS (one thread): each item's call
    and one call over all items' rows, for random products whose items take the packed path (float64:
    rows a multiple of its tiles' too)."""
    from types import SimpleNamespace
    from ndlc.passes.gemm_batch import _same_bits
    rng = np.random.default_rng(4)
    held = libraries.blas_threads()
    libraries._blas()[3](1)
    try:
        checked = 0
        while checked < 60:
            n, k = (int(np.exp(rng.uniform(np.log(2), np.log(600)))) for _ in range(2))
            transposed = bool(rng.integers(2))
            m, items = int(rng.integers(2, 700)), int(rng.integers(2, 5))
            gemm = SimpleNamespace(a=SimpleNamespace(transposed=False), b=SimpleNamespace(transposed=transposed),
                                   m=m, n=n, k=k, dtype=dtype)
            if not _same_bits(gemm, "skylakex") or items * m * n * k > 3e7:
                continue
            x = rng.standard_normal((items, m, k)).astype(np.float32 if dtype == "f32" else np.float64)
            w = rng.standard_normal((n, k) if transposed else (k, n)).astype(x.dtype)
            w = w.T if transposed else w
            each = np.stack([x[i] @ w for i in range(items)])
            assert each.tobytes() == (x.reshape(-1, k) @ w).tobytes(), (m, n, k, transposed, items)
            checked += 1
    finally:
        libraries._blas()[3](held)
