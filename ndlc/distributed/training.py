"""What `ndlc train --distributed` does differently as one rank of a data-parallel job: the
optimizer wrapped, each epoch split across the ranks, sums over the ranks, and only rank 0
printing and writing. Without --distributed, a Job is the lone process and changes nothing."""
from ..frontend.data import DataLoader
from ..errors import NdlcError
from .optimizer import DistributedOptimizer
from .sampler import DistributedSampler
from .syncbn import convert_sync_batchnorm
from .world import init


class Job:
    """This process's part in training: all of it, or one rank's (`distributed`)."""

    def __init__(self, distributed):
        self.world = init() if distributed else None
        self.rank, self.size = (self.world.rank, self.world.size) if distributed else (0, 1)
        self.sampler = None

    @property
    def is_main(self):
        """The process that prints, saves checkpoints and shows the progress bar."""
        return self.rank == 0

    def distribute(self, model, optimizer, sync_batchnorm=False):
        """`optimizer`, its gradients averaged over the ranks when distributed; `sync_batchnorm`:
        `model`'s BatchNorm layers made SyncBatchNorm first."""
        if self.world is None:
            return optimizer
        if sync_batchnorm:
            convert_sync_batchnorm(model)
        return DistributedOptimizer(optimizer, model)

    def loaders(self, train_set, test_set, batch_size, seed):
        """(train, test) loaders. Distributed, `batch_size` is the global batch: each rank takes
        batch_size / ranks of every step's samples, and its share of the test set."""
        if self.world is None:
            return DataLoader(train_set, batch_size, shuffle=True), DataLoader(test_set, batch_size)
        if batch_size % self.size:
            raise NdlcError(f"--batch-size {batch_size} is the global batch: it must divide evenly "
                            f"among the {self.size} ranks")
        self.sampler = DistributedSampler(train_set, self.rank, self.size, seed=seed)
        test = DistributedSampler(test_set, self.rank, self.size, shuffle=False, pad=False)
        return (DataLoader(train_set, batch_size // self.size, sampler=self.sampler),
                DataLoader(test_set, batch_size // self.size, sampler=test))

    def start_epoch(self, epoch):
        """Every rank's share of this epoch's permutation (the same seed everywhere)."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def sum(self, *numbers):
        """Each number summed over the ranks (the loss, sample and correct-answer counts)."""
        return numbers if self.world is None else tuple(self.world.sum(n) for n in numbers)
