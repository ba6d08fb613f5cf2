"""Data-parallel training over MPI, as a Horovod or PyTorch DDP user would write it:

    import ndlc.distributed as dist
    world = dist.init()                                   # rank, size; threads = cores / ranks
    dist.convert_sync_batchnorm(model)                    # optional: BatchNorm over all ranks' samples
    opt = dist.DistributedOptimizer(ndl.optim.SGD(model.parameters(), lr=0.1), model)
    step = ndl.compile(train_step)                        # cut at the gradients' all-reduce
    loader = ndl.data.DataLoader(train_set, 32, sampler=dist.DistributedSampler(train_set, world.rank, world.size))

and `mpirun -np 2 python train.py`. Needs mpi4py and an MPI library (`pip install 'ndlc[mpi]'`).
"""
from .optimizer import DistributedOptimizer, broadcast_tensors
from .sampler import DistributedSampler
from .syncbn import SyncBatchNorm1d, SyncBatchNorm2d, convert_sync_batchnorm
from .training import Job
from .world import World, end_job, init

__all__ = ["DistributedOptimizer", "DistributedSampler", "Job", "SyncBatchNorm1d", "SyncBatchNorm2d", "World",
           "broadcast_tensors", "convert_sync_batchnorm", "end_job", "init"]
