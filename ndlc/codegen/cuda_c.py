"""CUDA C spellings shared by every generated source: the C type of each dtype, literals, affine
index expressions, and the prelude of helpers (NaN-propagating max/min, shuffles of any dtype)."""
import math

from ..ir.indexing import Affine
from ..ir.types import is_float

C_TYPES = {"f32": "float", "f64": "double", "i32": "int", "i64": "long long", "u8": "unsigned char", "bool": "bool"}
MEMORY = {**C_TYPES, "bool": "unsigned char"}  # how each dtype is stored


PRELUDE = r"""#ifndef NDLC_PRELUDE
#define NDLC_PRELUDE
#define NDLC_FULL_MASK 0xffffffffu
#ifndef NDLC_CHECK_ALIGNED
#define NDLC_CHECK_ALIGNED(p)
#endif
__device__ __forceinline__ float4& ndlc_vec4(float* p) { NDLC_CHECK_ALIGNED(p); return *reinterpret_cast<float4*>(p); }
__device__ __forceinline__ const float4& ndlc_vec4(const float* p) { NDLC_CHECK_ALIGNED(p); return *reinterpret_cast<const float4*>(p); }
template <class T> __device__ __forceinline__ T ndlc_max(T a, T b) { return (a > b || a != a) ? a : b; }
template <class T> __device__ __forceinline__ T ndlc_min(T a, T b) { return (a < b || a != a) ? a : b; }
__device__ __forceinline__ bool ndlc_max(bool a, bool b) { return a || b; }
__device__ __forceinline__ bool ndlc_min(bool a, bool b) { return a && b; }
template <class T> __device__ __forceinline__ T ndlc_abs(T a) { return a < 0 ? -a : a; }
__device__ __forceinline__ float ndlc_abs(float a) { return fabsf(a); }
__device__ __forceinline__ double ndlc_abs(double a) { return fabs(a); }
__device__ __forceinline__ int ndlc_shr(int a, int b) { return (int)((unsigned)a >> b); }
__device__ __forceinline__ long long ndlc_shr(long long a, long long b) { return (long long)((unsigned long long)a >> b); }
__device__ __forceinline__ unsigned char ndlc_shr(unsigned char a, unsigned char b) { return a >> b; }
template <class T> __device__ __forceinline__ T ndlc_shfl_down(T v, int delta) { return __shfl_down_sync(NDLC_FULL_MASK, v, delta); }
template <class T> __device__ __forceinline__ T ndlc_shfl(T v, int lane) { return __shfl_sync(NDLC_FULL_MASK, v, lane); }
__device__ __forceinline__ bool ndlc_shfl_down(bool v, int delta) { return __shfl_down_sync(NDLC_FULL_MASK, (int)v, delta) != 0; }
__device__ __forceinline__ bool ndlc_shfl(bool v, int lane) { return __shfl_sync(NDLC_FULL_MASK, (int)v, lane) != 0; }
__device__ __forceinline__ unsigned char ndlc_shfl_down(unsigned char v, int delta) { return (unsigned char)__shfl_down_sync(NDLC_FULL_MASK, (int)v, delta); }
__device__ __forceinline__ unsigned char ndlc_shfl(unsigned char v, int lane) { return (unsigned char)__shfl_sync(NDLC_FULL_MASK, (int)v, lane); }
#endif
"""


def affine(form: Affine) -> str:
    parts = [f"{c} * i{i}" if c != 1 else f"i{i}" for i, c in enumerate(form.coeffs) if c]
    if form.const or not parts:
        parts.append(str(form.const))
    return " + ".join(parts)


def literal(dtype, value) -> str:
    if is_float(dtype):
        value = float(value)
        suffix = "f" if dtype == "f32" else ""
        if math.isnan(value):
            return f"({C_TYPES[dtype]})NAN"
        if math.isinf(value):
            return f"{'-' if value < 0 else ''}({C_TYPES[dtype]})INFINITY"
        return f"{value!r}{suffix}" if "e" in repr(value) or "." in repr(value) else f"{value!r}.0{suffix}"
    if dtype == "bool":
        return "true" if value else "false"
    value = int(value)
    if value == -(1 << 63):  # its magnitude is no long long literal
        return "(-9223372036854775807LL - 1)"
    return f"{value}LL" if dtype == "i64" else f"({C_TYPES[dtype]})({value})"
