"""The `ndlc` command never answers a user's mistake with a traceback: each file, folder, data and
checkpoint error is one line, `ndlc COMMAND: ...`, naming the file and the problem, exit status 2."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc.cli import main
from test_cli import _fashion_like, _write_idx


def refused(capsys, argv, *names):
    """Runs `ndlc argv`, which must exit with status 2 printing one line on stderr that starts
    with `ndlc COMMAND: ` and contains each of `names`; returns that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ndlc {argv[0]}: "), err
    for name in names:
        assert name in err, (name, err)
    return err


@pytest.fixture(scope="module")
def dumped(tmp_path_factory):
    """A dumped traced stage of the example step and its next call's arguments."""
    folder = tmp_path_factory.mktemp("dumped")
    assert main(["dump", "traced", "--batch-size", "4", "-o", str(folder / "step.ir"),
                 "--inputs", str(folder / "step.npz")]) == 0
    return folder


def test_run_refuses_a_graph_file_it_cannot_read(tmp_path, capsys):
    refused(capsys, ["run", str(tmp_path / "missing.ir")], "missing.ir", "No such file")
    refused(capsys, ["run", str(tmp_path)], str(tmp_path), "Is a directory")
    (tmp_path / "binary.ir").write_bytes(b"graph\x00\xff\xfe\x80")
    refused(capsys, ["run", str(tmp_path / "binary.ir")], "binary.ir", "not a text file")


def test_run_refuses_inputs_it_cannot_read(dumped, tmp_path, capsys):
    step = str(dumped / "step.ir")
    data = (dumped / "step.npz").read_bytes()
    for cut in (300, len(data) * 2 // 3):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        refused(capsys, ["run", step, "--input", str(tmp_path / "cut.npz")], "cut.npz", "truncated or corrupt")
    refused(capsys, ["run", step, "--input", str(tmp_path / "none.npz")], "none.npz", "No such file")
    refused(capsys, ["run", step, "--input", f"x={tmp_path}"], str(tmp_path), "Is a directory")
    refused(capsys, ["run", step, "--input", f"x={dumped}/step.npz"], "a .npz holds arrays already named")


def test_run_and_dump_refuse_an_output_in_a_missing_folder_before_any_work(dumped, tmp_path, capsys):
    missing = tmp_path / "no" / "out.npz"
    refused(capsys, ["run", str(dumped / "step.ir"), "--input", str(dumped / "step.npz"), "--output",
                     str(missing)], "--output", str(missing), "no such folder")
    refused(capsys, ["run", str(dumped / "step.ir"), "--input", str(dumped / "step.npz"), "--output",
                     str(tmp_path)], str(tmp_path), "is a folder")
    refused(capsys, ["dump", "traced", "-o", str(tmp_path / "no" / "step.ir")], "no/step.ir", "no such folder")
    refused(capsys, ["dump", "traced", "--inputs", str(missing)], "--inputs", str(missing), "no such folder")
    assert not (tmp_path / "no").exists()


def test_train_refuses_outputs_in_a_missing_folder_before_training(tmp_path, capsys):
    _fashion_like(tmp_path, 64)
    common = ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress"]
    refused(capsys, common + ["--log-json", str(tmp_path / "no" / "log.jsonl")], "--log-json", "no/log.jsonl",
            "no such folder")
    refused(capsys, common + ["--plot", str(tmp_path / "no" / "curves.png")], "--plot", "no such folder")
    (tmp_path / "file").write_text("")
    refused(capsys, common + ["--checkpoint", str(tmp_path / "file")], "--checkpoint", "is a file, not a folder")
    assert capsys.readouterr().out == ""  # no epoch ran


def test_train_resume_of_a_checkpoint_that_ndlc_train_did_not_write(tmp_path, capsys):
    _fashion_like(tmp_path, 64)
    (tmp_path / "c").mkdir()
    ndl.save(ndl.nn.Linear(2, 3).state_dict(), tmp_path / "c" / "last.npz")
    refused(capsys, ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress", "--resume",
                     "--checkpoint", str(tmp_path / "c")], "c/last.npz", "was not written by ndlc train",
            "model_name")


def test_train_resume_of_a_finished_run_says_there_is_nothing_to_train(tmp_path, capsys):
    _fashion_like(tmp_path, 64)
    common = ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress",
              "--checkpoint", str(tmp_path / "c")]
    assert main(common + ["--epochs", "2"]) == 0
    capsys.readouterr()
    assert main(common + ["--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert out == (f"resumed from {tmp_path}/c/last.npz after epoch 2\nnothing to train: {tmp_path}/c/last.npz "
                   "already holds epoch 2, and --epochs is 2 (raise --epochs to train further)\n")
    assert ndl.load(tmp_path / "c" / "last.npz")["epoch"] == 2


def _images_and_labels(folder, images, labels):
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


@pytest.mark.parametrize("images, labels, problem", [
    (np.zeros((4, 28, 28)), np.array([0, 3, 12, 11]), "train-labels-idx1-ubyte.gz: label 12 (of sample 2) "
     "is not one of Fashion-MNIST's 10 classes 0..9, nor are 1 more"),
    (np.zeros((0, 28, 28)), np.zeros(0), "train-images-idx3-ubyte.gz holds 0 images"),
    (np.zeros((4, 32, 32)), np.zeros(4), "train-images-idx3-ubyte.gz holds 32x32 images; Fashion-MNIST's are 28x28"),
])
def test_train_names_the_data_file_and_what_is_wrong_with_it(images, labels, problem, tmp_path, capsys):
    _images_and_labels(tmp_path, images, labels)
    refused(capsys, ["train", "--data", str(tmp_path), "--no-progress"], problem)
