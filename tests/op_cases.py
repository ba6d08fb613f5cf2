"""Per-op test cases: random inputs, attributes, and an independent numpy expectation.

Every registry op must have an entry (tests/ir/test_ops.py checks), so a new op comes with its
cases. Inputs are float64 so that finite differences are accurate; `draw(rng)` picks shapes.
"""
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ndlc.ir import Builder, Graph, TensorType, parse, print_graph
from ndlc.ir.checks import maybe_verify


@dataclass
class Case:
    op: str
    draw: Callable          # rng -> (list of input arrays, attrs dict)
    expect: Callable        # (*inputs, **attrs) -> expected array, written without the registry
    differentiable: bool = True
    tags: tuple = field(default_factory=tuple)


def shape(rng, low=1, high=4, ndim=None):
    ndim = rng.integers(0, 4) if ndim is None else ndim
    return tuple(int(d) for d in rng.integers(low, high + 1, size=ndim))


def normal(rng, s):
    return rng.standard_normal(s)


def positive(rng, s):
    return rng.uniform(0.5, 2.0, s)


def _unary(op, expect, gen=normal):
    return Case(op, lambda r: ([gen(r, shape(r))], {}), expect)


def _binary(op, expect, gen=normal, differentiable=True):
    def draw(r):
        s = shape(r)
        return [gen(r, s), gen(r, s)], {}
    return Case(op, draw, expect, differentiable)


def _ties(rng, s):
    return rng.integers(-2, 3, s).astype(np.float64)


def _compare(op, fn):
    return _binary(op, fn, gen=_ties, differentiable=False)


def _conv_expect(x, w, stride, padding):
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def _windows_expect(x, kernel, stride):
    *lead, h, w = x.shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    out = np.zeros(tuple(lead) + (ho, wo, kernel, kernel))
    for i in range(ho):
        for j in range(wo):
            out[..., i, j, :, :] = x[..., i * stride:i * stride + kernel, j * stride:j * stride + kernel]
    return out


def _unwindows_expect(g, kernel, stride, size):
    *lead, ho, wo, _, _ = g.shape
    out = np.zeros(tuple(lead) + tuple(size))
    for i in range(ho):
        for j in range(wo):
            out[..., i * stride:i * stride + kernel, j * stride:j * stride + kernel] += g[..., i, j, :, :]
    return out


def _plane_windows_expect(x, kernel, row, length):
    out = np.zeros(x.shape[:-1] + (kernel, kernel, length))
    for i in range(kernel):
        for j in range(kernel):
            for q in range(length):
                out[..., i, j, q] = x[..., i * row + j + q]
    return out


def _plane_unwindows_expect(g, kernel, row, size):
    out = np.zeros(g.shape[:-3] + (size,))
    for i in range(kernel):
        for j in range(kernel):
            for q in range(g.shape[-1]):
                out[..., i * row + j + q] += g[..., i, j, q]
    return out


def _plane_conv_expect(x, w, kernel, row, length):
    out = np.zeros((x.shape[0], w.shape[3], length))
    for n, co, q in np.ndindex(*out.shape):
        for i, j, ci in np.ndindex(kernel, kernel, x.shape[1]):
            out[n, co, q] += x[n, ci, i * row + j + q] * w[i, j, ci, co]
    return out


def _plane_correlate_expect(g, x, kernel, row):
    out = np.zeros((g.shape[0], g.shape[1], x.shape[1], kernel, kernel))
    for n, co, ci, i, j in np.ndindex(*out.shape):
        for q in range(g.shape[2]):
            out[n, co, ci, i, j] += g[n, co, q] * x[n, ci, i * row + j + q]
    return out


def _row_conv_expect(x, w, width):
    kh, kw, _, co = w.shape
    out = np.zeros((x.shape[0], co, x.shape[2] - kh + 1, width))
    for n, d, y, q in np.ndindex(*out.shape):
        out[n, d, y, q] = np.einsum("chw,hwc->", x[n, :, y:y + kh, q:q + kw], w[:, :, :, d])
    return out


def _plane_draw(r):
    """A kernel, rows, a window length and a plane that holds the windows (with spare elements)."""
    k, row, length = int(r.integers(1, 4)), int(r.integers(1, 5)), int(r.integers(1, 9))
    return k, row, length, (k - 1) * row + k - 1 + length + int(r.integers(0, 3))


def _pool_draw(r):
    k = int(r.integers(1, 3))
    s = int(r.integers(1, 3))
    return [normal(r, (2, 2, int(r.integers(k, 6)), int(r.integers(k, 6))))], {"kernel": k, "stride": s}


def _reduce_draw(r):
    s = shape(r, ndim=int(r.integers(1, 4)))
    axes = tuple(sorted(set(int(a) for a in r.integers(0, len(s), size=r.integers(1, len(s) + 1)))))
    return [normal(r, s)], {"axes": axes}


def _matmul_draw(r):
    batch_a, batch_b = [(), (2,), (3, 2), (1, 2)][r.integers(0, 4)], [(), (2,), (1,)][r.integers(0, 3)]
    m, k, n = (int(d) for d in r.integers(1, 5, size=3))
    return [normal(r, batch_a + (m, k)), normal(r, batch_b + (k, n))], {}


def _pad_draw(r):
    s = shape(r, ndim=int(r.integers(1, 4)))
    return [normal(r, s)], {"widths": tuple((int(r.integers(0, 3)), int(r.integers(0, 3))) for _ in s)}


def _slice_draw(r):
    s = shape(r, low=2, ndim=int(r.integers(1, 4)))
    start = tuple(int(r.integers(0, d)) for d in s)
    return [normal(r, s)], {"start": start, "stop": tuple(int(r.integers(a + 1, d + 1)) for a, d in zip(start, s))}


def _dilate_draw(r):
    s = shape(r, ndim=int(r.integers(1, 4)))
    return [normal(r, s)], {"axes": tuple(sorted({int(r.integers(0, len(s)))})), "dilation": int(r.integers(0, 3))}


def _dilate_expect(x, axes, dilation):
    out = np.zeros([d * (dilation + 1) if i in axes else d for i, d in enumerate(x.shape)])
    for index in np.ndindex(*x.shape):
        out[tuple(j * (dilation + 1) if i in axes else j for i, j in enumerate(index))] = x[index]
    return out


def _undilate_expect(x, axes, dilation):
    for a in axes:
        x = np.take(x, np.arange(0, x.shape[a], dilation + 1), axis=a)
    return x


def _logsumexp_expect(x, axes):
    return np.log(np.sum(np.exp(x), axis=axes))


def _gather_draw(r):
    rows = int(r.integers(1, 6))
    table = normal(r, (rows,) + shape(r, ndim=int(r.integers(0, 3))))
    return [table, r.integers(0, rows, shape(r, ndim=int(r.integers(0, 3))))], {}


def _gather_expect(table, indices):
    out = np.zeros(indices.shape + table.shape[1:])
    for index in np.ndindex(*indices.shape):
        out[index] = table[indices[index]]
    return out


def _scatter_add_draw(r):
    rows = int(r.integers(1, 6))
    indices = r.integers(0, rows, shape(r, ndim=int(r.integers(0, 3))))
    return [normal(r, indices.shape + shape(r, ndim=int(r.integers(0, 3)))), indices], {"rows": rows}


def _scatter_add_expect(values, indices, rows):
    out = np.zeros((rows,) + values.shape[indices.ndim:])
    for index in np.ndindex(*indices.shape):
        out[indices[index]] += values[index]
    return out


def _splitmix_uniform(seed, stream, shape):
    """SplitMix64 (Steele et al.) in Python integers, element by element."""
    mask = (1 << 64) - 1
    out = []
    for i in range(int(np.prod(shape))):
        z = (seed + stream * 0xD1B54A32D192ED03 + (i + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(((z ^ (z >> 31)) >> 40) / 2 ** 24)
    return np.array(out).reshape(shape)


SCAN_BODY = """graph @body(%h: f64[2], %c: f64[2], %x: f64[2], %w: f64[2]) {
  %0 = multiply(%h, %w) : f64[2]
  %1 = add(%0, %x) : f64[2]
  %2 = tanh(%1) : f64[2]
  %3 = add(%2, %c) : f64[2]
  %4 = sin(%3) : f64[2]
  return %2, %3, %4
}"""


def _scan_draw(r):
    length, reverse = int(r.integers(1, 4)), bool(r.integers(0, 2))
    inputs = [normal(r, (2,)), normal(r, (2,)), normal(r, (length, 2)), normal(r, (2,))]
    return inputs, {"carries": 2, "xs": 1, "length": length, "reverse": reverse, "body": parse(SCAN_BODY)}


def _scan_expect(h, c, xs, w, carries, xs_count, length, reverse, body):
    ys = [None] * length
    for t in reversed(range(length)) if reverse else range(length):
        h = np.tanh(h * w + xs[t])
        c = h + c
        ys[t] = np.sin(c)
    return np.concatenate([h, c, np.ravel(ys)])


CASES = [
    _binary("add", lambda a, b: a + b),
    _binary("multiply", lambda a, b: a * b),
    _binary("divide", lambda a, b: a / b, gen=positive),
    _binary("power", lambda a, b: np.exp(b * np.log(a)), gen=positive),
    _binary("maximum", lambda a, b: np.where(a > b, a, b)),
    _compare("equal", lambda a, b: a == b),
    _compare("not_equal", lambda a, b: a != b),
    _compare("less", lambda a, b: a < b),
    _compare("less_equal", lambda a, b: a <= b),
    _compare("greater", lambda a, b: a > b),
    _compare("greater_equal", lambda a, b: a >= b),
    Case("where", lambda r: (lambda s: ([r.random(s) < 0.5, normal(r, s), normal(r, s)], {}))(shape(r)),
         lambda c, a, b: np.array([x if k else y for k, x, y in zip(c.ravel(), a.ravel(), b.ravel())]).reshape(a.shape)),
    Case("add_scalar", lambda r: ([normal(r, shape(r))], {"scalar": 1.5}), lambda x, scalar: x + scalar),
    Case("mul_scalar", lambda r: ([normal(r, shape(r))], {"scalar": -2.5}), lambda x, scalar: x * scalar),
    Case("divide_scalar", lambda r: ([normal(r, shape(r))], {"scalar": 4.0}), lambda x, scalar: x / scalar),
    Case("power_scalar", lambda r: ([positive(r, shape(r))], {"scalar": 3.0}), lambda x, scalar: x * x * x),
    _unary("negate", lambda x: 0 - x),
    _unary("exp", lambda x: np.e ** x),
    _unary("log", lambda x: np.log(x), gen=positive),
    _unary("sqrt", lambda x: x ** 0.5, gen=positive),
    _unary("sin", np.sin),
    _unary("cos", np.cos),
    _unary("tanh", lambda x: (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x))),
    _unary("sigmoid", lambda x: np.exp(x) / (1 + np.exp(x))),
    _unary("relu", lambda x: x * (x > 0)),
    Case("stop_gradient", lambda r: ([normal(r, shape(r))], {}), lambda x: x, differentiable=False),
    Case("cast", lambda r: ([normal(r, shape(r)) * 3], {"dtype": "i32"}), lambda x, dtype: np.trunc(x),
         differentiable=False),
    Case("full", lambda r: ([], {"shape": shape(r), "value": 2.5, "dtype": "f64"}),
         lambda shape, value, dtype: value * np.ones(shape), differentiable=False),
    Case("reshape", lambda r: ([normal(r, (2, 3, 4))], {"shape": (4, 6)}), lambda x, shape: x.ravel().reshape(shape)),
    Case("broadcast_to", lambda r: ([normal(r, (3, 1))], {"shape": (2, 3, 4)}),
         lambda x, shape: x[None] * np.ones(shape)),
    Case("transpose", lambda r: ([normal(r, (2, 3, 4))], {"axes": (0, 2)}),
         lambda x, axes: np.einsum("abc->cba", x)),
    Case("permute", lambda r: ([normal(r, (2, 3, 4))], {"axes": (1, 2, 0)}),
         lambda x, axes: np.einsum("abc->bca", x)),
    Case("flip", lambda r: ([normal(r, (3, 4))], {"axes": (1,)}), lambda x, axes: x[:, ::-1]),
    Case("pad", _pad_draw, lambda x, widths: np.pad(x, widths, constant_values=0)),
    Case("slice", _slice_draw, lambda x, start, stop: x[tuple(slice(a, z) for a, z in zip(start, stop))]),
    Case("stack", lambda r: (lambda s: ([normal(r, s) for _ in range(3)], {"axis": 1}))(shape(r, ndim=2)),
         lambda *xs, axis: np.concatenate([x[:, None] for x in xs], axis=1)),
    Case("split", lambda r: ([normal(r, (3, 4, 2))], {"axis": 1, "index": 2}), lambda x, axis, index: x[:, index]),
    Case("dilate", _dilate_draw, _dilate_expect),
    Case("undilate", _dilate_draw, _undilate_expect),
    Case("summation", _reduce_draw, lambda x, axes: np.add.reduce(x, axis=axes)),
    Case("max", _reduce_draw, lambda x, axes: np.maximum.reduce(x, axis=axes)),
    Case("logsumexp", _reduce_draw, _logsumexp_expect),
    Case("logsoftmax", lambda r: ([normal(r, (3, 5))], {"axis": 1}),
         lambda x, axis: x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))),
    Case("matmul", _matmul_draw, lambda a, b: np.einsum("...ik,...kj->...ij", a, b)),
    Case("conv", lambda r: ([normal(r, (2, 5, 6, 3)), normal(r, (int(r.integers(1, 4)), int(r.integers(1, 4)), 3, 2))],
                            {"stride": int(r.integers(1, 3)), "padding": int(r.integers(0, 3))}), _conv_expect),
    Case("conv", lambda r: ([normal(r, (1, 12, 12, 2)), normal(r, (*[int(r.choice([1, 3, 5]))] * 2, 2, 3))],
                            {"stride": 1, "padding": int(r.integers(0, 3))}), _conv_expect),  # >= 64 outputs an image
    Case("conv", lambda r: ([normal(r, (1, 17, 17, 2)), normal(r, (int(r.integers(1, 4)), int(r.integers(1, 4)), 2, 8))],
                            {"stride": int(r.integers(1, 3)), "padding": int(r.integers(0, 3))}),
         _conv_expect),  # 8 output channels, >= 64 outputs an image: the loop nest in register tiles (ir/tiles.py)
    Case("conv", lambda r: ([normal(r, (1, 10, 10, 8)), normal(r, (3, 3, 8, 4))],
                            {"stride": int(r.integers(1, 3)), "padding": int(r.integers(0, 3))}),
         _conv_expect),  # 8 input channels: the input gradient in register tiles too (dilated at stride 2)
    Case("conv", lambda r: (lambda k: ([normal(r, (1, 8, 16, 2)), normal(r, (k, k, 2, 4))], {"stride": 1, "padding": k // 2}))(
        int(r.choice([1, 3, 5]))), _conv_expect),  # rows of 16 outputs: over NCHW planes in tiles of channels x pixels
    *[Case("conv", lambda r, s=s: ([normal(r, (2, 8, 8, 4)), normal(r, (3, 3, 4, 8))], {"stride": s, "padding": 1}),
           _conv_expect) for s in (1, 2)],  # stride 1: rows of 8 over planes; 2: 4x4 outputs an image in NHWC tiles
    Case("windows", _pool_draw, _windows_expect),
    Case("unwindows", lambda r: (lambda xs, a: ([_windows_expect(xs[0], **a)], {**a, "size": xs[0].shape[-2:]}))(*_pool_draw(r)),
         _unwindows_expect),
    Case("plane_windows", lambda r: (lambda k, row, length, size: (
        [normal(r, (2, size))], {"kernel": k, "row": row, "length": length}))(*_plane_draw(r)), _plane_windows_expect),
    Case("plane_unwindows", lambda r: (lambda k, row, length, size: (
        [normal(r, (2, 1, k, k, length))], {"kernel": k, "row": row, "size": size}))(*_plane_draw(r)),
        _plane_unwindows_expect),
    Case("plane_conv", lambda r: (lambda k, row, length, size: (
        [normal(r, (2, 2, size)), normal(r, (k, k, 2, 3))], {"kernel": k, "row": row, "length": length}))(*_plane_draw(r)),
        _plane_conv_expect),
    Case("plane_correlate", lambda r: (lambda k, row, length, size: (
        [normal(r, (2, 3, length)), normal(r, (2, 2, size))], {"kernel": k, "row": row}))(*_plane_draw(r)),
        _plane_correlate_expect),
    Case("row_conv", lambda r: (lambda h, w, kh, kw: (
        [normal(r, (2, 2, h, w)), normal(r, (kh, kw, 2, 3))], {"width": int(r.integers(1, w - kw + 2))}))(
        int(r.integers(3, 7)), int(r.integers(3, 7)), int(r.integers(1, 4)), int(r.integers(1, 4))), _row_conv_expect),
    Case("avg_pool2d", _pool_draw, lambda x, kernel, stride: _windows_expect(x, kernel, stride).mean(axis=(-2, -1))),
    Case("random_uniform", lambda r: ([np.int64(r.integers(0, 2**62))], {"shape": shape(r), "dtype": "f64", "stream": 3}),
         lambda seed, shape, dtype, stream: _splitmix_uniform(int(seed), stream, shape), differentiable=False),
    Case("arange", lambda r: ([], {"size": int(r.integers(0, 9)), "dtype": "i64"}),
         lambda size, dtype: np.array(list(range(size)), np.int64), differentiable=False),
    Case("gather", _gather_draw, _gather_expect),
    Case("scatter_add", _scatter_add_draw, _scatter_add_expect),
    Case("max_pool2d", _pool_draw, lambda x, kernel, stride: _windows_expect(x, kernel, stride).max(axis=(-2, -1))),
    Case("scan", _scan_draw, lambda *a, carries, xs, length, reverse, body:
         _scan_expect(*a, carries, xs, length, reverse, body)),
    Case("part", lambda r: ([normal(r, (12,))], {"offset": int(r.integers(0, 7)), "shape": (2, 3)}),
         lambda x, offset, shape: x[offset:offset + 6].reshape(shape)),
]

BY_OP = {}
for _case in CASES:
    BY_OP.setdefault(_case.op, []).append(_case)


def single_op_graph(op, inputs, attrs, dtype="f64"):
    """A graph applying `op` to `inputs` (floats cast to `dtype`), and the cast inputs."""
    g = Graph(op)
    cast = [x.astype(TensorType((), dtype).np_dtype) if x.dtype.kind == "f" else x for x in inputs]
    attrs = {k: parse(print_graph(v).replace("f64", dtype)) if isinstance(v, Graph) else v
             for k, v in attrs.items()}  # a region (scan's body) computes in the inputs' dtype too
    values = [g.add_input(TensorType.of(x), name=f"x{i}") for i, x in enumerate(cast)]
    g.outputs = [Builder(g).emit(op, *values, **attrs)]
    return maybe_verify(g, "single op"), cast


def loss_graph(op, inputs, attrs):
    """sum(op(inputs) * r) for an input r, so every output element's gradient counts; returns the
    graph, the inputs' values and r."""
    g = Graph("loss")
    values = [g.add_input(TensorType.of(x), name=f"x{i}") for i, x in enumerate(inputs)]
    b = Builder(g)
    y = b.emit(op, *values, **attrs)
    r = g.add_input(y.type, name="r")
    g.outputs = [b.summation(b.multiply(y, r), axes=tuple(range(y.ndim)))]
    return maybe_verify(g, "loss"), values, r
