"""The sweep's cases (benchmarks/sweep.py), by family: shapes nobody tuned for, a fixed grid of
awkward ones (odd and prime sizes, one row or one column, tall and wide, tiny channel counts,
strides) plus `draws` more drawn per family from a seed, each forward and forward+backward.
--quick keeps each family's first op at its tiny size, for a smoke test."""
from typing import Callable, NamedTuple

import numpy as np

from suite.cases.base import OpCase
from suite.cases.conv import Conv
from suite.cases.kernels import ReluChain, SoftmaxLoss
from suite.cases.norms import BatchNorm, LayerNorm
from suite.cases.sweep_ops import (BatchNorm2d, LinearAct, LogSumExp, OptimizerSteps, Pool, Product,
                                   Reduce, Softmax, TransChain)

MAX_ELEMENTS = 1 << 22   # a drawn case's largest array: 16 MiB, beyond the caches, a few ms per call
BATCH_STATISTICS = 512   # a batch norm's fewest values per feature: PyTorch's unbiased running
                         # variance (n/(n-1) times needle's) then agrees within the check's tolerance


class Family(NamedTuple):
    """A family of cases: its ops on the fixed grid and how to draw one more op from an rng."""
    name: str
    grid: list
    draw: Callable


def loguniform(rng, low, high, odd=False):
    """An integer drawn log-uniformly from [low, high]; odd if asked (no power of two)."""
    value = int(round(np.exp(rng.uniform(np.log(low), np.log(high)))))
    return value | 1 if odd else value


def matrix(rng, rows=(1, 1 << 17), cols=(3, 1 << 13)):
    """A drawn (rows, cols) shape within MAX_ELEMENTS, both odd half of the time."""
    odd = bool(rng.integers(2))
    r, c = loguniform(rng, *rows, odd), loguniform(rng, *cols, odd)
    return min(r, MAX_ELEMENTS // c), c


def images(rng, channels=(1, 64), side=(5, 64), least=1):
    """A drawn NCHW shape within MAX_ELEMENTS (square images, odd sides half of the time), with at
    least `least` values per channel."""
    c, hw = loguniform(rng, *channels), loguniform(rng, *side, odd=bool(rng.integers(2)))
    n = max(1, min(loguniform(rng, 2, 256), MAX_ELEMENTS // (c * hw * hw)), -(-least // (hw * hw)))
    return n, c, hw, hw


def drawn_conv(rng):
    """A convolution with a drawn batch, channels, image side, kernel (1, 3, 5 or 7) and stride."""
    k, stride = int(rng.choice([1, 3, 5, 7])), int(rng.choice([1, 1, 2]))
    n, cin, hw, _ = images(rng, (1, 48), (k + 2, 40))
    n = max(1, min(n, 64))
    return Conv((n, cin, loguniform(rng, 2, 64), hw, k), (2, 2, 3, 8, k), stride=stride)


def drawn_product(rng):
    """A matrix product with drawn M, K, N (any of them possibly 1) and a batch a third of the time."""
    m, k, n = (loguniform(rng, 1, 2048) for _ in range(3))
    batch = (loguniform(rng, 2, 64),) if rng.integers(3) == 0 else ()
    return Product(((*batch, m, k), (*batch, k, n)), ((2, 3, 4), (2, 4, 5)))


def drawn_reduce(rng):
    """A sum or max over a drawn axis of a drawn 3-D array."""
    shape = tuple(loguniform(rng, 1, 512) for _ in range(3))
    return Reduce(shape, (3, 4, 5), str(rng.choice(["sum", "max"])), int(rng.integers(3)))


def drawn_pool(rng):
    """Max or average pooling with a drawn kernel (2 or 3), stride and image."""
    k = int(rng.choice([2, 3]))
    return Pool(images(rng, (1, 64), (k + 3, 64)), (2, 2, 6, 6), str(rng.choice(["max", "avg"])), k,
                int(rng.choice([1, k])))


def optimizer_shapes(rng, count, largest):
    """`count` small parameter shapes (biases, matrices, convolution kernels) of up to `largest`
    floats, as a model's parameter list has them."""
    shapes = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            shapes.append((loguniform(rng, 1, largest),))
        elif kind == 1:
            side = int(largest ** 0.5)
            shapes.append((loguniform(rng, 1, side), loguniform(rng, 1, side)))
        else:
            side = int((largest / 9) ** 0.5)
            shapes.append((3, 3, loguniform(rng, 1, side), loguniform(rng, 1, side)))
    return shapes


FAMILIES = [
    Family("elementwise", [ReluChain((1000003,), (1001,)), ReluChain((3 ** 13,), (3 ** 5,)),
                           TransChain((4096, 1024), (8, 5)), TransChain((1000, 77), (3, 7)),
                           TransChain((65536, 31), (9, 3))],
           lambda rng: TransChain(matrix(rng), (4, 3))),
    Family("BatchNorm1d", [BatchNorm((65536, 256), (512, 16)), BatchNorm((1000, 77), (513, 7)),
                           BatchNorm((513, 4097), (515, 33)), BatchNorm((8192, 31), (531, 3))],
           lambda rng: BatchNorm(matrix(rng, rows=(BATCH_STATISTICS, 1 << 17)), (517, 5))),
    Family("BatchNorm2d", [BatchNorm2d((64, 16, 32, 32), (8, 3, 8, 8)), BatchNorm2d((256, 6, 28, 28), (3, 2, 14, 14)),
                           BatchNorm2d((8, 64, 17, 17), (2, 5, 17, 17)), BatchNorm2d((32, 3, 65, 65), (2, 3, 17, 17))],
           lambda rng: BatchNorm2d(images(rng, least=BATCH_STATISTICS), (2, 3, 17, 17))),
    Family("LayerNorm", [LayerNorm((65536, 256), (64, 16)), LayerNorm((1000, 77), (9, 7)),
                         LayerNorm((33, 4097), (5, 33)), LayerNorm((8192, 31), (31, 3)),
                         LayerNorm((4096, 1000), (7, 10))],
           lambda rng: LayerNorm(matrix(rng), (6, 5))),
    Family("softmax", [Softmax((4096, 1000), (8, 10)), Softmax((65536, 31), (9, 3)),
                       Softmax((33, 4097), (3, 33)), Softmax((1000, 77), (5, 7))],
           lambda rng: Softmax(matrix(rng), (4, 5))),
    Family("logsumexp", [LogSumExp((4096, 1000), (8, 10)), LogSumExp((65536, 31), (9, 3)),
                         LogSumExp((33, 4097), (3, 33)), LogSumExp((64, 31, 257), (2, 3, 5))],
           lambda rng: LogSumExp(matrix(rng), (4, 5))),
    Family("SoftmaxLoss", [SoftmaxLoss((4096, 1000), (64, 10)), SoftmaxLoss((65536, 10), (33, 3)),
                           SoftmaxLoss((64, 50257), (3, 17)), SoftmaxLoss((1000, 77), (9, 7))],
           lambda rng: SoftmaxLoss(matrix(rng, cols=(2, 1 << 14)), (5, 4))),
    Family("reductions", [Reduce((4096, 1024), (8, 6), "sum", 0), Reduce((4096, 1024), (8, 6), "sum", 1),
                          Reduce((256, 257, 63), (3, 4, 5), "sum", 0), Reduce((256, 257, 63), (3, 4, 5), "sum", 1),
                          Reduce((256, 257, 63), (3, 4, 5), "sum", 2), Reduce((31, 65537), (3, 9), "max", 0),
                          Reduce((65537, 31), (9, 3), "max", 1), Reduce((256, 257, 63), (3, 4, 5), "max", 1)],
           drawn_reduce),
    Family("matmul", [Product(((1, 4096), (4096, 1000)), ((1, 8), (8, 5))),
                      Product(((1024, 1024), (1024, 1024)), ((6, 4), (4, 5))),
                      Product(((4096, 1000), (1000, 1)), ((8, 5), (5, 1))),
                      Product(((127, 129), (129, 65)), ((3, 5), (5, 7))),
                      Product(((1000, 77), (77, 333)), ((7, 3), (3, 5))),
                      Product(((32, 128, 64), (32, 64, 128)), ((2, 3, 4), (2, 4, 5))),
                      Product(((16, 257, 100), (100, 63)), ((2, 3, 4), (4, 5))),
                      Product(((8, 1, 512), (8, 512, 512)), ((2, 1, 4), (2, 4, 3)))],
           drawn_product),
    Family("Linear+activation", [LinearAct((256, 784, 512), (4, 6, 5), "relu"),
                                 LinearAct((1000, 77, 333), (3, 7, 5), "tanh"),
                                 LinearAct((1, 1024, 1024), (1, 8, 8), "sigmoid"),
                                 LinearAct((4096, 100, 10), (9, 10, 3), "relu")],
           lambda rng: LinearAct(tuple(loguniform(rng, 1, 2048) for _ in range(3)), (3, 4, 5),
                                 str(rng.choice(list(("relu", "tanh", "sigmoid")))))),
    Family("conv2d", [Conv((32, 3, 16, 33, 3), (2, 3, 4, 7, 3)), Conv((64, 16, 32, 16, 3), (2, 3, 4, 8, 3), stride=2),
                      Conv((16, 5, 7, 31, 5), (2, 5, 3, 9, 5), padding=0), Conv((8, 64, 64, 15, 1), (2, 6, 4, 5, 1)),
                      Conv((32, 3, 32, 32, 7), (2, 3, 4, 11, 7), padding=3, stride=2),
                      Conv((128, 13, 17, 14, 3), (2, 13, 5, 6, 3))],
           drawn_conv),
    Family("pooling", [Pool((64, 16, 32, 32), (2, 3, 6, 6), "max", 2, 2),
                       Pool((32, 32, 33, 33), (2, 3, 7, 7), "max", 3, 2),
                       Pool((128, 6, 28, 28), (2, 3, 6, 6), "avg", 2, 2),
                       Pool((16, 8, 31, 31), (2, 3, 7, 7), "avg", 3, 1)],
           drawn_pool),
]


def optimizer_cases(rng, quick):
    """Adam and SGD steps over a model-like list of many small parameters (and, unless --quick,
    over 200 tiny ones: a step's fixed cost per parameter)."""
    small = optimizer_shapes(rng, 3, 16)
    lists = [optimizer_shapes(rng, 40, 1 << 14)] + ([] if quick else [optimizer_shapes(rng, 200, 64)])
    return [("optimizers", OptimizerSteps(kind, shapes, small)) for shapes in lists for kind in ("Adam", "SGD")]


def cases(seed, draws, quick, only=""):
    """(family, case) pairs: each family's grid and `draws` drawn ops (none with --quick, which keeps
    the first op of each family), forward and forward+backward; then the optimizer steps. `only`
    keeps the families whose name contains it (any case)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for family in FAMILIES:
        drawn = [family.draw(rng) for _ in range(draws)]
        if only.lower() not in family.name.lower():
            continue
        ops = family.grid[:1] if quick else family.grid + drawn
        for op in ops:
            chosen += [(family.name, OpCase(op, backward)) for backward in (False, True)]
    optimizers = optimizer_cases(rng, quick)
    return chosen + [pair for pair in optimizers if only.lower() in pair[0]]
