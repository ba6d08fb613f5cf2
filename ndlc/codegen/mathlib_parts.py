"""Pieces of sin and cos's reduction (mathlib.py): 2/pi's bits as a constant table of 24-bit chunks,
which arguments past 2**20 multiply by their digits (Payne-Hanek), and the error-free sum and
product that keep the reduced argument as a double-double."""
from llvmlite import ir

F64 = ir.DoubleType()
I32, I64 = ir.IntType(32), ir.IntType(64)


def _two_over_pi_chunks(count):
    """2/pi's first 24·count bits after the point, 24 at a time, as integral floats after four zero
    chunks (its integer part and the places above): pi by Machin's formula in integers."""
    bits = 24 * count + 64  # 64 guard bits absorb the truncated terms

    def arctan_inverse(n):  # arctan(1/n) * 2**bits
        total, power, k = 0, (1 << bits) // n, 0
        while power:
            total += (-1) ** k * (power // (2 * k + 1))
            power, k = power // (n * n), k + 1
        return total
    fraction = (2 << (2 * bits)) // (16 * arctan_inverse(5) - 4 * arctan_inverse(239))  # 2/pi * 2**bits
    return [0.0] * 4 + [float((fraction >> (bits - 24 * (j + 1))) & 0xFFFFFF) for j in range(count)]


CHUNKS = _two_over_pi_chunks(49)  # float64's largest exponent reads chunks up to index 52
TABLE = "ndlc.two_over_pi"


def chunk(b, index):
    """CHUNKS[index], index an integer (vector) in range: loads from the module's constant table (a
    function reading it reads no memory that ever changes, so it stays `readnone`)."""
    table = b.module.globals.get(TABLE)
    if table is None:
        table = ir.GlobalVariable(b.module, ir.ArrayType(F64, len(CHUNKS)), TABLE)
        table.global_constant, table.linkage = True, "internal"
        table.initializer = ir.Constant(table.value_type, CHUNKS)
    if not isinstance(index.type, ir.VectorType):
        return b.load(b.gep(table, [ir.Constant(I64, 0), index], inbounds=True), typ=F64)
    lanes = ir.Constant(ir.VectorType(F64, index.type.count), ir.Undefined)
    for lane in range(index.type.count):
        at = b.gep(table, [ir.Constant(I64, 0), b.extract_element(index, ir.Constant(I32, lane))], inbounds=True)
        lanes = b.insert_element(lanes, b.load(at, typ=F64), ir.Constant(I32, lane))
    return lanes


def two_sum(b, x, y):
    """(s, e) with s = x + y rounded and s + e = x + y exactly (Knuth's two-sum: either may be larger)."""
    s = b.fadd(x, y)
    back = b.fsub(s, x)
    return s, b.fadd(b.fsub(x, b.fsub(s, back)), b.fsub(y, back))


def dekker_error(b, x, y, p):
    """x·y - p exactly, p being x·y rounded, without a fused multiply-add: Dekker's product of halves
    (a contracted x·y - p is no such thing: LLVM merges x·y with p and folds it to 0)."""
    halves = []
    for v in (x, y):
        scalar = ir.Constant(v.type.element if isinstance(v.type, ir.VectorType) else v.type, 134217729.0)
        split = b.fmul(v, ir.Constant(v.type, [scalar] * v.type.count) if isinstance(v.type, ir.VectorType) else scalar)
        high = b.fsub(split, b.fsub(split, v))
        halves.append((high, b.fsub(v, high)))
    (xh, xl), (yh, yl) = halves
    error = b.fadd(b.fadd(b.fsub(b.fmul(xh, yh), p), b.fmul(xh, yl)), b.fmul(xl, yh))
    return b.fadd(error, b.fmul(xl, yl))
