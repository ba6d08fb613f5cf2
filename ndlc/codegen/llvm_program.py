"""A kernel program in LLVM IR, as modules the runtime compiles (or finds in its disk cache) apart:
the entry module, whose `ndlc_main(ptr buffers)` loads every buffer pointer and calls the kernels
in schedule order, and the kernels' module, one function per distinct kernel (codegen/llvm.py),
made only for the kernels the runtime asks for: a kernel repeated through the program (an
unrolled recurrence's cell) is one function called with different pointers, compiled once.
With `profile`, the pointer array has one more slot, an i64 array that gets the cycle counter
before each kernel and after the last. With `debug`, one more after it: every load and store
checks its element index against its buffer's size, and the first out of bounds writes (kernel
number + 1, access, index) into that i64[3] array and is redirected to element 0."""
import functools
import math

from llvmlite import ir

from ..ir.kernel import ENTRY
from .kernel_key import kernel_key
from .llvm import PTR, kernel_module
from .llvm_calls import stamp
from .llvm_scalar import I64, MEMORY


class LlvmProgram:
    """`entry`: the IR text of the entry module; `kernels`: symbol -> (a kernel, its KernelKey,
    its debug information) for each distinct kernel, in first-call order. `str()` is the whole
    program's IR (the 'llvm' stage), made on first use."""

    def __init__(self, name, entry, kernels, triple, data_layout):
        self.name, self.entry, self.kernels = name, entry, kernels
        self.triple, self.data_layout = triple, data_layout

    def module(self, symbols, name) -> str:
        """The IR text of module `name` defining the kernel functions `symbols`."""
        return kernel_module(name, [self.kernels[s] for s in symbols], self.triple, self.data_layout)

    @functools.cached_property
    def text(self) -> str:
        return self.entry + "\n" + self.module(list(self.kernels), f"{self.name}.kernels")

    def __str__(self):
        return self.text


def lower_to_llvm(program, triple="", data_layout="", profile=False, debug=False) -> LlvmProgram:
    """The LlvmProgram of `program` (a kernel.Program); `profile` and `debug`: see the module docstring."""
    module = ir.Module(name=program.name)
    module.triple, module.data_layout = triple, data_layout
    order = list(program.buffers)
    entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), ENTRY)
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    pointers = {}
    for i, name in enumerate(order + (["profile"] if profile else []) + (["debug"] if debug else [])):
        slot = b.gep(entry.args[0], [ir.Constant(I64, i)], source_etype=ir.PointerType())
        pointers[name] = b.load(slot, typ=ir.PointerType(), name=f"buf.{name}")
    sizes = {name: math.prod(buffer.shape) for name, buffer in program.buffers.items()} if debug else None
    kernels = {}
    for index, kernel in enumerate(program.kernels):
        checks = (index, dict(sizes)) if debug else None  # the emitter adds the kernel's row-local sizes
        key = kernel_key(kernel, checks)
        kernels.setdefault(key.symbol, (key.kernel, key, checks))
        if profile:
            stamp(b, pointers["profile"], index)
        args = [b.gep(pointers[name], [ir.Constant(I64, offset)], inbounds=True,
                      source_etype=MEMORY[program.buffers[name].dtype]) if offset else pointers[name]
                for name, offset in zip(key.buffers, key.offsets)]
        args += [pointers["debug"]] if debug else []
        fn = module.globals.get(key.symbol) or ir.Function(
            module, ir.FunctionType(ir.VoidType(), [PTR] * len(args)), key.symbol)
        b.call(fn, args)
    if profile:
        stamp(b, pointers["profile"], len(program.kernels))
    b.ret_void()
    return LlvmProgram(program.name, str(module), kernels, triple, data_layout)
