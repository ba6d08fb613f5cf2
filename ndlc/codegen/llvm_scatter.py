"""A Scatter kernel (ir/kernel.py) as an LLVM function: its columns (this thread's piece of them,
where the schedule splits the kernel) zeroed in every row of the output, then, token by token in
order, the token's row of values added into the output's row its index picks (an index outside
[0, rows) adds nothing). Each column's sums run in token order, on any number of threads; the
column loops are contiguous, for LLVM's vectoriser (no two tokens' adds are reordered)."""
from llvmlite import ir

from ..ir.types import is_float
from .llvm_scalar import I64, TYPES
from .llvm_text import uniquely_named

PTR = ir.PointerType()


class ScatterFunction:
    """The internal function `name` running `kernel`'s Scatter on the pointers of `used` (its
    buffers, then the bounds-checked program's debug array, which it does not need) and, where the
    kernel is split, its range of columns; `function` is it."""

    def __init__(self, module, kernel, used, name, linkage):
        s = self.scatter = kernel.scatter
        split = [I64, I64] if kernel.split else []
        fnty = ir.FunctionType(ir.VoidType(), [PTR] * len(used) + split)
        self.function = fn = uniquely_named(ir.Function(module, fnty, name))
        fn.linkage = linkage
        fn.attributes.add("noinline")
        pointers = dict(zip(used, fn.args))
        for arg in fn.args[:len(used)]:
            arg.add_attribute("noalias")
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.element, self.width = TYPES[s.dtype], ir.Constant(I64, s.width)
        first, stop = fn.args[len(used):] if split else (ir.Constant(I64, 0), self.width)
        values, indices, out = (self.b.gep(pointers[name], [ir.Constant(I64, at)], inbounds=True,
                                           source_etype=TYPES[dtype])
                                for name, at, dtype in zip(s.buffers, s.at, (s.dtype, s.index_dtype, s.dtype)))
        self._for(ir.Constant(I64, s.rows), lambda row: self._columns(
            first, stop, lambda column: self.b.store(ir.Constant(self.element, 0), self._at(out, row, column))))
        self._for(ir.Constant(I64, s.count), lambda token: self._add_row(out, values, indices, token, first, stop))
        self.b.ret_void()

    def _add_row(self, out, values, indices, token, first, stop):
        """Row `token` of `values` added into the row of `out` that its index picks, if in range."""
        b = self.b
        kind = TYPES[self.scatter.index_dtype]
        index = b.load(b.gep(indices, [token], inbounds=True, source_etype=kind), typ=kind)
        row = index if index.type == I64 else (b.zext if self.scatter.index_dtype == "u8" else b.sext)(index, I64)
        inside = b.icmp_unsigned("<", row, ir.Constant(I64, self.scatter.rows))  # a negative index is huge
        with b.if_then(inside):
            def add(column):
                target = self._at(out, row, column)
                plus = b.fadd if is_float(self.scatter.dtype) else b.add
                total = plus(b.load(target, typ=self.element), b.load(self._at(values, token, column), typ=self.element))
                b.store(total, target)
            self._columns(first, stop, add)

    def _at(self, pointer, row, column):
        """The address of element (row, column) of a row-major matrix of the scatter's width."""
        b = self.b
        return b.gep(pointer, [b.add(b.mul(row, self.width), column)], inbounds=True, source_etype=self.element)

    def _columns(self, first, stop, body):
        self._for(self.b.sub(stop, first), lambda k: body(self.b.add(first, k)))

    def _for(self, count, body):
        """body(i) for i = 0 .. count - 1, a counted loop."""
        b = self.b
        before, head = b.block, b.append_basic_block("loop")
        loop_body, after = b.append_basic_block("body"), b.append_basic_block("after")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64)
        i.add_incoming(ir.Constant(I64, 0), before)
        b.cbranch(b.icmp_signed("<", i, count), loop_body, after)
        b.position_at_end(loop_body)
        body(i)
        following = b.add(i, ir.Constant(I64, 1))
        i.add_incoming(following, b.block)
        b.branch(head)
        b.position_at_end(after)
