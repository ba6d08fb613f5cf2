"""The calls out of generated CPU code: ndlc's thread team (`ndlc_parallel`, `ndlc_done`, `ndlc_wait`:
codegen/llvm_pool.py), CBLAS gemm (bound at load by runtime/libraries.py); the runner stamps
NDLC_PROFILE's cycle counter (llvm_program.py). A split kernel's team is a run-time value, the
process-wide i32 `TEAM` (bound at load like the calls; runtime/team.py sets it per program call),
capped at the threads it was scheduled for: its work is handed out through counters, so its
results do not depend on the team, nor on which of its threads ran a piece."""
from llvmlite import ir

from ..ir.kernel import TEAM, gemm_symbol
from . import mathlib
from .llvm_scalar import I64, TYPES

CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112  # CBLAS enum values
I32, PTR = ir.IntType(32), ir.PointerType()
_TEAM_CALLS = {"ndlc_parallel": ir.FunctionType(ir.VoidType(), [PTR, PTR, I32]),
               "ndlc_wait": ir.FunctionType(ir.VoidType(), [PTR, I64]),
               "ndlc_done": ir.FunctionType(ir.VoidType(), [PTR])}


def counters(kernel) -> int:
    """How many shared counters the threads of a split kernel take their work from: one for the
    pieces of its split loop; for a 'chunks' kernel, two per phase (chunks, then columns) and as
    many after them counting the pieces done (`done_counter`)."""
    return 4 * len(kernel.phases) if kernel.split.piece is None else 1


def done_counter(kernel, number) -> int:
    """The counter of a 'chunks' kernel's pieces of counter `number` done."""
    return number + 2 * len(kernel.phases)


def _outlined(module, kernel, fn, count):
    """`<fn>.omp(ptr data)`: reads the kernel's argument array (`count` buffer pointers) and the
    address of its counters from `data`; runs `fn` with the counters for a 'chunks' kernel;
    otherwise takes the split loop's next piece from the counter (an atomic add, so a thread that
    lost its core keeps only the piece it holds) and runs `fn` over it, until none is left."""
    outlined = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), f"{fn.name}.omp")
    outlined.linkage = "internal"
    b = ir.IRBuilder(outlined.append_basic_block("entry"))
    args, shared = (b.load(b.gep(outlined.args[0], [ir.Constant(I64, i)], source_etype=PTR), typ=PTR)
                    for i in range(2))
    pointers = [b.load(b.gep(args, [ir.Constant(I64, i)], source_etype=PTR), typ=PTR) for i in range(count)]
    pointers.append(shared)
    if kernel.split.piece is None:
        b.call(fn, pointers)
        b.ret_void()
        return outlined
    n, piece = kernel.extents[kernel.split.loop], kernel.split.piece

    def run(number):
        start = b.mul(number, ir.Constant(I64, piece))
        stop = mathlib.intrinsic(b, "llvm.smin", b.add(start, ir.Constant(I64, piece)), ir.Constant(I64, n))
        b.call(fn, pointers[:count] + [start, stop])
    take_in_turn(b, pointers[count], -(-n // piece), run)
    b.ret_void()
    return outlined


def take_in_turn(b, counter, total, body, finished=None):
    """body(i) for each i < total that this thread takes from the shared i64 `counter` (an atomic
    add, so the threads that keep their cores take what one that lost its own has not started);
    each counted in the i64 `finished` after it, where given (ndlc_done: what it wrote is seen by a
    thread that reads the count, and one asleep on the count wakes)."""
    take, run, done = (b.append_basic_block(f"{part}.taken") for part in ("take", "run", "done"))
    b.branch(take)
    b.position_at_end(take)
    number = b.atomic_rmw("add", counter, ir.Constant(I64, 1), "monotonic")
    b.cbranch(b.icmp_signed("<", number, ir.Constant(I64, total)), run, done)
    b.position_at_end(run)
    body(number)
    if finished is not None:
        b.call(declare_team_call(b.module, "ndlc_done"), [finished])
    b.branch(take)
    b.position_at_end(done)


def declare_gemm(module, dtype):
    """CBLAS gemm with 64-bit integers for `dtype`, declared in `module` by its gemm_symbol name."""
    name = gemm_symbol(dtype)
    if name in module.globals:
        return module.globals[name]
    i32, ptr, scalar = TYPES["i32"], ir.PointerType(), TYPES[dtype]
    return ir.Function(module, ir.FunctionType(ir.VoidType(), [i32, i32, i32, I64, I64, I64, scalar, ptr, I64,
                                                               ptr, I64, scalar, ptr, I64]), name)


def declare_team_call(module, name):
    """The team's function `name` (bound at load: runtime/libraries.py), declared in `module` once."""
    return module.globals.get(name) or ir.Function(module, _TEAM_CALLS[name], name)


def wait_for(b, done, total):
    """Wait until the i64 `done` counts `total` pieces (every thread's of them finished): where a
    phase of a 'chunks' kernel reads what the one before wrote. A thread that never took a piece
    is not waited for: only the pieces are."""
    b.call(declare_team_call(b.module, "ndlc_wait"), [done, ir.Constant(I64, total)])


def declare_team(module):
    """The external i32 `TEAM`, declared in `module` once."""
    if TEAM in module.globals:
        return module.globals[TEAM]
    return ir.GlobalVariable(module, I32, TEAM)


def call_parallel(b, kernel, fn, args, count):
    """Run kernel function `fn` over the `count` pointers of the array `args` on a team of
    min(`TEAM`, `kernel.split.threads`) threads: ndlc_parallel of an outlined function reading the
    array's address, then that of the kernel's zeroed counters, from a pair on the caller's stack
    (each thread loads the pointers itself: the IR does not copy them); a team of one calls the
    outlined function itself (no worker wakes; its waits find every piece done)."""
    module = b.module
    shared = b.alloca(I64, size=counters(kernel), name=f"{fn.name}.counters")
    for i in range(counters(kernel)):
        b.store(ir.Constant(I64, 0), b.gep(shared, [ir.Constant(I64, i)], source_etype=I64))
    data = b.alloca(PTR, size=2, name=f"{fn.name}.data")
    for i, pointer in enumerate((args, shared)):
        b.store(pointer, b.gep(data, [ir.Constant(I64, i)], source_etype=PTR))
    outlined = _outlined(module, kernel, fn, count)
    team = mathlib.intrinsic(b, "llvm.smin", b.load(declare_team(module), typ=I32),
                             ir.Constant(I32, kernel.split.threads))
    with b.if_else(b.icmp_signed("<=", team, ir.Constant(I32, 1))) as (alone, together):
        with alone:
            b.call(outlined, [data])
        with together:
            b.call(declare_team_call(module, "ndlc_parallel"), [outlined, data, team])
