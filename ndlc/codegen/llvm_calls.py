"""The calls out of generated CPU code: libgomp (a split loop run on the thread budget), CBLAS gemm
(bound at load by runtime/libraries.py); the runner stamps NDLC_PROFILE's cycle counter (llvm_program.py)."""
from llvmlite import ir

from ..ir.kernel import gemm_symbol
from . import mathlib
from .llvm_scalar import I64, TYPES

CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112  # CBLAS enum values
I32, PTR = ir.IntType(32), ir.PointerType()
_OPENMP = {"GOMP_parallel": ir.FunctionType(ir.VoidType(), [PTR, PTR, I32, I32]),
           "GOMP_barrier": ir.FunctionType(ir.VoidType(), []),
           "omp_get_thread_num": ir.FunctionType(I32, []), "omp_get_num_threads": ir.FunctionType(I32, [])}


def _outlined(module, kernel, fn, count):
    """`<fn>.omp(ptr data)`: reads `count` buffer pointers from `data` and runs `fn` over the
    calling thread's range of the split loop (ceil(n / threads) iterations, the last ones fewer),
    or, for a 'chunks' kernel, as thread number `thread` of `threads`."""
    outlined = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), f"{fn.name}.omp")
    outlined.linkage = "internal"
    b = ir.IRBuilder(outlined.append_basic_block("entry"))
    pointers = [b.load(b.gep(outlined.args[0], [ir.Constant(I64, i)], source_etype=PTR), typ=PTR)
                for i in range(count)]
    thread = b.sext(b.call(declare_openmp(module, "omp_get_thread_num"), []), I64)
    threads = b.sext(b.call(declare_openmp(module, "omp_get_num_threads"), []), I64)
    if kernel.strategy == "chunks":
        b.call(fn, pointers + [thread, threads])
        b.ret_void()
        return outlined
    n = ir.Constant(I64, kernel.extents[kernel.split.loop])
    chunk = b.sdiv(b.add(n, b.sub(threads, ir.Constant(I64, 1))), threads)
    start = mathlib.intrinsic(b, "llvm.smin", b.mul(thread, chunk), n)
    b.call(fn, pointers + [start, mathlib.intrinsic(b, "llvm.smin", b.add(start, chunk), n)])
    b.ret_void()
    return outlined


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


def call_parallel(b, kernel, fn, args):
    """Run kernel function `fn` over `args` on `kernel.split.threads` threads (GOMP_parallel of an
    outlined function reading the buffer pointers from an array on the caller's stack)."""
    module = b.module
    data = b.alloca(PTR, size=len(args), name=f"{fn.name}.data")
    for i, pointer in enumerate(args):
        b.store(pointer, b.gep(data, [ir.Constant(I64, i)], source_etype=PTR))
    b.call(declare_openmp(module, "GOMP_parallel"), [_outlined(module, kernel, fn, len(args)), data,
                                                     ir.Constant(I32, kernel.split.threads), ir.Constant(I32, 0)])
