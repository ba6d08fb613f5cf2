"""Loads and stores of a kernel's buffers: a mixin of the kernel emitter (codegen/llvm.py), which
supplies `kernel`, the builder `b`, `vars`, `pointers`, `debug`, the guard sets `known` and
`failing` (codegen/llvm_guards.py), and the lane helpers `_get`, `_put`, `_indices`, `_constant`
(codegen/llvm_lanes.py: inside a vector loop a contiguous access is one vector load or store) and
`_gathered`, `_scattered` (codegen/llvm_vector.py: a strided one, a lane's element each)."""
from llvmlite import ir

from ..ir.kernel_leaves import Index, Load
from .llvm_scalar import I8, I64, MEMORY, Values
from .llvm_vector import ZERO


class MemoryAccess:
    """Element addresses from affine forms, guarded and (when compiled with bounds checks) checked."""

    def _affine(self, form, skip=None):
        """The value of an affine form at the current loop variables (without variable `skip`):
        computed once per basic block and variables (loads and stores at one point share their
        offsets), without adding zeros or multiplying by one; each product and each partial sum
        of its terms, once per basic block too (the forms of one point share many of theirs:
        LeNet's step repeated ~800 such instructions, 4% of its kernels' IR, for LLVM to remove)."""
        b, offsets, block = self.b, self.offsets, id(self.b.block)
        used = tuple((c, var) for i, (c, var) in enumerate(zip(form.coeffs, self.vars))
                     if c and i != skip and var is not ZERO)
        key = (block, form.const, tuple((c, id(var)) for c, var in used))
        if key not in offsets:
            total = ir.Constant(I64, form.const) if form.const or not used else None
            for k, (c, var) in enumerate(used):
                part = (block, form.const, key[2][:k + 1])
                if part not in offsets:
                    product = (block, "product", c, id(var))
                    if product not in offsets:
                        offsets[product] = var if c == 1 else b.mul(var, ir.Constant(I64, c))
                    offsets[part] = offsets[product] if total is None else b.add(total, offsets[product])
                total = offsets[part]
            offsets[key] = total
        return offsets[key]

    def _address(self, access):
        """(element index, validity or None) of an access at the current loop variables; guards
        known to hold in the loop being emitted are not checked."""
        b, affine = self.b, self._affine
        valid = None
        for g in access.guards:
            if g in self.known:
                continue
            f = affine(g.form)
            ok = b.and_(b.icmp_signed(">=", f, ir.Constant(I64, 0)),
                        b.icmp_signed("<", f, ir.Constant(I64, g.bound * g.step)))
            if g.step > 1:
                ok = b.and_(ok, b.icmp_signed("==", b.srem(f, ir.Constant(I64, g.step)), ir.Constant(I64, 0)))
            valid = ok if valid is None else b.and_(valid, ok)
        index = affine(access.form)
        if access.step > 1:
            index = b.sdiv(index, ir.Constant(I64, access.step))
        if valid is not None:
            index = b.select(valid, index, ir.Constant(I64, 0))
        return index, valid

    def _load(self, n):
        """Load number `n` at the current point (at a vector loop's lanes): 0 where one of its
        guards fails (outside the loop being emitted, one known to fail makes it read nothing,
        emitting no instruction)."""
        load, b = self.kernel.loads[n], self.b
        if not self.failing.isdisjoint(load.access.guards):
            return self._constant(load.dtype, 0)
        if self.side_by_side and isinstance(load, Load) and load.buffer in self.kernel.local:
            return self._get(self._block_local(load.buffer, load.access), MEMORY[load.dtype])
        access = self._local(load.buffer, load.access) if isinstance(load, Load) else load.access
        index, valid = self._address(access)
        if isinstance(load, Index):
            return self._indices(index, access)
        if load.indirect:
            index, valid = self._row(load.indirect, index, valid)
        mem = MEMORY[load.dtype]
        index = self._checked(index, load.buffer, n)
        pointer = b.gep(self.pointers[load.buffer], [index], inbounds=True, source_etype=mem)
        stride = access.form.coeffs[self.lane_var] if self._along(access) else 1
        if stride != 1 and self.side_by_side and load.buffer not in self.kernel.outputs():
            value = self._gathered_once(n, pointer, mem, stride)
        else:
            value = self._gathered(pointer, mem, stride) if stride != 1 else self._get(
                pointer, mem, along=self._along(access), padded=load.buffer in self.kernel.local)
        if load.dtype == "bool":
            value = b.icmp_unsigned("!=", value, self._constant("u8", 0))
        if valid is not None:
            value = b.select(valid, value, self._constant(load.dtype, 0))
        return value

    def _row(self, rows, index, valid):
        """(element index, validity) of an indirect load whose access is at `index` (valid where
        `valid`, None: always): its row added, the index load's value (one for a vector loop's
        lanes: llvm_lanes.py keeps indirect loads whose rows move out of vector loops), valid
        where that is in [0, rows); 0 where not, so nothing outside the table is read."""
        b, picked = self.b, self.kernel.loads[rows.index]
        at, picked_valid = self._address(self._local(picked.buffer, picked.access))
        at = self._checked(at, picked.buffer, rows.index)
        mem = MEMORY[picked.dtype]
        row = b.load(b.gep(self.pointers[picked.buffer], [at], inbounds=True, source_etype=mem), typ=mem)
        if row.type.width < 64:
            row = b.zext(row, I64) if picked.dtype == "u8" else b.sext(row, I64)
        if picked_valid is not None:
            row = b.select(picked_valid, row, ir.Constant(I64, 0))
        inside = b.icmp_unsigned("<", row, ir.Constant(I64, rows.rows))
        index = b.select(inside, b.add(index, b.mul(row, ir.Constant(I64, rows.stride))), ir.Constant(I64, 0))
        return index, inside if valid is None else b.and_(valid, inside)

    def _gathered_once(self, n, pointer, mem, stride):
        """Rows side by side (llvm_rows.py): load number `n`'s lanes at the current element of the
        rows, gathered where a block first reads them and kept in a stack row of vectors (one per
        element), which later phases read back as one vector each (`self.kept`: the loads kept for
        the block being emitted). Not for a buffer the kernel writes: a later phase reads its new values."""
        b, k = self.b, self.kernel
        vector = ir.VectorType(mem, self.lanes)
        if n not in self.rows_kept:
            self.rows_kept[n] = self._entry_alloca(vector, f"kept{n}", k.extents[-1])
        at = b.gep(self.rows_kept[n], [self.vars[-1]], inbounds=True, source_etype=vector)
        if n in self.kept:
            return b.load(at)
        value = self._gathered(pointer, mem, stride)
        b.store(value, at)
        self.kept.add(n)
        return value

    def _checked(self, index, buffer, access):
        """`index`, or 0 where it is outside `buffer` after recording (kernel + 1, access number,
        index) in the debug array, when compiled with bounds checks (the first violation is kept).
        `access`: a load's number or a Store."""
        if self.debug is None:
            return index
        b, (number, sizes) = self.b, self.debug
        code = access if isinstance(access, int) else -1 - [id(s) for s in self.kernel.stores].index(id(access))
        outside = b.icmp_unsigned(">=", index, ir.Constant(I64, sizes[buffer]))
        with b.if_then(outside, likely=False):
            record = self.pointers["debug"]
            first = b.icmp_signed("==", b.load(record, typ=I64), ir.Constant(I64, 0))
            with b.if_then(first):
                for i, value in enumerate((ir.Constant(I64, number + 1), ir.Constant(I64, code), index)):
                    b.store(value, b.gep(record, [ir.Constant(I64, i)], source_etype=I64))
        return b.select(outside, ir.Constant(I64, 0), index)

    def _local(self, buffer, access):
        """The access as made: within the thread's row for a row-local temporary."""
        return access.within_row(self.kernel.outer) if buffer in self.kernel.local else access

    def _stores(self, stores):
        """Every store's value first (so a store may overwrite what another value reads), then the stores."""
        b, memo = self.b, Values()
        values = [self._emit(store.value, memo, store.dtype) for store in stores]
        for store, value in self._uncollected(stores, values):  # a streamed group's: kept (llvm_stream.py)
            if self.side_by_side and store.buffer in self.kernel.local:
                self._put(value, self._block_local(store.buffer, store.access))
                continue
            made = self._local(store.buffer, store.access)
            index, _ = self._address(made)
            index = self._checked(index, store.buffer, store)
            if store.dtype == "bool":
                value = b.zext(value, self._shaped(I8))
            pointer = b.gep(self.pointers[store.buffer], [index], inbounds=True, source_etype=MEMORY[store.dtype])
            stride = made.form.coeffs[self.lane_var] if self._along(made) else 1
            if stride != 1:  # a lane's element each (llvm_vector.py)
                self._scattered(value, pointer, stride)
            else:
                self._put(value, pointer, padded=store.buffer in self.kernel.local)
