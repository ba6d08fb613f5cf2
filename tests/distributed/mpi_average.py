"""Run under mpirun by test_mpi.py: ndlc.distributed's average of float32 buffers (odd sizes, so
chunks are padded; a small bucket, so there are several) against every rank's raw data summed in
rank order; exits non-zero (MPI_Abort, through init()'s hook) if any element differs in a bit.
Also checks that init() gave each rank the cores it may use / its ranks threads, OpenBLAS included."""
import os

import numpy as np

import ndlc.distributed as dist
from ndlc.env import cores
from ndlc.runtime import libraries

preset = os.environ.get("NDLC_THREADS")
world = dist.init()
share = str(max(1, cores() // world.local_size))
if preset is None and os.environ["NDLC_THREADS"] != share:
    raise AssertionError(f"rank {world.rank}: NDLC_THREADS={os.environ['NDLC_THREADS']}, expected {share}")
if libraries.blas_threads() > int(os.environ["NDLC_THREADS"]):
    raise AssertionError(f"rank {world.rank}: OpenBLAS runs {libraries.blas_threads()} threads, over its share")
for size in (1, 7, 1000, 12345):
    mine = np.random.default_rng([world.rank, size]).standard_normal(size).astype(np.float32)
    everyone = np.stack(world.comm.allgather(mine))
    ordered = everyone[0].copy()
    for row in everyone[1:]:
        ordered += row
    expected = ordered / np.float32(world.size)
    got = mine.copy()
    world.average([got], bucket_bytes=4 * 1000)
    if not np.array_equal(got.view(np.uint32), expected.view(np.uint32)):
        raise AssertionError(f"rank {world.rank}: the average of {size} elements differs from the rank-ordered sum")
    total = mine.copy()
    world.total([total], bucket_bytes=4 * 1000)
    if not np.array_equal(total.view(np.uint32), ordered.view(np.uint32)):
        raise AssertionError(f"rank {world.rank}: the sum of {size} elements is wrong")
if world.is_main:
    print(f"{world.size} ranks: averages bit-identical to the rank-ordered sums")
