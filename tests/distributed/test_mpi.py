"""Data-parallel training under `mpirun -np 2` (mpi_job.py): the same parameters as one process
with the whole batch, bit-identical on every rank after every step, and a failing rank ending
the job. Skipped where Open MPI's mpirun or mpi4py is missing."""
import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import ndlc as ndl

import mpi_job
from test_cli import _fashion_like

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_job.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(JOB)))
MISSING = ("mpirun is not on PATH (apt-get install -y openmpi-bin libopenmpi-dev)" if shutil.which("mpirun") is None
           else "mpi4py is not installed (pip install 'ndlc[mpi]')" if importlib.util.find_spec("mpi4py") is None
           else None)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"no MPI: {MISSING}")


def mpirun(*args, ranks=2, timeout=120):
    """`mpirun -np ranks python args` (oversubscribed, allowed as root, as CI runs)."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    command = ["mpirun", "-np", str(ranks), "--oversubscribe", "--allow-run-as-root",
               sys.executable, *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def one_process(model_name):
    """The parameters after mpi_job's steps, in this process, each step on the whole batch."""
    model, optimizer = mpi_job.build(model_name)
    step = ndl.compile(mpi_job.training_step(model, optimizer))
    for x, y in mpi_job.batches(model_name):
        step(x, y)
    return mpi_job.parameters(model)


def test_two_ranks_equal_one_process_and_agree_bitwise_after_every_step(tmp_path):
    out = tmp_path / "params.npy"
    job = mpirun(JOB, out)
    assert job.returncode == 0, job.stderr
    assert "parameters bit-identical after every step" in job.stdout
    np.testing.assert_allclose(np.load(out), one_process("mlp"), rtol=1e-5, atol=1e-7)


def test_eagerly_the_distributed_optimizer_averages_too(tmp_path):
    out = tmp_path / "params.npy"
    job = mpirun(JOB, out, "--eager")
    assert job.returncode == 0, job.stderr
    np.testing.assert_allclose(np.load(out), one_process("mlp"), rtol=1e-5, atol=1e-7)


def test_eagerly_rank_0s_batchnorm_buffers_are_everyones_after_each_step(tmp_path):
    job = mpirun(JOB, tmp_path / "params.npy", "--eager", "--model", "bn-mlp")
    assert job.returncode == 0, job.stderr
    assert "bit-identical after every step" in job.stdout


def test_sync_batchnorm_on_two_ranks_equals_batchnorm_on_one_process(tmp_path):
    """SyncBatchNorm's statistics and their adjoints are summed over the ranks: 2 x 32 is 1 x 64."""
    out = tmp_path / "params.npy"
    job = mpirun(JOB, out, "--model", "bn-mlp", "--sync")
    assert job.returncode == 0, job.stderr
    np.testing.assert_allclose(np.load(out), one_process("bn-mlp"), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_lenet_with_sync_batchnorm_on_two_ranks_equals_one_process(tmp_path):
    out = tmp_path / "params.npy"
    job = mpirun(JOB, out, "--model", "lenet", "--sync")
    assert job.returncode == 0, job.stderr
    np.testing.assert_allclose(np.load(out), one_process("lenet"), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_per_rank_batchnorm_is_not_one_process_but_ranks_agree(tmp_path):
    """LeNet-BN normalises each rank's half batch with its own statistics (PyTorch DDP's default):
    the ranks still agree bit for bit, and the result differs from one process's."""
    out = tmp_path / "params.npy"
    job = mpirun(JOB, out, "--model", "lenet")
    assert job.returncode == 0, job.stderr
    assert not np.allclose(np.load(out), one_process("lenet"), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_average_is_the_rank_ordered_sum_bit_for_bit(ranks):
    """2 ranks: one all-gather; 3: all-to-all, rank-ordered sums of chunks, all-gather."""
    job = mpirun(os.path.join(os.path.dirname(JOB), "mpi_average.py"), ranks=ranks)
    assert job.returncode == 0, job.stderr
    assert f"{ranks} ranks: averages bit-identical to the rank-ordered sums" in job.stdout


def test_ranks_that_compiled_different_programs_refuse_to_start(tmp_path):
    job = mpirun(JOB, tmp_path / "params.npy", "--uneven")
    assert job.returncode != 0
    assert "ranks compiled different training steps: rank(s) [1] differ from rank 0" in job.stderr


def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    job = mpirun(JOB, tmp_path / "params.npy", "--fail-at", 3)
    assert job.returncode != 0
    assert "rank 1 of 2 failed" in job.stderr
    assert "RuntimeError: planted failure at step 3" in job.stderr


@pytest.mark.parametrize("options", [[], ["--sync-batchnorm"]])
def test_ndlc_train_distributed_runs_and_only_rank_0_prints(tmp_path, options):
    _fashion_like(tmp_path, 64)
    job = mpirun("-m", "ndlc.cli", "train", "--distributed", *options, "--data", tmp_path, "--batch-size", 16,
                 "--no-progress")
    assert job.returncode == 0, job.stderr
    lines = job.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epoch 1: loss"), job.stdout


@pytest.mark.slow
def test_ndlc_train_distributed_resumes_on_every_rank_and_rank_0_alone_says_so(tmp_path):
    _fashion_like(tmp_path, 64)
    train = ["-m", "ndlc.cli", "train", "--distributed", "--data", tmp_path, "--batch-size", 16, "--no-progress",
             "--checkpoint", tmp_path / "ckpt"]
    assert mpirun(*train).returncode == 0
    job = mpirun(*train, "--resume", "--epochs", 2)
    assert job.returncode == 0, job.stderr
    lines = job.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("resumed from") and lines[1].startswith("epoch 2:"), job.stdout


def test_ndlc_train_distributed_refuses_a_batch_the_ranks_cannot_share(tmp_path):
    _fashion_like(tmp_path, 64)
    job = mpirun("-m", "ndlc.cli", "train", "--distributed", "--data", tmp_path, "--batch-size", 15)
    assert job.returncode != 0
    assert "--batch-size 15 is the global batch: it must divide evenly among the 2 ranks" in job.stderr
