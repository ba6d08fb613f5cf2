"""Index arithmetic of the kernel IR: how loop variables address a buffer.

An `Access` is an element offset `form / step` (an affine form over variables, divided exactly)
plus guards; where a guard fails the load yields 0 (padding, dilation). Layout ops act on accesses
by substitution (`through`), reshape by regrouping coefficients (`reshape`), so views compose into
their consumers' loads instead of being copied.
"""
from dataclasses import dataclass
from math import gcd, prod


@dataclass(frozen=True)
class Affine:
    """const + Σ coeffs[i]·v_i over variables v_0, v_1, ..."""
    coeffs: tuple
    const: int = 0

    @classmethod
    def of(cls, nvars, terms=(), const=0):
        coeffs = [0] * nvars
        for var, coef in terms:
            coeffs[var] += coef
        return cls(tuple(coeffs), const)

    def scaled(self, k):
        return Affine(tuple(c * k for c in self.coeffs), self.const * k)

    def plus(self, other):
        return Affine(tuple(a + b for a, b in zip(self.coeffs, other.coeffs)), self.const + other.const)

    def padded(self, nvars):
        return Affine(self.coeffs + (0,) * (nvars - len(self.coeffs)), self.const)

    def bounds(self, extents):
        """(min, max) over the box 0 <= v_i < extents[i]."""
        low = high = self.const
        for c, n in zip(self.coeffs, extents):
            low += min(0, c * (n - 1))
            high += max(0, c * (n - 1))
        return low, high

    def __str__(self):
        parts = []
        for i, c in enumerate(self.coeffs):
            if c:
                parts.append(f"{'' if c == 1 else '-' if c == -1 else f'{c}*'}i{i}")
        if self.const or not parts:
            parts.append(str(self.const))
        return " + ".join(parts).replace("+ -", "- ")


@dataclass(frozen=True)
class Guard:
    """Holds where form % step == 0 and 0 <= form / step < bound."""
    form: Affine
    step: int
    bound: int

    def __str__(self):
        inner = str(self.form) if self.step == 1 else f"({self.form})/{self.step}"
        return f"0 <= {inner} < {self.bound}"


@dataclass(frozen=True)
class Access:
    """Element offset form / step into a buffer, valid where every guard holds."""
    form: Affine
    step: int = 1
    guards: tuple = ()

    @property
    def nvars(self):
        return len(self.form.coeffs)

    def through(self, index_map, shape, nvars):
        """This access (over the axes of a value of `shape`) read through an op's AxisIndex map
        from `nvars` new loop axes."""
        dims, guards = [], []
        for axis_index, size in zip(index_map, shape):
            form = Affine.of(nvars, axis_index.terms, axis_index.offset)
            dims.append((form, axis_index.divisor))
            if axis_index.guarded:
                guards.append(Guard(form, axis_index.divisor, size))
        form, step = _substitute(self.form, self.step, dims, nvars)
        moved = [Guard(*_substitute(g.form, g.step, dims, nvars), g.bound) for g in self.guards]
        return Access(form, step, tuple(moved + guards))._normal()

    def reshape(self, old, new):
        """This access over `old` axes as one over `new` axes (same row-major order), or None
        where the elements are not evenly strided within a merged group of axes."""
        if 0 in old:  # no element is ever read
            return Access(Affine((0,) * len(new)))
        if self.nvars < len(old):  # read at one element whatever the trailing axes (a scalar operand)
            return self.specialised(old).reshape(old, new)
        forms = [_regroup(f, old, new) for f in [self.form] + [g.form for g in self.guards]]
        if any(f is None for f in forms):
            return None
        guards = tuple(Guard(f, g.step, g.bound) for f, g in zip(forms[1:], self.guards))
        return Access(forms[0], self.step, guards)

    def specialised(self, extents):
        """Padded to the loops of `extents`, without the guards that always hold there."""
        nvars = len(extents)
        guards = []
        for g in self.guards:
            form = g.form.padded(nvars)
            low, high = form.bounds(extents)
            divisible = all(c % g.step == 0 for c in form.coeffs + (form.const,))
            if not (divisible and low >= 0 and high < g.bound * g.step):
                guards.append(Guard(form, g.step, g.bound))
        return Access(self.form.padded(nvars), self.step, tuple(guards))

    def permuted(self, order):
        """This access from loops reordered so that new loop j is old loop order[j]."""
        def move(form):
            return Affine(tuple(form.coeffs[j] for j in order), form.const)
        return Access(move(self.form), self.step, tuple(Guard(move(g.form), g.step, g.bound) for g in self.guards))

    def within_row(self, outer):
        """This access without its terms in the first `outer` loops and its constant: the element
        within one row (of a temporary each thread keeps a row of)."""
        return Access(Affine((0,) * outer + self.form.coeffs[outer:]), self.step, self.guards)

    def _normal(self):
        k = gcd(self.step, self.form.const, *self.form.coeffs)
        if k > 1:
            return Access(Affine(tuple(c // k for c in self.form.coeffs), self.form.const // k),
                          self.step // k, self.guards)
        return self

    def __str__(self):
        text = str(self.form) if self.step == 1 else f"({self.form})/{self.step}"
        if self.guards:
            text += " if " + " and ".join(map(str, self.guards))
        return text


def contiguous(shape) -> Access:
    """Row-major access to a buffer of `shape` from one loop per axis."""
    strides = [prod(shape[i + 1:]) for i in range(len(shape))]
    return Access(Affine(tuple(strides)))


def injective(index_map, extents) -> bool:
    """Whether each element is read at most once by loops of `extents` (no broadcast, no overlap)."""
    used = [a for ax in index_map for a, c in ax.terms if c and extents[a] > 1]
    return len(used) == len(set(used)) and set(used) == {a for a, n in enumerate(extents) if n > 1} \
        and all(sum(1 for a, c in ax.terms if c and extents[a] > 1) <= 1 for ax in index_map)


def _lcm(a, b):
    return a * b // gcd(a, b)


def _substitute(form, step, dims, nvars):
    """form/step with old variable j replaced by dims[j] = (affine, divisor), exactly (the
    divisions are exact where guards hold): returns (new form, new step)."""
    scale = 1
    for c, (_, divisor) in zip(form.coeffs, dims):
        if c:
            scale = _lcm(scale, divisor)
    result = Affine((0,) * nvars, form.const * scale)
    for c, (affine, divisor) in zip(form.coeffs, dims):
        if c:
            result = result.plus(affine.scaled(c * scale // divisor))
    return result, step * scale


def _groups(old, new):
    """Pairs (old axes, new axes) of equal element count, size-1 axes left out."""
    a = [i for i, d in enumerate(old) if d != 1]
    b = [i for i, d in enumerate(new) if d != 1]
    groups, i, j = [], 0, 0
    while i < len(a):
        ga, gb = [a[i]], [b[j]]
        pa, pb = old[a[i]], new[b[j]]
        while pa != pb:
            if pa < pb:
                i += 1
                ga.append(a[i])
                pa *= old[a[i]]
            else:
                j += 1
                gb.append(b[j])
                pb *= new[b[j]]
        groups.append((ga, gb))
        i, j = i + 1, j + 1
    return groups


def _regroup(form, old, new):
    coeffs = [0] * len(new)
    for olds, news in _groups(old, new):
        unit, inner = form.coeffs[olds[-1]], 1
        for axis in reversed(olds):
            if form.coeffs[axis] != unit * inner:
                return None
            inner *= old[axis]
        inner = 1
        for axis in reversed(news):
            coeffs[axis] = unit * inner
            inner *= new[axis]
    return Affine(tuple(coeffs), form.const)
