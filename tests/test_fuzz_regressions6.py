"""What round six's red team found running needle's public homework suites against ndlc, needle
programs compiled with inputs users get wrong, and the command line with bad paths: each kept as
the smallest example that failed."""
import os

import pytest

from ndlc.cli import main
from test_cli import _fashion_like
from test_cli_errors import refused


def test_train_refuses_a_checkpoint_folder_it_cannot_create_before_training(tmp_path, capsys):
    """`--checkpoint FILE/sub` (a folder under a file) was found only when the first epoch's
    checkpoint was saved, after that epoch's training, and the message did not name
    --checkpoint: the folder is now created and written to before the data loads."""
    _fashion_like(tmp_path, 64)
    (tmp_path / "file").write_text("")
    common = ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress"]
    refused(capsys, common + ["--checkpoint", str(tmp_path / "file" / "sub")], "--checkpoint", "file/sub",
            "cannot create the folder")
    assert capsys.readouterr().out == ""  # no epoch ran
    assert main(common + ["--checkpoint", str(tmp_path / "new" / "deeper")]) == 0
    assert (tmp_path / "new" / "deeper" / "last.npz").is_file()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no file can be created")
def test_outputs_in_a_folder_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys):
    """A folder that exists but takes no new file (/proc; a read-only mount) passed the up-front
    checks of --plot, --log-json and --checkpoint, so an epoch trained before the write failed."""
    _fashion_like(tmp_path, 64)
    common = ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress"]
    for option in ("--plot", "--log-json"):
        refused(capsys, common + [option, "/proc/curves.png"], option, "/proc/curves.png", "cannot write in /proc")
    refused(capsys, common + ["--checkpoint", "/proc/ndlc-checkpoints"], "--checkpoint", "cannot create the folder")
    refused(capsys, ["dump", "traced", "-o", "/proc/step.ir"], "--output", "cannot write in /proc")
    assert capsys.readouterr().out == ""


def test_train_refuses_a_plot_format_matplotlib_cannot_write_before_training(tmp_path, capsys):
    """`--plot curves.txt` trained an epoch, then matplotlib's ValueError ended the run with a
    traceback; the extension is now checked against matplotlib's formats first."""
    pytest.importorskip("matplotlib")
    _fashion_like(tmp_path, 64)
    common = ["train", "--data", str(tmp_path), "--batch-size", "32", "--no-progress"]
    refused(capsys, common + ["--plot", str(tmp_path / "curves.txt")], "--plot", "cannot write .txt", "png")
    assert capsys.readouterr().out == ""
