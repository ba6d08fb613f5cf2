"""Loops whose loads are guarded (padding, slicing, stacking), emitted so that the guards are
checked as little as possible: a mixin of the kernel emitter (codegen/llvm.py), which supplies
`kernel`, the builder `b`, `vars`, `_affine`, `_for`, and the guard sets `known` (hold throughout
the code being emitted: its `_address` checks them not) and `failing` (fail throughout it: its
`_load` reads nothing)."""
import functools
import operator

from llvmlite import ir

from . import mathlib
from .llvm_scalar import I64
from .llvm_vector import point_guards, splittable


class GuardedLoops:
    """Splitting a loop by its loads' guards: an innermost loop in three ranges around where every
    guard holds, a loop of points one body per point."""

    def _splittable(self, var):
        """The guards (padding, slicing) that bound the innermost loop `var` as an interval."""
        return [g for load in self.kernel.loads for g in load.access.guards if splittable(g, var)]

    def _split_by_guards(self, var, start, stop, inner):
        """The innermost loop in three ranges: where some guard fails, where all hold (emitted
        without checks, so it vectorises: a padded conv's packing; on the lane loop, as codegen's
        vectors), and where some fails again (one point at a time). Bounds that do not depend on
        the other loops are constants (a pad's row: its vectors and their rest known)."""
        b = self.b
        guards = self._splittable(var)
        low, high = start, stop
        smax, smin = (functools.partial(mathlib.intrinsic, b, f"llvm.{name}") for name in ("smax", "smin"))
        for g in guards:
            rest = self._affine(g.form, skip=var)  # 0 <= c*v + rest < bound
            if g.form.coeffs[var] == 1:
                first = _fold(b.neg, operator.neg, rest)
                end = _fold(b.sub, operator.sub, ir.Constant(I64, g.bound), rest)
            else:
                first = _fold(b.sub, operator.sub, rest, ir.Constant(I64, g.bound - 1))
                end = _fold(b.add, operator.add, rest, ir.Constant(I64, 1))
            low, high = _fold(smax, max, low, first), _fold(smin, min, high, end)
        low = _fold(smin, min, low, stop)
        high = _fold(smax, max, high, low)
        self._for(var, start, low, inner)
        known, self.known = self.known, self.known | set(guards)
        if var == self.lane_var:
            self._counted(var, low, _fold(b.sub, operator.sub, high, low), inner)
        else:
            self._for(var, low, high, inner)
        self.known = known
        self._for(var, high, stop, inner)

    def _points(self, var):
        """{i: the guards that hold only at i} of loop `var` (llvm_vector.py point_guards)."""
        return point_guards(self.kernel, var)

    def _by_points(self, var, start, stop, points, inner):
        """Loop `var` as one copy of its body per iteration i in [start, stop), each knowing which
        guards hold (i's) and which fail (the others'), so a stack reads one input per element
        instead of loading all T and selecting (its additions of the others' zeros stay: -0.0)."""
        b, every = self.b, set().union(*points.values())
        for i, guards in sorted(points.items()):
            at = ir.Constant(I64, i)
            inside = b.and_(b.icmp_signed("<=", start, at), b.icmp_signed("<", at, stop))
            with b.if_then(inside):
                known, failing = self.known, self.failing
                self.known, self.failing = known | guards, failing | (every - guards)
                self.vars[var] = at
                inner()
                self.known, self.failing = known, failing


def _fold(make, python, *values):
    """make(*values), or where every value is a constant, the constant python(*their values)."""
    if all(isinstance(v, ir.Constant) for v in values):
        return ir.Constant(I64, python(*(v.constant for v in values)))
    return make(*values)
