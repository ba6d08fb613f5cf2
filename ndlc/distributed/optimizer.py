"""`DistributedOptimizer`: Horovod's wrapper for ndlc. Its `step()` averages the gradients over
the ranks, then runs the wrapped optimizer's update. Compiled, that all-reduce is where the step
is cut (jit/exchange.py): one program computes the local gradients, the runtime averages
them, a second program runs the update."""
import numpy as np

from ..jit.capture import find_slots
from ..frontend.context import active_context
from ..jit.exchange import flat_buffers
from ..frontend.optim import Optimizer
from ..frontend.tensor import Tensor
from ..errors import NdlcError
from ..ir.types import TensorType
from .world import BUCKET_BYTES, init

OWN = ("optimizer", "params", "model", "world", "bucket_bytes", "broadcast_buffers")


class DistributedOptimizer(Optimizer):
    """`optimizer` with its gradients averaged over all ranks before each update.

    On creation, rank 0's parameters, optimizer state and `model`'s buffers (BatchNorm's running
    statistics) are broadcast to every rank. `broadcast_buffers` (PyTorch DDP's default): after
    each step, rank 0's buffers replace the others' (each rank's BatchNorm normalises with its own
    batch's statistics and updates its running statistics from them; use SyncBatchNorm for global
    ones).
    `bucket_mb`: the largest single all-reduce. Attributes of the wrapped optimizer (lr, ...) read
    and write through."""

    def __init__(self, optimizer, model=None, bucket_mb=BUCKET_BYTES / 2**20, broadcast_buffers=True):
        if not isinstance(optimizer, Optimizer) or isinstance(optimizer, DistributedOptimizer):
            raise NdlcError(f"DistributedOptimizer wraps an ndlc optimizer (SGD, Adam), not "
                            f"{type(optimizer).__name__}")
        if not bucket_mb > 0:
            raise NdlcError(f"DistributedOptimizer: bucket_mb must be positive, not {bucket_mb!r}")
        own = dict(optimizer=optimizer, params=optimizer.params, model=model, world=init(),
                   bucket_bytes=int(bucket_mb * 2**20), broadcast_buffers=broadcast_buffers)
        for name, value in own.items():
            object.__setattr__(self, name, value)
        broadcast_tensors(self.world, {"model": model, "optimizer": optimizer})

    def __getattr__(self, name):
        return getattr(vars(self)["optimizer"], name)

    def __setattr__(self, name, value):
        if name in OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.optimizer, name, value)

    def state_dict(self):
        """The wrapped optimizer's (a checkpoint holds no trace of the wrapping)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def step(self):
        """Average the gradients over the ranks (while tracing: mark where the runtime does it),
        then run the wrapped optimizer's update on them."""
        params = [p for p in self.params if p.grad is not None]
        context = active_context()
        if context is not None:
            for p, grad in zip(params, context.exchanged([p.grad for p in params], self, differentiable=False)):
                p.grad = grad
        else:
            flats, views = flat_buffers([TensorType.of(p.grad.numpy()) for p in params])
            for view, p in zip(views, params):
                np.copyto(view, p.grad.numpy())
            self.world.average(flats, self.bucket_bytes)
            for view, p in zip(views, params):
                p.grad = Tensor.make_const(view)
        self.optimizer.step()
        if context is None and self.broadcast_buffers and self.model is not None:
            parameters = {id(p) for p in self.model.parameters()}
            broadcast_tensors(self.world, {"model": self.model}, skip=parameters)

    def __call__(self, buffers):
        """The compiled step's exchange: average the gradient buffers over the ranks."""
        self.world.average(buffers, self.bucket_bytes)

    def synchronise(self, arrays):
        """After a compiled step: the state each rank updated from its own batch alone (BatchNorm's
        running statistics) becomes rank 0's, when `broadcast_buffers`."""
        if self.broadcast_buffers:
            self.world.broadcast(arrays)

    def compiled(self, fingerprint):
        """Every rank must have compiled the same step: compare the programs' hashes."""
        self.world.agree(fingerprint, "training steps")


def broadcast_tensors(world, roots, skip=()):
    """Make every tensor under `roots` (Modules, Optimizers; None skipped), but those whose id is
    in `skip`, hold rank 0's data."""
    tensors = {}
    for slot in find_slots({k: v for k, v in roots.items() if v is not None}):
        if id(slot.get()) not in skip:
            tensors.setdefault(id(slot.get()), slot.get())
    arrays = []
    for t in tensors.values():
        array = t.numpy()
        if not (array.flags.writeable and array.flags.c_contiguous):
            array = np.array(array)
            t.data = Tensor.make_const(array)
        arrays.append(array)
    world.broadcast(arrays)
