"""The processes of a data-parallel job, through MPI (mpi4py): rank and size, and the collectives
ndlc needs: a deterministic average of float buffers, broadcasts from rank 0, and checks that all
ranks agree.

Averaging is not MPI_Allreduce: the MPI standard leaves the order of a sum open, and Open MPI
picks algorithms by message size and rank count, so float32 sums may round differently from one
run, size or rank to another. Here each bucket is cut into one chunk per rank; an all-to-all hands
rank k every rank's chunk k, rank k adds them in rank order 0, 1, ..., N-1 and divides by N, and
an all-gather hands every rank every averaged chunk. Each element is summed once, on one rank, in a
fixed order, then only copied: all ranks hold bit-identical results, and the same inputs give the
same result on every run. It moves what a ring all-reduce moves (2·(N-1)/N of the bucket per rank).
At 2 ranks one all-gather of the whole bucket moves as much, and each rank adds the two in rank
order itself: the same additions, one collective fewer.
"""
import os
import sys
import time
import traceback

import numpy as np

from ..env import cores
from ..errors import NdlcError
from ..runtime import libraries

INSTALL = ("pip install 'ndlc[mpi]' (mpi4py) with an MPI library "
           "(apt-get install -y openmpi-bin libopenmpi-dev)")
BUCKET_BYTES = 25 * 2**20  # PyTorch DDP's default bucket: few collectives, bounded scratch memory
_WORLD = None


def init():
    """Join the job (MPI_Init, through mpi4py) and return its World; later calls return the same.
    Unless NDLC_THREADS is set, each rank gets the cores this process may use / its ranks on this
    machine (also OpenBLAS's limit). With more than one rank, an uncaught exception on any rank prints it
    and ends the whole job (MPI_Abort) instead of leaving the others waiting in a collective."""
    global _WORLD
    if _WORLD is None:
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise NdlcError(f"ndlc.distributed needs mpi4py: {INSTALL} ({e})") from None
        _WORLD = World(MPI)
        _WORLD.share_cores()
        if _WORLD.size > 1:
            sys.excepthook = _WORLD.excepthook
    return _WORLD


def end_job(code):
    """After an error on this rank: if it is one of several, end them all (they may be waiting
    for it in a collective) with exit status `code`; a lone process just goes on to exit."""
    if _WORLD is not None and _WORLD.size > 1:
        _WORLD.fail(code)


class World:
    """This process's place in the job (`rank` of `size`) and the collectives over all ranks."""

    def __init__(self, mpi):
        self.mpi, self.comm = mpi, mpi.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_size = self.comm.Split_type(mpi.COMM_TYPE_SHARED).Get_size()
        self.scratch = {}
        self.reduce_seconds, self.reduces = 0.0, 0

    @property
    def is_main(self):
        """Rank 0: the one that prints, saves and shows progress."""
        return self.rank == 0

    def share_cores(self):
        """NDLC_THREADS (unless set) and OpenBLAS's threads: the cores this process may use / the
        ranks on this machine (ranks pinned to disjoint cores each see their own)."""
        if not os.environ.get("NDLC_THREADS"):
            os.environ["NDLC_THREADS"] = str(max(1, cores() // self.local_size))
        libraries.threads()  # holds OpenBLAS to the share; refuses a malformed NDLC_THREADS

    def average(self, buffers, bucket_bytes=BUCKET_BYTES):
        """Replace each float array of `buffers` (1-d, C-contiguous) by its mean over the ranks,
        bit-identical on every rank (the module docstring says how), bucket by bucket."""
        self.reduce(buffers, bucket_bytes, mean=True)

    def total(self, buffers, bucket_bytes=BUCKET_BYTES):
        """Replace each float array of `buffers` by its sum over the ranks, as `average` does."""
        self.reduce(buffers, bucket_bytes, mean=False)

    def reduce(self, buffers, bucket_bytes, mean):
        """Sum (`mean`: average) each of `buffers` over the ranks in place, bucket by bucket; the
        time spent adds to `reduce_seconds` (the benchmark's exchange time)."""
        start = time.perf_counter()
        if self.size > 1:
            for flat in buffers:
                step = max(self.size, bucket_bytes // flat.itemsize)
                for begin in range(0, flat.size, step):
                    self._reduce_bucket(flat[begin:begin + step], mean)
        self.reduce_seconds += time.perf_counter() - start
        self.reduces += 1

    def _reduce_bucket(self, bucket, mean):
        n = self.size
        if n == 2:  # one all-gather moves what the all-to-all and the all-gather would, in one collective
            return self._reduce_gathered(bucket, mean)
        chunk = -(-bucket.size // n)
        key = (bucket.dtype.str, chunk)
        if key not in self.scratch:  # send (padded), receive, sum, gathered: reused every step
            self.scratch[key] = (np.zeros((n, chunk), bucket.dtype), np.empty((n, chunk), bucket.dtype),
                                 np.empty(chunk, bucket.dtype), np.empty((n, chunk), bucket.dtype))
        padded, received, total, gathered = self.scratch[key]
        exact = bucket.size == n * chunk
        if exact:
            send = bucket.reshape(n, chunk)
        else:
            padded.reshape(-1)[:bucket.size] = bucket
            send = padded
        self.comm.Alltoall(send, received)
        np.copyto(total, received[0])
        for row in received[1:]:
            total += row
        if mean:
            total /= bucket.dtype.type(n)
        self.comm.Allgather(total, send if exact else gathered)
        if not exact:
            bucket[:] = gathered.reshape(-1)[:bucket.size]

    def _reduce_gathered(self, bucket, mean):
        """`_reduce_bucket` as every rank summing every rank's whole bucket in rank order: the
        same additions in the same order (so the same bits), one collective instead of two, but
        N times the data: for 2 ranks only."""
        key = ("gathered", bucket.dtype.str, bucket.size)
        if key not in self.scratch:
            self.scratch[key] = np.empty((self.size, bucket.size), bucket.dtype)
        rows = self.scratch[key]
        self.comm.Allgather(bucket, rows)
        np.copyto(bucket, rows[0])
        for row in rows[1:]:
            bucket += row
        if mean:
            bucket /= bucket.dtype.type(self.size)

    def broadcast(self, arrays, root=0):
        """Overwrite each array (C-contiguous, writeable) with rank `root`'s: one broadcast per
        dtype, the arrays packed into one buffer (every collective is a point where a rank that
        lost its core keeps the others waiting)."""
        by_dtype = {}
        for array in arrays:
            by_dtype.setdefault(array.dtype, []).append(array)
        for group in by_dtype.values():
            if len(group) == 1:
                self.comm.Bcast(group[0], root=root)
                continue
            packed = np.concatenate([a.reshape(-1) for a in group])
            self.comm.Bcast(packed, root=root)
            offset = 0
            for array in group:
                array.reshape(-1)[:] = packed[offset:offset + array.size]
                offset += array.size

    def sum(self, number):
        """A Python number summed over the ranks (evaluation's correct answers)."""
        return self.comm.allreduce(number)

    def agree(self, text, what):
        """Raise NdlcError on every rank unless all ranks passed the same `text` (a hash of `what`)."""
        texts = self.comm.allgather(text)
        differing = [r for r, t in enumerate(texts) if t != texts[0]]
        if differing:
            raise NdlcError(f"ranks compiled different {what}: rank(s) {differing} differ from rank 0 "
                            f"({texts[0][:12]} vs {texts[differing[0]][:12]}); every rank must run the "
                            "same program on batches of the same shape")

    def excepthook(self, kind, error, trace):
        """Print the error as this rank's, then end every rank: the job exits non-zero."""
        print(f"ndlc.distributed: rank {self.rank} of {self.size} failed:", file=sys.stderr)
        traceback.print_exception(kind, error, trace)
        self.fail()

    def fail(self, code=1):
        """End the whole job with exit status `code` (MPI_Abort), after flushing this rank's output."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)
