"""The `ndlc` command: dump a stage of the example, train (its message when data is missing, checkpoints
and resume, curves)."""
import gzip
import json
import re
import struct

import numpy as np
import pytest

import ndlc as ndl
from ndlc.cli import main


def test_dump_prints_the_requested_stage(capsys):
    assert main(["dump", "traced", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("graph @train_step(\n    %x: f32[4,784],\n    %y: i64[4],\n"
                          "    %optimizer.lr: f32[],\n    %optimizer.beta1: f32[],\n")
    assert "    %model.modules.0.weight: f32[784,32] state,\n" in out
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


def _png_size(path):
    """(width, height) of a PNG file, which must start with the PNG signature and an IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _records(path):
    """The JSON lines of --log-json without their timings."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "steps_per_second")}
            for line in path.read_text().splitlines()]


def test_two_epochs_equal_one_then_a_resumed_one_bit_for_bit(tmp_path, capsys):
    _fashion_like(tmp_path, 96)
    common = ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(common + ["--epochs", "2", "--checkpoint", str(straight), "--log-json", str(tmp_path / "a.jsonl")]) == 0
    first = capsys.readouterr().out.splitlines()
    assert main(common + ["--epochs", "1", "--checkpoint", str(resumed), "--log-json", str(tmp_path / "b.jsonl")]) == 0
    with open(tmp_path / "b.jsonl", "a") as log:  # a step the interrupted run logged after its checkpoint
        log.write('{"kind": "step", "epoch": 2, "step": 4, "loss": 9.0}\n')
    assert main(common + ["--epochs", "2", "--checkpoint", str(resumed), "--resume",
                          "--log-json", str(tmp_path / "b.jsonl"), "--plot", str(tmp_path / "curves.png")]) == 0
    second = capsys.readouterr().out.splitlines()
    assert second[1] == f"resumed from {resumed}/last.npz after epoch 1"
    assert [line.split("  ")[:2] for line in second[::2]] == [line.split("  ")[:2] for line in first]
    a, b = ndl.load(straight / "last.npz"), ndl.load(resumed / "last.npz")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        np.testing.assert_array_equal(b["model"][key].numpy(), value.numpy(), err_msg=key)
    for i, slots in a["optimizer"]["state"].items():
        for name, value in slots.items():
            np.testing.assert_array_equal(b["optimizer"]["state"][i][name].numpy(), value.numpy())
    assert float(a["optimizer"]["step"].numpy()) == float(b["optimizer"]["step"].numpy()) == 6
    np.testing.assert_array_equal(a["history"]["step_losses"], b["history"]["step_losses"])
    assert _records(tmp_path / "a.jsonl") == _records(tmp_path / "b.jsonl")  # rewritten from the checkpoint
    assert _png_size(tmp_path / "curves.png") == (1000, 400)


def test_train_plots_and_logs_the_curves(tmp_path, capsys):
    _fashion_like(tmp_path, 96)
    assert main(["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress",
                 "--plot", str(tmp_path / "curves.png"), "--log-json", str(tmp_path / "log.jsonl")]) == 0
    assert _png_size(tmp_path / "curves.png") == (1000, 400)
    records = _records(tmp_path / "log.jsonl")
    assert [r["kind"] for r in records] == ["step"] * 3 + ["epoch"]
    assert [r["step"] for r in records[:3]] == [1, 2, 3]
    assert records[3]["loss"] == pytest.approx(np.mean([r["loss"] for r in records[:3]]))
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"epoch 1: loss {records[3]['loss']:.4f}  test accuracy {records[3]['test_accuracy']:.4f}")


def test_resume_errors_name_the_problem(tmp_path, capsys):
    _fashion_like(tmp_path, 64)
    common = ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress"]
    with pytest.raises(SystemExit):
        main(common + ["--resume"])
    assert "--resume needs --checkpoint DIR" in capsys.readouterr().err
    assert main(common + ["--resume", "--checkpoint", str(tmp_path / "none")]) == 2
    assert f"{tmp_path}/none/last.npz: no such checkpoint file" in capsys.readouterr().err
    assert main(common + ["--checkpoint", str(tmp_path / "c")]) == 0
    assert main(common + ["--resume", "--checkpoint", str(tmp_path / "c"), "--batch-size", "16"]) == 2
    assert "last.npz was written by a run with --batch-size 32, not 16" in capsys.readouterr().err


def test_run_check_passes_on_the_dumped_example_step(tmp_path, capsys):
    """The README's own example: the MLP step's grad stage, dumped with its next call's arguments,
    runs in check mode without a false alarm (its Adam update of BatchNorm-cancelled bias gradients
    is rounding noise made +-lr) and prints the same loss as a plain run."""
    stage, inputs = str(tmp_path / "step.ir"), str(tmp_path / "step.npz")
    assert main(["dump", "grad", "-o", stage, "--inputs", inputs]) == 0
    assert main(["run", stage, "--input", inputs]) == 0
    plain = capsys.readouterr().out
    assert main(["run", stage, "--input", inputs, "--check"]) == 0
    assert capsys.readouterr().out == plain and plain.startswith("out0: f32[] = ")


def _options_help(capsys, command):
    """{option: its help text} from `ndlc COMMAND --help`."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out.split("options:\n", 1)[1]
    entries = re.split(r"\n(?=  -)", text.strip("\n"))
    return {re.match(r"\s*(-[-\w]+(?:, --[-\w]+)?)", entry).group(1): " ".join(entry.split()) for entry in entries}


def test_train_help_gives_every_options_meaning_and_default(capsys):
    options = _options_help(capsys, "train")
    assert {"--model", "--epochs", "--batch-size", "--device", "--lr", "--resume", "-v, --verbose"} <= set(options)
    for option, text in options.items():
        if option != "-h, --help":
            assert re.search(r"\(default: .+\)|; default: .+\)", text), (option, text)
    assert "(default: mlp)" in options["--model"] and "(default: 256)" in options["--batch-size"]
    assert "(default: 1)" in options["--epochs"] and "(default: cpu)" in options["--device"]


@pytest.mark.parametrize("command", ["train", "dump", "run", "bench"])
def test_verbose_says_what_it_logs(command, capsys):
    text = _options_help(capsys, command)["-v, --verbose"]
    assert "each fusion decision" in text and "each recompilation of a step" in text
