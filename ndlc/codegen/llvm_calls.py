"""The calls out of generated CPU code: libgomp (a split loop run on a team of threads), CBLAS gemm
(bound at load by runtime/libraries.py); the runner stamps NDLC_PROFILE's cycle counter (llvm_program.py).
A split kernel's team is a run-time value, the process-wide i32 `TEAM` (bound at load like the
calls; runtime/team.py sets it per program call), capped at the threads it was scheduled for: its
work is handed out through counters, so its results do not depend on the team."""
from llvmlite import ir

from ..ir.kernel import TEAM, gemm_symbol
from . import mathlib
from .llvm_scalar import I64, TYPES

CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112  # CBLAS enum values
I32, PTR = ir.IntType(32), ir.PointerType()
_OPENMP = {"GOMP_parallel": ir.FunctionType(ir.VoidType(), [PTR, PTR, I32, I32]),
           "GOMP_barrier": ir.FunctionType(ir.VoidType(), [])}


def counters(kernel) -> int:
    """How many shared counters the threads of a split kernel take their work from: one for the
    pieces of its split loop, two per phase (chunks, then columns) for a 'chunks' kernel."""
    return 2 * len(kernel.phases) if kernel.split.piece is None else 1


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


def take_in_turn(b, counter, total, body):
    """body(i) for each i < total that this thread takes from the shared i64 `counter` (an atomic
    add, so the threads that keep their cores take what one that lost its own has not started)."""
    take, run, done = (b.append_basic_block(f"{part}.taken") for part in ("take", "run", "done"))
    b.branch(take)
    b.position_at_end(take)
    number = b.atomic_rmw("add", counter, ir.Constant(I64, 1), "monotonic")
    b.cbranch(b.icmp_signed("<", number, ir.Constant(I64, total)), run, done)
    b.position_at_end(run)
    body(number)
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


def declare_openmp(module, name):
    """libgomp's function `name` (bound at load: runtime/libraries.py), declared in `module` once."""
    return module.globals.get(name) or ir.Function(module, _OPENMP[name], name)


def declare_team(module):
    """The external i32 `TEAM`, declared in `module` once."""
    if TEAM in module.globals:
        return module.globals[TEAM]
    return ir.GlobalVariable(module, I32, TEAM)


def call_parallel(b, kernel, fn, args, count):
    """Run kernel function `fn` over the `count` pointers of the array `args` on a team of
    min(`TEAM`, `kernel.split.threads`) threads: GOMP_parallel of an outlined function reading the
    array's address, then that of the kernel's zeroed counters, from a pair on the caller's stack
    (each thread loads the pointers itself: the IR does not copy them); a team of one calls the
    outlined function itself (no libgomp thread wakes; its GOMP_barriers, outside any team, return
    at once)."""
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
            b.call(declare_openmp(module, "GOMP_parallel"), [outlined, data, team, ir.Constant(I32, 0)])
