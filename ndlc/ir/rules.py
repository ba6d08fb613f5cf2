"""Lowering rules that do not depend on the backend, in one table both backends read (codegen/llvm*.py,
codegen/cuda.py); each backend keeps only its spellings (the primitive table, ir/scalar.py).

  - booleans: numpy's arithmetic on bool is logic (add: or, sub: xor, mul: and; max: or, min: and);
  - reductions: each Combine's identity and the primitive that combines two partial results;
  - integer powers: x**n for a float x and an integer constant |n| <= POWER_EXPANSION_LIMIT is
    multiplications by repeated squaring (then 1/x**|n| for n < 0), the same ones on every backend,
    so their results agree bit for bit; other powers call pow.
"""
import math

import numpy as np

from .kernel import Combine
from .types import is_float, numpy_dtype

BOOL_ARITHMETIC = {"add": "or", "sub": "xor", "mul": "and", "max": "or", "min": "and"}
POWER_EXPANSION_LIMIT = 64  # at most 11 multiplications: cheaper than pow, and exact for squares
_COMBINE = {Combine.ADD: "add", Combine.MAX: "max"}


def primitive_for(prim, dtype) -> str:
    """The primitive a backend lowers for `prim` computing in `dtype` (bool arithmetic is logic)."""
    return BOOL_ARITHMETIC.get(prim, prim) if dtype == "bool" else prim


def combine_primitive(combine, dtype) -> str:
    """The primitive that combines two partial results of a reduction of `dtype`."""
    return primitive_for(_COMBINE[Combine(combine)], dtype)


def identity(combine, dtype):
    """The value a reduction's accumulator starts from: 0 for sums (False for bool), the lowest
    value of `dtype` for max (-inf for floats)."""
    if Combine(combine) == Combine.ADD or dtype in ("bool", "u8"):
        return False if dtype == "bool" else 0
    return -math.inf if is_float(dtype) else int(np.iinfo(numpy_dtype(dtype)).min)


def expanded_power(exponent, dtype):
    """The integer n where x**exponent in `dtype` is lowered as multiplications, else None."""
    if not is_float(dtype) or isinstance(exponent, bool) or not float(exponent).is_integer():
        return None
    n = int(exponent)
    return n if abs(n) <= POWER_EXPANSION_LIMIT else None


def power_by_squaring(x, n, multiply, one, divide):
    """x**n for an integer n in the backend's values: `multiply(a, b)`, `one` (1 in x's dtype),
    `divide(a, b)`; the multiplications of repeated squaring, in this order on every backend."""
    result, base, k = None, x, abs(n)
    while k:
        if k & 1:
            result = base if result is None else multiply(result, base)
        k >>= 1
        if k:
            base = multiply(base, base)
    result = one if result is None else result
    return divide(one, result) if n < 0 else result
