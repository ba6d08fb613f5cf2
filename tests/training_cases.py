"""A small training problem the JIT, CUDA and distributed tests share: an MLP with BatchNorm on
four Gaussian clusters, trained by SGD with momentum or Adam."""
import numpy as np

import ndlc as ndl
from ndlc.examples.train_mlp import training_step

nn = ndl.nn


def setup(optimizer, seed=0):
    np.random.seed(seed)
    model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    if optimizer == "sgd":
        opt = ndl.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    else:
        opt = ndl.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    return model, opt, training_step(model, opt)


def batches(n, size=32, seed=1):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, 10)) * 2
    out = []
    for _ in range(n):
        y = rng.integers(0, 4, size)
        out.append(((centers[y] + rng.standard_normal((size, 10))).astype(np.float32), y))
    return out
