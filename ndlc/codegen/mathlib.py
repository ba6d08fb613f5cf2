"""exp, expm1-based tanh, log, sin, cos and pow emitted as straight-line LLVM IR (range reduction,
a polynomial, exponent arithmetic on the bits), so loops calling them still vectorise: no libm
call sits in a hot loop. float32 is computed natively (error a few ulp); sin, cos and pow of
float32 go through float64 for simplicity. sin and cos of arguments past 2**20 (Payne-Hanek, from a
constant table of 2/pi's bits) are a separate cold function, which vectors call only when needed; float64's
within an ulp (its reduced argument a double-double, mathlib_parts.py). Taylor coefficients, by Horner's rule, with a
degree chosen so the truncation error is below the type's rounding error on the reduced range.
Each works on scalars and, lane by lane with the same instructions, on vectors of them
(codegen/llvm_lanes.py). Where the target has fused multiply-adds (a `Builder`'s `fused`), the
multiply-adds are `llvm.fma` calls: one rounding, whatever instructions LLVM selects (`contract`
left it to LLVM, which fused a streamed map's 512-bit vectors on AVX-512 other than its 256-bit ones).
Where the target has AVX-512 (`scalef`), exp scales a vector by 2**k with one `vscalefps`: the bits
of the exponent arithmetic it replaces, a third of a vector exp's instructions fewer.
"""
import functools
import math
import struct

from llvmlite import ir

from .llvm_text import FunctionText, function_text, uniquely_named
from .mathlib_parts import chunk as _chunk, dekker_error, two_sum as _two_sum

F32, F64 = ir.FloatType(), ir.DoubleType()
I32, I64 = ir.IntType(32), ir.IntType(64)


class _Splat(ir.Constant):
    """A vector constant of one value in every lane, spelled `splat (<type> <value>)` (each lane
    spelled out, a vectorised kernel's IR text was 70% longer)."""

    def __init__(self, ty, value):  # one lane's constant for all (ir.Constant would make one per lane)
        self.lane = ir.Constant(ty.element, value)
        self.type, self.constant = ty, [self.lane] * ty.count

    def _get_reference(self):
        return f"splat ({self.lane})"


_CONSTANTS = {}  # (type's text, value's bits) -> the constant: a program's few hundred, made once a process


def const(ty, value):
    """A constant of scalar type `ty`, or of vector type `ty` with `value` in every lane: one
    object per type and value, so that its text is made once (0.0 and -0.0 are two)."""
    key = (str(ty), struct.pack("<d", value) if isinstance(value, float) else value)
    found = _CONSTANTS.get(key)
    if found is None:
        found = _CONSTANTS[key] = _Splat(ty, value) if isinstance(ty, ir.VectorType) else ir.Constant(ty, value)
    return found


def element(ty):
    """A vector type's element type; a scalar type itself."""
    return ty.element if isinstance(ty, ir.VectorType) else ty


def shaped(scalar, like):
    """Scalar type `scalar`, or a vector of it as long as vector type `like`."""
    return ir.VectorType(scalar, like.count) if isinstance(like, ir.VectorType) else scalar


def intrinsic(b, name, *args, fastmath=()):
    """A call of the overloaded LLVM intrinsic `name` on args, typed after the first."""
    ty = args[0].type
    vector = isinstance(ty, ir.VectorType)
    symbol = f"{name}.{f'v{ty.count}' if vector else ''}{element(ty).intrinsic_name}"
    fn = b.module.globals.get(symbol) or ir.Function(b.module, ir.FunctionType(ty, [a.type for a in args]), symbol)
    return b.call(fn, list(args), fastmath=fastmath)


class Builder(ir.IRBuilder):
    """The IRBuilder mathlib's functions are built with: `fused`, whether the target has fused
    multiply-adds (`_muladd`); `scalef`, whether it has AVX-512's `vscalefps` (`_scaled`)."""

    def __init__(self, block, fused, scalef=False):
        super().__init__(block)
        self.fused, self.scalef = fused, scalef


def call(b, name, args, inline, fused, scalef=False):
    """A call of the module's function for mathlib's `name` on args (defined on first use, once per
    module and type, so the IR spells each polynomial once; `fused`, `scalef`: see Builder; a module's
    kernels are made for one target): inlined into the caller where `inline` (a loop calling it
    vectorises), else left a call (an invariant one: LLVM hoists it out of the loops, and
    optimises its body once per module)."""
    types = tuple(a.type for a in args)
    symbol = f"ndlc.{name}.{args[0].type}"
    fn = b.module.globals.get(symbol)
    if fn is None:
        text, declarations = _definition(name, types, fused, scalef)
        fn = FunctionText(b.module, ir.FunctionType(types[0], types), symbol, text)
        for declared in declarations:
            if declared.name not in b.module.globals:
                _provide(b.module, declared)
    return b.call(fn, list(args), attrs=("alwaysinline" if inline else "noinline",))


def _provide(module, declared):
    """`module`'s copy of a global a mathlib definition uses: a function it calls (an intrinsic
    declared, another of mathlib's defined by its text) or a constant table."""
    if isinstance(declared, ir.GlobalVariable):
        table = ir.GlobalVariable(module, declared.value_type, declared.name)
        table.global_constant, table.linkage, table.initializer = True, declared.linkage, declared.initializer
    elif isinstance(declared, FunctionText):
        FunctionText(module, declared.ftype, declared.name, declared.text)
    else:
        ir.Function(module, declared.ftype, declared.name)


@functools.lru_cache(maxsize=None)
def _definition(name, types, fused, scalef):
    """(the IR text of the definition of mathlib's function `name` on arguments of `types`, the
    intrinsics it calls as declared in a module of its own): built once per process, the same
    text in every module (a function's value names are its own)."""
    module = ir.Module()
    fn = uniquely_named(ir.Function(module, ir.FunctionType(types[0], types), f"ndlc.{name}.{types[0]}"))
    fn.linkage = "internal"
    fn.attributes.add("readnone")
    fn.attributes.add("nounwind")
    if name in _COLD:  # its callers' branches to it are unlikely: their loops keep constants in registers
        fn.attributes.add("cold")
    body = Builder(fn.append_basic_block("entry"), fused, scalef)
    body.ret(globals()[name](body, *fn.args))
    return function_text(fn), [g for g in module.globals.values() if g is not fn]


def _muladd(b, x, y, z):
    """x*y + z: `llvm.fma` where the target fuses (b.fused), else a multiply and an add."""
    if b.fused:
        return intrinsic(b, "llvm.fma", x, y, z)
    return b.fadd(z, b.fmul(x, y, flags=["contract"]), flags=["contract"])


def _product_error(b, x, y, p):
    """x·y - p exactly, p = x·y rounded: an fma where the target fuses, else Dekker's (the same bits)."""
    return _muladd(b, x, y, b.fneg(p)) if b.fused else dekker_error(b, x, y, p)


def _horner(b, x, coeffs):
    """coeffs[0] + x*(coeffs[1] + x*(...)), each step one fused multiply-add where the CPU has it
    (a rounding fewer, and half the instructions of a softmax's exponentials)."""
    acc = const(x.type, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = _muladd(b, x, acc, const(x.type, c))
    return acc


def _layout(ty):
    """(int type of the same shape, mantissa bits, exponent bias) of a float type."""
    return (shaped(I32, ty), 23, 127) if element(ty) == F32 else (shaped(I64, ty), 52, 1023)


def _pow2(b, n, ty):
    """2**n for an integer n in the type's normal exponent range."""
    ity, mbits, bias = _layout(ty)
    return b.bitcast(b.shl(b.add(n, const(ity, bias)), const(ity, mbits)), ty)


def _expm1_poly(b, r):
    """e**r - 1 for |r| <= ln2/2."""
    degree = 7 if element(r.type) == F32 else 13
    return b.fmul(r, _horner(b, r, [1 / math.factorial(k + 1) for k in range(degree)]))


def _reduce(b, x, k, hi, lo):
    """x - k ln2 as (x - k hi) - k lo (Cody-Waite: k hi is exact), each step one fused
    multiply-add where the CPU has it (two instructions fewer per exp, and r rounded once less)."""
    if b.fused:
        return _muladd(b, k, const(x.type, -lo), _muladd(b, k, const(x.type, -hi), x))
    r = b.fsub(x, b.fmul(k, const(x.type, hi), flags=["contract"]), flags=["contract"])
    return b.fsub(r, b.fmul(k, const(x.type, lo), flags=["contract"]), flags=["contract"])


def exp(b, x):
    ty = x.type
    ity, _, _ = _layout(ty)
    low, high = (-104.0, 89.0) if element(ty) == F32 else (-746.0, 710.0)
    ln2_hi, ln2_lo = (0.693359375, -2.12194440e-4) if element(ty) == F32 else (
        6.93147180369123816490e-01, 1.90821492927058770002e-10)
    # ordered compares keep a NaN: k, r and p are NaN in its lanes
    xc = b.select(b.fcmp_ordered(">", x, const(ty, high)), const(ty, high), x)
    xc = b.select(b.fcmp_ordered("<", xc, const(ty, low)), const(ty, low), xc)
    k = intrinsic(b, "llvm.rint", b.fmul(xc, const(ty, 1 / math.log(2))))
    r = _reduce(b, xc, k, ln2_hi, ln2_lo)
    p = b.fadd(const(ty, 1.0), _expm1_poly(b, r))
    scaled = _scaled(b, p, k)
    if scaled is not None:  # rounded once, as below; a NaN stays NaN
        return scaled
    # fptosi of NaN is poison: the last select returns x in those lanes instead (zeroing them first
    # cost a vector instruction in ~29, 3% of a softmax)
    nan = b.fcmp_unordered("uno", x, x)
    n = b.fptosi(k, ity)
    half = b.ashr(n, const(ity, 1))
    return b.select(nan, x, b.fmul(_exponent_added(b, p, b.sub(n, half)), _pow2(b, half, ty)))


def _scaled(b, p, k):
    """p * 2**k for an integral k by AVX-512's `vscalefps`/`vscalefpd` (rounded once; NaN and
    infinities as a multiplication has them), or None where the target has none (b.scalef) or p is
    not a vector of 128, 256 or 512 bits."""
    ty = p.type
    bits = ty.count * (32 if element(ty) == F32 else 64) if isinstance(ty, ir.VectorType) else 0
    if not b.scalef or bits not in (128, 256, 512):
        return None
    symbol = f"llvm.x86.avx512.mask.scalef.{'ps' if element(ty) == F32 else 'pd'}.{bits}"
    mask = ir.Constant(ir.IntType(max(ty.count, 8)), -1)  # every lane takes the result
    rounding = [ir.Constant(I32, 4)] if bits == 512 else []  # the current rounding mode
    fn = b.module.globals.get(symbol) or ir.Function(
        b.module, ir.FunctionType(ty, [ty, ty, ty, mask.type] + [r.type for r in rounding]), symbol)
    return b.call(fn, [p, k, const(ty, 0.0), mask, *rounding])


def _exponent_added(b, p, n):
    """p * 2**n by adding n to p's exponent bits: exact where the product is a normal number (a
    multiply by _pow2(n) rounds the same, one floating-point multiply more)."""
    ity, mbits, _ = _layout(p.type)
    return b.bitcast(b.add(b.bitcast(p, ity), b.shl(n, const(ity, mbits))), p.type)


def tanh(b, x):
    """tanh|x| = -t / (t + 2) with t = expm1(-2|x|), sign copied back. expm1(y) for y = k ln2 + r
    is 2**k p + (2**k - 1), p = expm1(r): one polynomial (exp and a separate small-argument one
    made the IR twice as long), exact in r for k = 0, so accurate near 0 too. -2|x| is clamped
    where tanh rounds to 1 (so 2**k stays normal)."""
    ty = x.type
    ity, _, _ = _layout(ty)
    limit = -20.0 if element(ty) == F32 else -40.0
    ln2_hi, ln2_lo = (0.693359375, -2.12194440e-4) if element(ty) == F32 else (
        6.93147180369123816490e-01, 1.90821492927058770002e-10)
    nan = b.fcmp_unordered("uno", x, x)
    y = b.fmul(intrinsic(b, "llvm.fabs", x), const(ty, -2.0))
    y = b.select(b.fcmp_ordered("<", y, const(ty, limit)), const(ty, limit), b.select(nan, const(ty, 0.0), y))
    k = intrinsic(b, "llvm.rint", b.fmul(y, const(ty, 1 / math.log(2))))
    r = _reduce(b, y, k, ln2_hi, ln2_lo)
    scale = _pow2(b, b.fptosi(k, ity), ty)
    t = b.fadd(b.fmul(scale, _expm1_poly(b, r)), b.fsub(scale, const(ty, 1.0)))
    magnitude = b.fdiv(b.fneg(t), b.fadd(t, const(ty, 2.0)))
    return b.select(nan, x, intrinsic(b, "llvm.copysign", magnitude, x))


def log(b, x):
    ty = x.type
    ity, mbits, bias = _layout(ty)
    tiny = b.fcmp_ordered("<", x, const(ty, 2.0 ** (1 - bias)))
    xs = b.select(tiny, b.fmul(x, const(ty, 2.0 ** (mbits + 1))), x)
    bits = b.bitcast(xs, ity)
    e = b.sub(b.lshr(bits, const(ity, mbits)), const(ity, bias))
    e = b.sub(e, b.select(tiny, const(ity, mbits + 1), const(ity, 0)))
    m = b.bitcast(b.or_(b.and_(bits, const(ity, (1 << mbits) - 1)), const(ity, bias << mbits)), ty)
    big = b.fcmp_ordered(">", m, const(ty, math.sqrt(2)))
    m = b.select(big, b.fmul(m, const(ty, 0.5)), m)
    e = b.add(e, b.zext(big, ity))
    f = b.fsub(m, const(ty, 1.0))
    s = b.fdiv(f, b.fadd(f, const(ty, 2.0)))
    z = b.fmul(s, s)
    terms = 4 if element(ty) == F32 else 10
    series = b.fmul(z, _horner(b, z, [1 / (2 * k + 3) for k in range(terms)]))
    two_s = b.fadd(s, s)
    log1p = b.fadd(two_s, b.fmul(two_s, series))
    ef = b.sitofp(e, ty)
    ln2_hi, ln2_lo = (0.693359375, -2.12194440e-4) if element(ty) == F32 else (
        6.93147180369123816490e-01, 1.90821492927058770002e-10)
    result = b.fadd(b.fmul(ef, const(ty, ln2_hi)), b.fadd(log1p, b.fmul(ef, const(ty, ln2_lo))))
    result = b.select(b.fcmp_ordered("==", x, const(ty, math.inf)), x, result)
    result = b.select(b.fcmp_ordered("==", x, const(ty, 0.0)), const(ty, -math.inf), result)
    return b.select(b.fcmp_unordered("<", x, const(ty, 0.0)), const(ty, math.nan), result)


def _in_f64(fn):
    """Run a float64 implementation for float32 values too."""
    def wrapped(b, x, *rest):
        if element(x.type) == F64:
            return fn(b, x, *rest)
        wide = shaped(F64, x.type)
        return b.fptrunc(fn(b, b.fpext(x, wide), *(b.fpext(r, wide) for r in rest)), x.type)
    return wrapped


LARGE = 2.0 ** 20  # from here the Cody-Waite reduction's k times pi/2's parts loses bits


def _reduce_large(b, x, narrow):
    """(r, k) with x = k pi/2 + r, |r| <= pi/4 (a hair more), for float64 |x| >= LARGE, finite
    (Payne-Hanek): |x| = z0 2**e0 + z1 2**(e0-24) + z2 2**(e0-48) in integral 24-bit digits (z0
    alone where `narrow`: a float32's significand) times 2/pi's 24-bit chunks from the first whose
    products are not all multiples of 4. The column sums Q_m of the products are exact, carried into
    24-bit digits and summed from the top, so a fraction near 0 cancels exactly: r to ~2**-52."""
    ty, ity = x.type, shaped(I64, x.type)
    parts, columns = (1, 6) if narrow else (3, 8)
    magnitude = intrinsic(b, "llvm.fabs", x)
    e0 = b.sub(b.lshr(b.bitcast(magnitude, ity), const(ity, 52)), const(ity, 1023 + 23))
    z = b.fmul(magnitude, _pow2(b, b.neg(e0), ty))  # in [2**23, 2**24)
    digits = []
    for _ in range(parts):
        digits.append(intrinsic(b, "llvm.floor", z))
        z = b.fmul(b.fsub(z, digits[-1]), const(ty, 2.0 ** 24))
    # Q_m = sum_i z_i c[u + 2 + m - i] weighs 2**(g - 24m), g = e0 + 24 - 24u in [-22, 1]: the columns
    # left of Q_0 weigh at least 2**(g + 24) >= 4, so are multiples of 4
    u = b.udiv(b.add(e0, const(ity, 46)), const(ity, 24))
    g = b.sub(b.add(e0, const(ity, 24)), b.mul(u, const(ity, 24)))
    chunks = [_chunk(b, b.add(u, const(ity, 3 - parts + j))) for j in range(columns + parts - 1)]
    sums = [functools.reduce(b.fadd, [b.fmul(digits[i], chunks[m - i + parts - 1]) for i in range(parts)])
            for m in range(columns)]
    for m in range(columns - 1, 0, -1):
        carry = intrinsic(b, "llvm.floor", b.fmul(sums[m], const(ty, 2.0 ** -24)))
        sums[m] = b.fsub(sums[m], b.fmul(carry, const(ty, 2.0 ** 24)))
        sums[m - 1] = b.fadd(sums[m - 1], carry)
    scale = _pow2(b, g, ty)
    top = b.fmul(sums[0], scale)
    top = b.fsub(top, b.fmul(intrinsic(b, "llvm.floor", b.fmul(top, const(ty, 0.25))), const(ty, 4.0)))
    fraction = b.fadd(top, b.fmul(sums[1], b.fmul(scale, const(ty, 2.0 ** -24))))  # exact: 49 bits at most
    k = intrinsic(b, "llvm.rint", fraction)
    fraction, tail = b.fsub(fraction, k), const(ty, 0.0)  # exact; then the columns' sums from the top (a
    # fraction near 0 cancels exactly), each rounding's error carried where float64's r + r_lo is wanted
    for m in range(2, columns):
        term = b.fmul(sums[m], b.fmul(scale, const(ty, 2.0 ** (-24 * m))))
        if narrow:
            fraction = b.fadd(fraction, term)
        else:
            fraction, error = _two_sum(b, fraction, term)
            tail = b.fadd(tail, error)
    negative = b.fcmp_ordered("<", x, const(ty, 0.0))
    k = b.select(negative, b.neg(b.fptosi(k, ity)), b.fptosi(k, ity))
    if narrow:  # a float32's sin: r's last bits do not reach its rounding
        r = _muladd(b, fraction, const(ty, math.pi / 2), b.fmul(fraction, const(ty, 6.123233995736766e-17)))
        return b.select(negative, b.fneg(r), r), None, k
    r = b.fmul(fraction, const(ty, math.pi / 2))  # r + r_lo = (fraction + tail)·pi/2, the product's error by an fma
    low = b.fadd(_muladd(b, fraction, const(ty, 6.123233995736766e-17), b.fmul(tail, const(ty, math.pi / 2))),
                 _product_error(b, fraction, const(ty, math.pi / 2), r))
    return b.select(negative, b.fneg(r), r), b.select(negative, b.fneg(low), low), k



def _reduce_small(b, x, narrow):
    """(r, r_lo, k), x = k pi/2 + r + r_lo, |x| < LARGE (Cody-Waite: pi/2 in three parts, k times each
    exact; r + r_lo a double-double), r_lo None where `narrow` (a float32's: r alone, a fifth faster)."""
    ty = x.type
    k = intrinsic(b, "llvm.rint", b.fmul(x, const(ty, 2 / math.pi)))
    if narrow:
        r = b.fsub(x, b.fmul(k, const(ty, 1.57079632673412561417e+00)))
        r = b.fsub(r, b.fmul(k, const(ty, 6.07710050630396597660e-11)))
        r = b.fsub(r, b.fmul(k, const(ty, 2.02226624879595063154e-21)))
        return r, None, b.fptosi(k, shaped(I64, ty))
    r, low = _two_sum(b, b.fsub(x, b.fmul(k, const(ty, 1.57079632673412561417e+00))),
                      b.fneg(b.fmul(k, const(ty, 6.07710050630396597660e-11))))
    low = b.fsub(low, b.fmul(k, const(ty, 2.02226624879595063154e-21)))
    return r, low, b.fptosi(k, shaped(I64, ty))


def _quadrants(b, r, low, k, quarter_turns):
    """sin(r + low + (k + quarter_turns) pi/2), |r| <= pi/4: Taylor polynomials, their leading terms
    added last (r; 1 - r²/2, its rounding and r²'s carried), low by the derivative: within an ulp."""
    ty = r.type
    z = b.fmul(r, r)
    if low is None:  # a float32's: r times its polynomial, 1 + r² times another
        sin_r = b.fmul(r, _horner(b, z, [(-1) ** i / math.factorial(2 * i + 1) for i in range(8)]))
        cos_r = _horner(b, z, [(-1) ** i / math.factorial(2 * i) for i in range(9)])
        return _signed(b, sin_r, cos_r, k, quarter_turns)
    z_low = _product_error(b, r, r, z)  # r² = z + z_low
    half = b.fmul(z, const(ty, 0.5))
    w = b.fsub(const(ty, 1.0), half)
    sin_tail = _muladd(b, b.fmul(r, z), _horner(b, z, [(-1) ** i / math.factorial(2 * i + 1) for i in range(1, 8)]),
                       b.fmul(low, w))
    sin_r = b.fadd(r, sin_tail)
    cos_tail = _muladd(b, b.fmul(z, z), _horner(b, z, [(-1) ** i / math.factorial(2 * i) for i in range(2, 9)]),
                       b.fsub(b.fsub(b.fsub(const(ty, 1.0), w), half), _muladd(b, r, low, b.fmul(z_low, const(ty, 0.5)))))
    cos_r = b.fadd(w, cos_tail)
    return _signed(b, sin_r, cos_r, k, quarter_turns)


def _signed(b, sin_r, cos_r, k, quarter_turns):
    """sin(r + (k + quarter_turns) pi/2) from sin r and cos r: the quadrant's choice and sign."""
    ty, ity = sin_r.type, k.type
    q = b.and_(b.add(k, const(ity, quarter_turns)), const(ity, 3))
    value = b.select(b.trunc(q, shaped(ir.IntType(1), ty)), cos_r, sin_r)
    negative = b.icmp_unsigned(">=", q, const(ity, 2))
    return b.select(negative, b.fneg(value), value)


def _large(b, x, small, quarter_turns, narrow):
    """sin(x + quarter_turns pi/2) by _reduce_large where |x| >= LARGE, NaN where x is not finite,
    `small` elsewhere (those lanes reduce LARGE instead, so the table's indices stay in range)."""
    ty = x.type
    magnitude = intrinsic(b, "llvm.fabs", x)
    large = b.and_(b.fcmp_ordered(">=", magnitude, const(ty, LARGE)), b.fcmp_ordered("!=", magnitude, const(ty, math.inf)))
    value = _quadrants(b, *_reduce_large(b, b.select(large, x, const(ty, LARGE)), narrow), quarter_turns)
    finite = b.fcmp_ordered("<", magnitude, const(ty, math.inf))
    return b.select(large, value, b.select(finite, small, const(ty, math.nan)))


_sin_large24, _sin_large53, _cos_large24, _cos_large53 = (
    functools.partial(_large, quarter_turns=q, narrow=n) for q in (0, 1) for n in (True, False))
_COLD = ("_sin_large24", "_sin_large53", "_cos_large24", "_cos_large53")


def _sincos(b, x, quarter_turns, narrow):
    """sin(x + quarter_turns * pi/2) in float64, `narrow` where x is a float32's value: by
    _reduce_small, then where |x| >= LARGE, inf or NaN by `_large` (a separate cold function). On
    codegen's vectors only where some lane is (a branch around the call, one compare and test where
    a select of the non-finite lanes was: 13% faster than before); on scalars always, inlined
    (straight-line, so a loop calling it still vectorises)."""
    ty = x.type
    value = _quadrants(b, *_reduce_small(b, x, narrow), quarter_turns)  # poison where x is large, inf or NaN
    name = f"_{'cos' if quarter_turns else 'sin'}_large{24 if narrow else 53}"
    if not isinstance(ty, ir.VectorType):
        return call(b, name, [x, value], True, b.fused, b.scalef)
    special = b.fcmp_unordered(">=", intrinsic(b, "llvm.fabs", x), const(ty, LARGE))  # large, inf or NaN
    entry = b.block
    with b.if_then(b.icmp_unsigned("!=", b.bitcast(special, ir.IntType(ty.count)), ir.Constant(ir.IntType(ty.count), 0))):
        reduced, block = call(b, name, [x, value], False, b.fused, b.scalef), b.block
    joined = b.phi(ty)
    joined.add_incoming(value, entry)
    joined.add_incoming(reduced, block)
    return joined


def sin(b, x):  # x itself where x is ±0: the reduction's x - k·pi/2 made sin(-0) +0 (numpy: -0)
    return b.select(b.fcmp_ordered("==", x, const(x.type, 0.0)), x, _trig(b, x, 0))


def cos(b, x):
    return _trig(b, x, 1)


def _trig(b, x, quarter_turns):
    """sin(x + quarter_turns pi/2): float32 through float64."""
    if element(x.type) == F64:
        return _sincos(b, x, quarter_turns, False)
    return b.fptrunc(_sincos(b, b.fpext(x, shaped(F64, x.type)), quarter_turns, True), x.type)


@_in_f64
def pow(b, x, y):
    """x**y as numpy (C99's pow): exp(y log|x|), its sign from y's parity where x's sign bit is set
    (-0 and -inf included), NaN for a finite negative x and a fractional y; 1 where y is 0, x is 1,
    or x is -1 and y infinite, whatever the other (NaN included)."""
    ty = x.type
    magnitude = exp(b, b.fmul(y, log(b, intrinsic(b, "llvm.fabs", x))))
    integral = b.fcmp_ordered("==", intrinsic(b, "llvm.rint", y), y)
    half = b.fmul(y, const(ty, 0.5))
    odd = b.fcmp_unordered("!=", intrinsic(b, "llvm.rint", half), half)
    signed = b.fcmp_ordered("<", intrinsic(b, "llvm.copysign", const(ty, 1.0), x), const(ty, 0.0))
    result = b.select(b.and_(signed, b.and_(integral, odd)), b.fneg(magnitude), magnitude)
    fractional = b.and_(b.fcmp_ordered("<", x, const(ty, 0.0)), b.not_(integral))
    result = b.select(b.and_(fractional, b.fcmp_ordered("!=", x, const(ty, -math.inf))), const(ty, math.nan), result)
    one = b.or_(b.fcmp_ordered("==", y, const(ty, 0.0)), b.fcmp_ordered("==", x, const(ty, 1.0)))
    one = b.or_(one, b.and_(b.fcmp_ordered("==", x, const(ty, -1.0)),
                            b.fcmp_ordered("==", intrinsic(b, "llvm.fabs", y), const(ty, math.inf))))
    return b.select(one, const(ty, 1.0), result)
