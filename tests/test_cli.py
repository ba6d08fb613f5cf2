"""The `ndlc` command: dump a stage of the example, and train's message when data is missing."""
import gzip
import re
import struct

import numpy as np

from ndlc.cli import main


def test_dump_prints_the_requested_stage(capsys):
    assert main(["dump", "traced", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("graph @train_step(\n    %x: f32[4,784],\n    %y: i64[4],\n"
                          "    %model.modules.0.weight: f32[784,32] state,\n")
    assert main(["dump", "planned", "--batch-size", "4"]) == 0
    assert "kernel k0" in capsys.readouterr().out


def test_dump_of_an_unknown_stage_lists_the_stages(capsys):
    assert main(["dump", "fused-ish"]) == 2
    assert re.search("no stage 'fused-ish'; stages: .*fused, scheduled, planned", capsys.readouterr().err)


def test_train_without_data_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NDLC_DATA", raising=False)
    assert main(["train", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Fashion-MNIST not found" in err and "apt-get install" in err


def _write_idx(path, array):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def _fashion_like(folder, count):
    """`count` 28x28 images whose brightness follows their label, as Fashion-MNIST idx files."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, count)
    images = (labels[:, None, None] * 25 + rng.integers(0, 20, (count, 28, 28))).clip(0, 255)
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


def test_train_runs_compiled_on_small_idx_files(tmp_path, capsys):
    _fashion_like(tmp_path, 96)
    assert main(["train", "--data", str(tmp_path), "--epochs", "2", "--batch-size", "32", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"]
    assert "test accuracy" in lines[1] and lines[1].endswith("steps/s")


def test_train_lenet_runs_compiled_on_small_idx_files(tmp_path, capsys):
    _fashion_like(tmp_path, 64)
    assert main(["train", "--model", "lenet", "--data", str(tmp_path), "--batch-size", "32", "--no-progress"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("epoch 1: loss") and "test accuracy" in line
