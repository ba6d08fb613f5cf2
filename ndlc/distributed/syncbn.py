"""SyncBatchNorm: BatchNorm whose training statistics are those of the global batch, every
rank's samples together, so that N ranks with batch B train as one process with batch N·B.

In a compiled step each layer sums its batch's Σx and Σx² per feature over the ranks (an
exchange: the step is cut there, jit/exchange.py) and normalises with the global mean and
variance E[x²] - mean². backward() sums the adjoints of those sums over the ranks the same way
(the adjoint of an all-reduce sum is an all-reduce sum), so gradients are those of the global
batch too. Running statistics are updated from the global ones: identical on every rank.
"""
import math

from ..frontend.context import active_context
from ..frontend.nn.layers import BatchNorm1d, BatchNorm2d, expand_reduced
from ..errors import NdlcError
from .world import init


class Sum:
    """An exchange's hook: sums the buffers over the ranks (its own adjoint)."""

    def __init__(self, world):
        self.world = world
        self.adjoint = self

    def __call__(self, buffers):
        self.world.total(buffers)

    def compiled(self, fingerprint):
        self.world.agree(fingerprint, "steps")


class SyncBatchNorm(BatchNorm1d):
    """The statistics of the global batch in training mode (running statistics in eval mode).
    Every rank must pass batches of the same shape. Eagerly, with more than one rank, it refuses
    to run: its statistics span the ranks only in a compiled step."""

    def statistics(self, x, axes):
        world = init()
        context = active_context()
        if world.size == 1:
            return super().statistics(x, axes)
        if context is None:
            raise NdlcError(f"{self!r}: SyncBatchNorm's statistics span the ranks only in a compiled "
                            "step (ndl.compile); run the model through one, or use BatchNorm")
        count = math.prod(x.shape[a] for a in axes) * world.size
        total, squares = context.exchanged([x.sum(axes), (x * x).sum(axes)], Sum(world))
        mean = total / count
        var = squares / count - mean * mean
        return mean, var, x - expand_reduced(mean, x.shape, axes)


class SyncBatchNorm1d(SyncBatchNorm):
    """BatchNorm1d over every rank's batch."""


class SyncBatchNorm2d(SyncBatchNorm):
    """BatchNorm2d (NCHW, per channel) over every rank's batch."""

    rank = BatchNorm2d.rank


SYNC = {BatchNorm1d: SyncBatchNorm1d, BatchNorm2d: SyncBatchNorm2d}


def convert_sync_batchnorm(model):
    """`model` with every BatchNorm1d/2d in it made a SyncBatchNorm1d/2d in place (PyTorch's
    convert_sync_batchnorm): the same objects, parameters and running statistics, so optimizers
    made before keep training them. Returns `model`."""
    for module in model.all_modules():
        if type(module) in SYNC:
            module.__class__ = SYNC[type(module)]
    return model
