"""The `ndlc` command's checks of the paths it is given, made before any work: a mistake in
them is a UserError (`ndlc COMMAND: message`, exit status 2) naming the option and the path."""
import os
import tempfile


class UserError(Exception):
    """A mistake in the command line or in the files it names: `ndlc COMMAND: message`, exit status 2."""


def output_file(path, option, create=False):
    """Refuse, before any work, to write `path` (given as `option`) into a folder that does not
    exist (`create`: that cannot be created) or that cannot be written, or over a folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if create:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            blocker = folder
            while not os.path.exists(blocker) and os.path.dirname(blocker) != blocker:
                blocker = os.path.dirname(blocker)
            why = f"{blocker} is a file, not a folder" if os.path.isfile(blocker) else e.strerror
            raise UserError(f"{option} {path}: cannot create the folder {folder}: {why}") from None
    if not os.path.isdir(folder):
        raise UserError(f"{option} {path}: no such folder {folder}")
    if os.path.isdir(path):
        raise UserError(f"{option} {path}: is a folder, not a file")
    writable_folder(folder, f"{option} {path}")


def writable_folder(folder, what):
    """Refuse `folder` (for `what`) unless a file can be created in it: found now, not after an
    epoch of training (permissions alone do not tell: root, read-only mounts, /proc)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(f"{what}: cannot write in {folder}: {e.strerror}") from None


def plot_file(path):
    """Refuse, before any work, a --plot file whose extension matplotlib cannot write."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    kinds = FigureCanvasAgg.get_supported_filetypes()
    extension = os.path.splitext(path)[1][1:].lower()
    if extension and extension not in kinds:
        raise UserError(f"--plot {path}: matplotlib cannot write .{extension} files; use one of "
                        f"{', '.join(sorted(kinds))} (.png by default)")


def checkpoint_folder(folder):
    """Create the --checkpoint folder now and check it can be written, so that a bad one is
    refused before training rather than when the first epoch's checkpoint is saved."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--checkpoint {folder}: is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"--checkpoint {folder}: cannot create the folder: {e.strerror}") from None
    writable_folder(folder, f"--checkpoint {folder}")
