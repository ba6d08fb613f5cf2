"""`DistributedSampler`: each rank's share of an epoch, as PyTorch's. Every rank draws the same
permutation (same seed and epoch), pads it to a multiple of the ranks by repeating its start, and
takes every size-th index from its rank on; batch k of every rank together is then batch k of
one process with the ranks' batches joined (indices k·N·B ... (k+1)·N·B of the permutation)."""
import numpy as np

from ..errors import NdlcError


class DistributedSampler:
    """Indices of `dataset` for rank `rank` of `size`; `set_epoch(e)` before each epoch reshuffles.
    `pad=False` (evaluation): no repeated indices, the shares differ in length by at most one."""

    def __init__(self, dataset, rank, size, shuffle=True, seed=0, pad=True):
        if not (isinstance(size, int) and size >= 1 and isinstance(rank, int) and 0 <= rank < size):
            raise NdlcError(f"DistributedSampler: rank must be in [0, size) and size >= 1, got rank "
                            f"{rank!r} of {size!r}")
        self.length, self.rank, self.size = len(dataset), rank, size
        self.shuffle, self.seed, self.pad, self.epoch = shuffle, seed, pad, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        if self.pad:
            return -(-self.length // self.size)
        return len(range(self.rank, self.length, self.size))

    def __iter__(self):
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
                 if self.shuffle else np.arange(self.length))
        if self.pad:
            order = np.resize(order, -(-self.length // self.size) * self.size)  # repeats the start
        return iter(order[self.rank::self.size].tolist())
