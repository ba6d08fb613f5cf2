"""A kernel program in LLVM IR, as modules the runtime compiles (or finds in its disk cache) apart:
the runner, `ndlc_main(ptr buffers, ptr plan, ptr functions)`, the same for every program, which
calls the kernels in schedule order as the program's *plan* says, and the kernels' module, one
function `f(ptr args)` per distinct kernel (codegen/llvm.py), made only for the kernels the runtime
asks for: a kernel repeated through the program (an unrolled recurrence's cell) is one function
called with different pointers, compiled once, and a program's own code is only its plan (an i64
array): no program-sized function reaches LLVM (a 723-call entry took seconds to translate).

The plan is [calls, most arguments of a call, profile slot], then per call its argument count and,
per argument, (slot in `buffers`, byte offset); `functions` holds each call's function address.
With `profile`, the pointer array has one more slot, an i64 array that gets the cycle counter
before each kernel and after the last. With `debug`, one more after it: every load and store
checks its element index against its buffer's size, and the first out of bounds writes (kernel
number + 1, access, index) into that i64[3] array and is redirected to element 0."""
import functools
import math

from ..ir.kernel import ENTRY
from ..ir.types import numpy_dtype
from .kernel_key import Keys
from .llvm import kernel_module
from .llvm_lanes import lane_loop

_RUNNER = """define void @"{entry}"(ptr %buffers, ptr %plan, ptr %functions) {{
entry:
  %count = load i64, ptr %plan
  %most.at = getelementptr inbounds i64, ptr %plan, i64 1
  %most = load i64, ptr %most.at
  %args = alloca ptr, i64 %most
{profile_setup}  br label %call
call:
  %k = phi i64 [0, %entry], [%k.next, %run]
  %p = phi i64 [3, %entry], [%p.next, %run]
  %more = icmp slt i64 %k, %count
  br i1 %more, label %gather, label %exit
gather:
  %nargs.at = getelementptr inbounds i64, ptr %plan, i64 %p
  %nargs = load i64, ptr %nargs.at
  br label %argument
argument:
  %a = phi i64 [0, %gather], [%a.next, %pointer]
  %left = icmp slt i64 %a, %nargs
  br i1 %left, label %pointer, label %run
pointer:
  %twice = shl i64 %a, 1
  %pair = add i64 %p, %twice
  %slot.at = getelementptr inbounds i64, ptr %plan, i64 %pair
  %slot.at1 = getelementptr inbounds i64, ptr %slot.at, i64 1
  %slot = load i64, ptr %slot.at1
  %offset.at = getelementptr inbounds i64, ptr %slot.at, i64 2
  %offset = load i64, ptr %offset.at
  %base.at = getelementptr inbounds ptr, ptr %buffers, i64 %slot
  %base = load ptr, ptr %base.at
  %address = getelementptr inbounds i8, ptr %base, i64 %offset
  %arg.at = getelementptr inbounds ptr, ptr %args, i64 %a
  store ptr %address, ptr %arg.at
  %a.next = add nuw nsw i64 %a, 1
  br label %argument
run:
{profile_stamp}  %fn.at = getelementptr inbounds ptr, ptr %functions, i64 %k
  %fn = load ptr, ptr %fn.at
  call void %fn(ptr %args)
  %k.next = add nuw nsw i64 %k, 1
  %pairs = shl i64 %nargs, 1
  %p.skip = add i64 %p, 1
  %p.next = add i64 %p.skip, %pairs
  br label %call
exit:
{profile_end}  ret void
}}
"""
_PROFILE_SETUP = """  %stamps.slot.at = getelementptr inbounds i64, ptr %plan, i64 2
  %stamps.slot = load i64, ptr %stamps.slot.at
  %stamps.at = getelementptr inbounds ptr, ptr %buffers, i64 %stamps.slot
  %stamps = load ptr, ptr %stamps.at
"""
_STAMP = """  %{name} = call i64 @llvm.readcyclecounter()
  %{name}.at = getelementptr inbounds i64, ptr %stamps, i64 {index}
  store i64 %{name}, ptr %{name}.at
"""


@functools.lru_cache(maxsize=None)
def runner(profile, triple="", data_layout="") -> str:
    """The IR text of the runner module (with `profile`, it stamps the cycle counter)."""
    text = _RUNNER.format(entry=ENTRY, profile_setup=_PROFILE_SETUP if profile else "",
                          profile_stamp=_STAMP.format(name="before", index="%k") if profile else "",
                          profile_end=_STAMP.format(name="after", index="%count") if profile else "")
    declare = "declare i64 @llvm.readcyclecounter()\n" if profile else ""
    return f'; ModuleID = "ndlc.runner"\ntarget triple = "{triple}"\ntarget datalayout = "{data_layout}"\n\n' \
           f"{text}{declare}"


class LlvmProgram:
    """`runner`: the IR text of the runner module; `plan`: the program's plan (see the module
    docstring); `calls`: the function symbol of each call; `kernels`: symbol -> (a kernel, its
    KernelKey, its debug information) for each distinct kernel, in first-call order; `keyed`: how
    many kernels were keyed in full (a scan step's are keyed once per body kernel); `fma`: whether
    the target has fused multiply-adds (codegen/mathlib.py). `str()` is
    the whole program's IR (the 'llvm' stage: the runner, the calls, the kernels' module), made on
    first use."""

    def __init__(self, name, runner_ir, plan, calls, kernels, triple, data_layout, keyed=0, fma=False, avx512=False):
        self.name, self.runner, self.plan, self.calls, self.kernels = name, runner_ir, plan, calls, kernels
        self.keyed, self.fma, self.avx512 = keyed, fma, avx512
        self.triple, self.data_layout = triple, data_layout

    def vectorised(self, symbol) -> bool:
        """Whether codegen emits kernel `symbol`'s vectors itself (codegen/llvm_lanes.py), so that
        its module needs no LLVM vectoriser."""
        kernel, _, debug = self.kernels[symbol]
        return lane_loop(kernel, debug) is not None

    def module(self, symbols, name) -> str:
        """The IR text of module `name` defining the kernel functions `symbols`."""
        return kernel_module(name, [self.kernels[s] for s in symbols], self.triple, self.data_layout, self.fma,
                             self.avx512)

    @functools.cached_property
    def text(self) -> str:
        calls = [f"; call {i}: @{symbol}" for i, symbol in enumerate(self.calls)]
        return "\n".join([self.runner, f"; @{self.name}: the runner's plan", *calls, "",
                          self.module(list(self.kernels), f"{self.name}.kernels")])

    def __str__(self):
        return self.text


def lower_to_llvm(program, triple="", data_layout="", profile=False, debug=False, fma=False,
                  avx512=False) -> LlvmProgram:
    """The LlvmProgram of `program` (a kernel.Program) for a target with fused multiply-adds where
    `fma`, with AVX-512 where `avx512`; `profile` and `debug`: see the module docstring."""
    slots = {name: i for i, name in enumerate(program.buffers)}
    itemsize = {name: numpy_dtype(buffer.dtype).itemsize for name, buffer in program.buffers.items()}
    sizes = {name: math.prod(buffer.shape) for name, buffer in program.buffers.items()} if debug else None
    kernels, calls, body, most, keys = {}, [], [], 1, Keys()
    for index, kernel in enumerate(program.kernels):
        checks = (index, dict(sizes)) if debug else None  # the emitter adds the kernel's row-local sizes
        key = keys(kernel, checks)
        kernels.setdefault(key.symbol, (key.kernel, key, checks))
        calls.append(key.symbol)
        args = [(slots[name], offset * itemsize[name])
                for name, offset in zip(key.buffers, key.offsets)]
        args += [(len(slots) + profile, 0)] if debug else []
        body += [len(args)] + [n for pair in args for n in pair]
        most = max(most, len(args))
    plan = [len(calls), most, len(slots)] + body
    return LlvmProgram(program.name, runner(profile, triple, data_layout), plan, calls, kernels, triple, data_layout,
                       keys.keyed, fma, avx512)
