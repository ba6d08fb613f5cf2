"""Memory planning: which state updates a program may write in place of their state."""
import numpy as np

from ndlc.passes.fusion import fuse
from ndlc.passes.memory import plan_memory
from ndlc.jit.compile import compile_graph
from ndlc.ir import interpret, parse, run

STEP = """
graph @step(%g: f32[4], %w: f32[4] state, %u: f32[4] state, %t: f32[4,4] state) {
  %0 = mul_scalar(%u, scalar=0.9) : f32[4]
  %1 = add(%0, %g) : f32[4]
  %2 = add(%w, %u) : f32[4]
  %3 = transpose(%t, axes=(0, 1)) : f32[4,4]
  %4 = summation(%t, axes=(1,)) : f32[4]
  return %4, new %u = %1, new %w = %2, new %t = %3
}"""


def test_safe_updates_are_in_place_and_hazards_are_not():
    program = plan_memory(fuse(parse(STEP)))
    by_state = {s: o for o, s in program.in_place.items()}
    assert "u" in by_state, "w's update reads the old u in the pass that writes u's update, before it"
    assert "w" in by_state, "w's kernel reads w only at the element it writes"
    assert "t" not in by_state, "a transpose reads other elements of t than it writes"
    assert f"%{by_state['w']} is written in place of %w" in str(program)


def test_a_state_read_at_other_elements_in_the_same_pass_is_not_overwritten():
    program = plan_memory(fuse(parse("""
graph @step(%g: f32[4], %u: f32[4] state, %m: f32[4,4]) {
  %0 = mul_scalar(%u, scalar=0.9) : f32[4]
  %1 = add(%0, %g) : f32[4]
  %2 = broadcast_to(%u, shape=(4, 4)) : f32[4,4]
  %3 = multiply(%m, %2) : f32[4,4]
  %4 = summation(%3, axes=(1,)) : f32[4]
  return %4, new %u = %1
}""")))
    (kernel,) = program.kernels
    assert len(kernel.outputs()) == 2 and program.in_place == {}, str(program)


def test_in_place_run_equals_the_interpreter_and_updates_the_given_arrays():
    graph = parse(STEP)
    rng = np.random.default_rng(0)
    g, w, u, t = (rng.standard_normal(s).astype(np.float32) for s in [(4,), (4,), (4,), (4, 4)])
    expected = interpret(graph, g, w, u, t)
    env = run(graph, [g, w, u, t])
    program = compile_graph(graph)
    state = [w.copy(), u.copy(), t.copy()]
    results = program.run(g, *state, update_state=True)
    np.testing.assert_allclose(results[0], expected[0], rtol=1e-6)
    new = {s.name: env[v] for s, v in graph.updates.items()}
    for got, name in zip(results[1:], ["u", "w", "t"]):
        np.testing.assert_allclose(got, new[name], rtol=1e-6)
    assert results[2] is state[0] and results[1] is state[1], "w and u were written into their own arrays"
    np.testing.assert_allclose(state[0], new["w"], rtol=1e-6)
    np.testing.assert_array_equal(state[2], t, err_msg="t's update is not in place")


GEMM_STEP = """
graph @step(%x: f32[8,4], %g: f32[8,3], %h: f32[8,3], %w: f32[4,3] state, %m: f32[4,3] state, %v: f32[4,3] state, %s: f32[3,3] state, %q: f32[4,3] state) {
  %0 = transpose(%x, axes=(0, 1)) : f32[4,8]
  %1 = matmul(%0, %g) : f32[4,3]
  %2 = mul_scalar(%w, scalar=0.01) : f32[4,3]
  %3 = add(%1, %2) : f32[4,3]
  %4 = mul_scalar(%m, scalar=0.9) : f32[4,3]
  %5 = add(%4, %3) : f32[4,3]
  %6 = multiply(%3, %3) : f32[4,3]
  %7 = mul_scalar(%v, scalar=0.99) : f32[4,3]
  %8 = add(%7, %6) : f32[4,3]
  %9 = sqrt(%8) : f32[4,3]
  %10 = add_scalar(%9, scalar=1e-08) : f32[4,3]
  %11 = divide(%5, %10) : f32[4,3]
  %12 = mul_scalar(%11, scalar=-0.1) : f32[4,3]
  %13 = add(%w, %12) : f32[4,3]
  %14 = matmul(%s, %s) : f32[3,3]
  %15 = add(%s, %14) : f32[3,3]
  %16 = matmul(%0, %h) : f32[4,3]
  %17 = add(%q, %16) : f32[4,3]
  return new %w = %13, new %m = %5, new %v = %8, new %s = %15, new %q = %17
}"""


def test_an_update_fused_after_a_gemm_is_in_place_unless_blas_reads_or_writes_the_state():
    graph = parse(GEMM_STEP)
    compiled = compile_graph(graph)  # the schedule hands the products to BLAS
    by_state = {s: o for o, s in compiled.kernels.in_place.items()}
    assert {"w", "m", "v"} <= by_state.keys(), "Adam's update reads w, m, v at the element it stores, after the gemm"
    assert "s" not in by_state, "the gemm reads s, which its update would overwrite"
    assert "q" not in by_state, "the gemm's product is q's update: BLAS would overwrite q before it is read"
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs]
    env = run(graph, arrays)
    state = [a.copy() for a in arrays[3:]]
    results = compiled.run(*arrays[:3], *state, update_state=True)
    assert [r is a for r, a in zip(results, state)] == [True, True, True, False, False]
    for got, (s, v) in zip(results, graph.updates.items()):
        np.testing.assert_allclose(got, env[v], rtol=1e-5, atol=1e-6, err_msg=s.name)


def test_without_update_state_inputs_are_never_written():
    program = compile_graph(parse(STEP))
    state = [np.ones(4, np.float32), np.ones(4, np.float32), np.ones((4, 4), np.float32)]
    program.run(np.ones(4, np.float32), *state)
    assert all((a == 1).all() for a in state)


def test_shared_or_read_only_state_is_not_written_in_place():
    program = compile_graph(parse(STEP))
    w = np.ones(4, np.float32)
    w.flags.writeable = False
    results = program.run(np.ones(4, np.float32), w, np.ones(4, np.float32), np.ones((4, 4), np.float32),
                          update_state=True)
    assert results[2] is not w and (w == 1).all()
    shared = np.ones(4, np.float32)
    results = program.run(shared, shared, np.ones(4, np.float32), np.ones((4, 4), np.float32), update_state=True)
    assert results[2] is not shared and (shared == 1).all()


def test_a_temporary_one_kernel_reads_at_the_row_it_writes_is_kept_a_row_per_thread():
    from ndlc.passes.schedule import schedule
    program = plan_memory(schedule(fuse(parse("""
graph @softmax(%x: f32[64,40]) {
  %0 = max(%x, axes=(1,)) : f32[64]
  %1 = reshape(%0, shape=(64, 1)) : f32[64,1]
  %2 = broadcast_to(%1, shape=(64, 40)) : f32[64,40]
  %3 = negate(%2) : f32[64,40]
  %4 = add(%x, %3) : f32[64,40]
  %5 = exp(%4) : f32[64,40]
  %6 = summation(%5, axes=(1,)) : f32[64]
  %7 = reshape(%6, shape=(64, 1)) : f32[64,1]
  %8 = broadcast_to(%7, shape=(64, 40)) : f32[64,40]
  %9 = divide(%5, %8) : f32[64,40]
  %10 = summation(%5, axes=(0,)) : f32[40]
  return %9, %10
}"""))))
    row_kernel = next(k for k in program.kernels if "9" in k.outputs())
    assert row_kernel.local == {"0": 1, "6": 1} and program.buffers["5"].kind == "temp", str(program)
    assert "%6 is local: one row of 1 per thread" in str(row_kernel)


def test_row_local_temporaries_compute_the_same_values():
    graph = parse("""
graph @softmax(%x: f32[64,40]) {
  %0 = logsoftmax(%x, axis=1) : f32[64,40]
  %1 = exp(%0) : f32[64,40]
  return %1
}""")
    x = np.random.default_rng(0).standard_normal((64, 40)).astype(np.float32)
    program = compile_graph(graph)
    assert any(k.local for k in program.kernels.kernels)
    np.testing.assert_allclose(program.run(x)[0], interpret(graph, x)[0], rtol=1e-6, atol=1e-7)


def test_a_state_read_indirectly_where_its_update_is_stored_is_not_overwritten():
    """The indirect load's access is the element its update stores, but its row is another's."""
    from ndlc.ir import parse_kernels
    text = """program @step(%w, %i) -> (new %w = %0)
  %w: f32[3,2] input
  %i: i64[3] input
  %0: f32[3,2] output

kernel k0 -> %0
  loops: i0<3 i1<2
  $0 = %i[i0]
  $1 = %w[2*$0 + 2*i0 + i1 if 0 <= $0 < 1]
  store %0[2*i0 + i1] = $1"""
    assert plan_memory(parse_kernels(text)).in_place == {}
    assert plan_memory(parse_kernels(text.replace("$1 = %w[2*$0 + 2*i0 + i1 if 0 <= $0 < 1]", "$1 = %w[2*i0 + i1]")))\
        .in_place == {"0": "w"}
