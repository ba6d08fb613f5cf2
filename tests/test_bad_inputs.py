"""The bad-input catalogue: what a new user gets wrong, each answered by an error of a stated class
whose message names the problem (no segfault, no raw traceback from ndlc's own code). Tables of
cases by layer: tensors and ops, compiled functions and their guards, IR text and the interpreter,
environment variables, data files, the command line, state dicts and checkpoints; then the faults
ndlc recovers from with a warning (corrupt cache entry, read-only cache directory, unknown dump
stage or logger)."""
import gzip
import logging
import os
import re
import struct

import numpy as np
import pytest

import ndlc as ndl
from ndlc.cli import main
from ndlc.env import SettingError
from ndlc.examples.train_mlp import training_step
from ndlc.ir import IRParseError, VerifyError, interpret, parse
from ndlc.runtime.libraries import ThreadsError

nn = ndl.nn
GRAPH = "graph @g(%x: f32[2]) {\n  %0 = add(%x, %x) : f32[2]\n  return %0\n}"


def ones(*shape, dtype=np.float32):
    return np.ones(shape, dtype)


def compiled_linear_step():
    """A compiled SGD step of a 3 -> 4 Linear layer, run once; (step, optimizer)."""
    np.random.seed(0)
    model = nn.Linear(3, 4)
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)
    step = ndl.compile(training_step(model, opt))
    step(ones(2, 3), np.zeros(2, np.int64))
    return step, opt


def stale_lr():
    step, opt = compiled_linear_step()
    opt.lr = "fast"
    step(ones(2, 3), np.zeros(2, np.int64))


def write_idx(path, array, magic=None):
    header = magic if magic is not None else struct.pack(">HBB", 0, 8, array.ndim)
    with gzip.open(path, "wb") as f:
        f.write(header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes())
    return str(path)


def fashion_files(folder, images=None):
    """The four Fashion-MNIST files in `folder`; `images`: what to write as the image files."""
    labels = np.zeros(4, np.uint8)
    for prefix in ("train", "t10k"):
        if images is None:
            write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
        else:
            (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def unverified_graph():
    """A graph whose node reads its own result (as no verified graph can)."""
    graph = parse(GRAPH)
    graph.nodes[0].operands = (graph.nodes[0].result, graph.inputs[0])
    return graph


def write_bytes(path, data):
    path.write_bytes(data)
    return str(path)


# name -> (what to run, given tmp_path and monkeypatch; the error class; a regex its message matches)
CASES = {
    # tensors and ops, eager
    "add of shapes that do not broadcast": (
        lambda tmp, mp: ndl.Tensor(ones(3)) + ndl.Tensor(ones(4)),
        ndl.ShapeError, r"add\(f32\[3\], f32\[4\]\): shapes \(3,\) and \(4,\) do not broadcast \(at .*test_bad_inputs"),
    "matmul of mismatched inner dimensions": (
        lambda tmp, mp: ndl.Tensor(ones(2, 3)) @ ndl.Tensor(ones(4, 2)),
        ndl.ShapeError, r"matmul.*inner dimensions 3 and 4 differ"),
    "reshape to another element count": (
        lambda tmp, mp: ndl.Tensor(ones(6)).reshape((4,)),
        ndl.ShapeError, r"cannot reshape 6 elements into shape \(4,\)"),
    "tensor of complex numbers": (
        lambda tmp, mp: ndl.Tensor(np.ones(3, np.complex64)),
        ndl.ShapeError, r"unsupported dtype complex64; supported: .*float32"),
    "Linear given the wrong feature count": (
        lambda tmp, mp: nn.Linear(3, 2)(ndl.Tensor(ones(2, 4))),
        ValueError, r"Linear\(3, 2\): input has 4 features, expected 3"),
    "SoftmaxLoss of 1-d logits": (
        lambda tmp, mp: nn.SoftmaxLoss()(ndl.Tensor(ones(4)), ndl.Tensor(np.zeros(4))),
        ValueError, r"logits must be \(batch, classes\)"),
    "SoftmaxLoss with labels of another length": (
        lambda tmp, mp: nn.SoftmaxLoss()(ndl.Tensor(ones(4, 3)), ndl.Tensor(np.zeros(5))),
        ValueError, r"labels must have shape \(4,\)"),
    "SoftmaxLoss with a label past the last class": (
        lambda tmp, mp: nn.SoftmaxLoss()(ndl.Tensor(ones(3, 4)), ndl.Tensor(np.array([0, 4, 1]))),
        ValueError, r"label 4 is outside \[0, 4\)"),
    "SoftmaxLoss with a negative label": (
        lambda tmp, mp: nn.SoftmaxLoss()(ndl.Tensor(ones(3, 4)), ndl.Tensor(np.array([0, -1, 1]))),
        ValueError, r"label -1 is outside \[0, 4\)"),
    # compiled functions
    "compiled input of an unsupported dtype": (
        lambda tmp, mp: ndl.compile(lambda a: a + 1)(np.ones(2, np.complex64)),
        ndl.ShapeError, r"lambda: input 0: unsupported dtype complex64"),
    "compiled input of a new rank": (
        lambda tmp, mp: [(f := ndl.compile(lambda a: a + 1))(ones(2)), f(ones(2, 2))],
        ndl.ShapeError, r"input 0 has type f32\[2,2\], but it was compiled for rank-1 f32"),
    "compiled function given another number of inputs": (
        lambda tmp, mp: [(f := ndl.compile(lambda *a: a[0] + 1))(ones(2)), f(ones(2), ones(2))],
        ndl.ShapeError, r"compiled for 1 inputs, got 2"),
    "compiled step branching on a tensor's value": (
        lambda tmp, mp: ndl.compile(lambda a: a if float(a.sum()) > 0 else -a)(ones(2)),
        ndl.TraceError, r"cannot read the value of a symbolic f32\[\] tensor while tracing"),
    "compiled function returning a Python number": (
        lambda tmp, mp: ndl.compile(lambda a: 3)(ones(2)),
        ndl.TraceError, r"returned int as output 0; only Tensors"),
    "compiled step given a label past the last class": (
        lambda tmp, mp: compiled_linear_step()[0](ones(2, 3), np.array([0, 4])),
        ValueError, r"train_step: input 1 \(y\) holds 4, outside \[0, 4\) for its one_hot over 4 classes"),
    "compiled embedding given an index past its table": (
        lambda tmp, mp: [(f := ndl.compile(nn.Embedding(5, 2)))(np.array([[0, 4]])), f(np.array([[0, 5]]))],
        IndexError, r"input 0 \(arg0\) holds 5, outside \[0, 5\) for its gather from 5 rows"),
    "compile for a device that does not exist": (
        lambda tmp, mp: ndl.compile(lambda a: a, device="tpu"),
        ndl.NdlcError, r"device 'tpu' is not available to ndlc.compile"),
    "compile of something not callable": (
        lambda tmp, mp: ndl.compile(5),
        ndl.NdlcError, r"takes a Module or a function, not int"),
    "compile keeping no specialisation": (
        lambda tmp, mp: ndl.compile(lambda a: a, max_specialisations=0),
        ndl.NdlcError, r"max_specialisations must be a positive integer, not 0"),
    "a stage of a function not yet called": (
        lambda tmp, mp: ndl.compile(lambda a: a).ir("fused"),
        ndl.NdlcError, r"has not been compiled yet: call it first"),
    "an optimizer's lr that is no longer a number": (
        lambda tmp, mp: stale_lr(),
        ndl.TraceError, r"optimizer.lr is now 'fast': the compiled step reads it as a number"),
    # IR text and the interpreter
    "parse of None": (
        lambda tmp, mp: parse(None),
        IRParseError, r"parse takes the text form of a graph \(a str\), not NoneType"),
    "IR text with f16": (
        lambda tmp, mp: parse(GRAPH.replace("f32", "f16")),
        IRParseError, r"unsupported dtype 'f16' \(numpy's float128\)"),
    "IR text with an unknown op": (
        lambda tmp, mp: parse(GRAPH.replace("add", "frobnicate")),
        IRParseError, r"line 2, column 8: unknown op 'frobnicate'"),
    "IR text without its return": (
        lambda tmp, mp: parse(GRAPH.split("  return")[0]),
        IRParseError, r"line 3, column 1: expected a %result or 'return', found 'end of input'"),
    "IR text using a value before its definition": (
        lambda tmp, mp: parse(GRAPH.replace("add(%x, %x)", "add(%x, %1)")),
        IRParseError, r"use of undefined value %1"),
    "IR text with a wrong result type": (
        lambda tmp, mp: parse(GRAPH.replace(": f32[2]\n  return", ": f32[3]\n  return")),
        IRParseError, r"result type f32\[3\] but the op's rule gives f32\[2\]"),
    "interpret of an unverified graph": (
        lambda tmp, mp: interpret(unverified_graph(), ones(2)),
        VerifyError, r"@g cannot be interpreted, it is not a valid graph .* operand 0 is used before it is defined"),
    "interpret with too few arguments": (
        lambda tmp, mp: interpret(parse(GRAPH)),
        ndl.ShapeError, r"@g takes 1 inputs, got 0"),
    "interpret with an argument of another shape": (
        lambda tmp, mp: interpret(parse(GRAPH), ones(3)),
        ndl.ShapeError, r"@g input 0 \(x\) has type f32\[3\], expected f32\[2\]"),
    # environment variables
    "NDLC_BLAS=banana": (
        lambda tmp, mp: [mp.setenv("NDLC_BLAS", "banana"), ndl.compile(lambda a: a @ a)(ones(2, 2))],
        SettingError, r"NDLC_BLAS='banana' is neither on \(1, true, yes, on\) nor off"),
    "NDLC_VERIFY=maybe": (
        lambda tmp, mp: [mp.setenv("NDLC_VERIFY", "maybe"), ndl.compile(lambda a: a + 2)(ones(2))],
        SettingError, r"NDLC_VERIFY='maybe'"),
    "NDLC_THREADS=-2": (
        lambda tmp, mp: [mp.setenv("NDLC_THREADS", "-2"), ndl.compile(lambda a: a + 3)(ones(2))],
        ThreadsError, r"NDLC_THREADS must be a positive integer, not '-2'"),
    # data files
    "NDLC_DATA lacking the files": (
        lambda tmp, mp: [mp.setenv("NDLC_DATA", str(tmp)), ndl.data.FashionMNIST()],
        FileNotFoundError, r"Fashion-MNIST not found in /.* \(from NDLC_DATA\): it lacks "
                           r"train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images"),
    "a data folder with one file missing": (
        lambda tmp, mp: [os.remove(fashion_files(tmp) / "t10k-labels-idx1-ubyte.gz"),
                         ndl.data.FashionMNIST(root=str(tmp))],
        FileNotFoundError, r"\(from --data\): it lacks t10k-labels-idx1-ubyte.gz,"),
    "a data folder that does not exist": (
        lambda tmp, mp: ndl.data.FashionMNIST(root=str(tmp / "nowhere")),
        FileNotFoundError, r"nowhere \(from --data\): no such directory"),
    "an idx file with the wrong magic number": (
        lambda tmp, mp: ndl.data.read_idx(write_idx(tmp / "x.gz", np.zeros((2, 3, 3)), magic=b"\x00\x00\x0d\x03"), 3),
        ValueError, r"x.gz: not an idx file of 3-d unsigned bytes \(magic 00000d03"),
    "an idx file shorter than its header promises": (
        lambda tmp, mp: ndl.data.read_idx(write_bytes(tmp / "x.gz", gzip.compress(
            struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 5, 3, 3))), 3),
        ValueError, r"idx header promises shape \(5, 3, 3\) \(45 bytes of data\), the file holds 0"),
    "a gzip file cut short": (
        lambda tmp, mp: ndl.data.read_idx(write_bytes(tmp / "x.gz", gzip.compress(np.arange(4000).tobytes())[:300]), 3),
        ValueError, r"x.gz: not a readable idx file"),
    "a DataLoader of empty batches": (
        lambda tmp, mp: ndl.data.DataLoader(ndl.data.NDArrayDataset(ones(4)), batch_size=0),
        ValueError, r"batch_size must be an integer >= 1, got 0"),
    "CIFAR-10 batches missing": (
        lambda tmp, mp: ndl.data.CIFAR10Dataset(str(tmp), train=False),
        FileNotFoundError, r"CIFAR-10 batches missing in .*: test_batch"),
    # state dicts and checkpoints
    "load_state_dict missing keys": (
        lambda tmp, mp: nn.Linear(3, 2).load_state_dict({}),
        ndl.StateDictError, r"Linear.load_state_dict: missing keys \['bias', 'weight'\]"),
    "load_state_dict of another shape": (
        lambda tmp, mp: nn.Linear(3, 2).load_state_dict({"weight": ndl.Tensor(ones(2, 2)),
                                                         "bias": ndl.Tensor(ones(1, 2))}),
        ndl.StateDictError, r"'weight' has shape \(2, 2\) in the state dict, the model's is \(3, 2\)"),
    "load of a file that is not a checkpoint": (
        lambda tmp, mp: ndl.load(write_bytes(tmp / "c.npz", b"not a zip")),
        ndl.CheckpointError, r"c.npz"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_clear_error(name, tmp_path, monkeypatch):
    run, error, message = CASES[name]
    with pytest.raises(error) as info:
        run(tmp_path, monkeypatch)
    assert re.search(message, str(info.value)), f"{name}: {info.value}"


# `ndlc` command lines -> (exit status, what its one-line error says)
COMMANDS = {
    "train --lr nan": (["train", "--lr", "nan"], 2, r"argument --lr: must be a finite number > 0, not nan"),
    "train --lr -1": (["train", "--lr", "-1"], 2, r"argument --lr: must be a finite number > 0, not -1"),
    "train --epochs -1": (["train", "--epochs", "-1"], 2, r"argument --epochs: must be a positive integer, not -1"),
    "train --batch-size 0": (["train", "--batch-size", "0"], 2, r"argument --batch-size: must be a positive integer"),
    "train --weight-decay inf": (["train", "--weight-decay", "inf"], 2,
                                 r"argument --weight-decay: must be a finite number >= 0, not inf"),
    "train --seed -1": (["train", "--seed", "-1"], 2, r"argument --seed: must be an integer in \[0, 2\*\*32\)"),
    "dump --batch-size 0": (["dump", "--batch-size", "0"], 2, r"argument --batch-size: must be a positive integer"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_bad_option_is_refused_by_argparse(name, capsys):
    argv, status, message = COMMANDS[name]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == status
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("images, message", [
    (b"definitely not gzip, nor idx", r"train-images-idx3-ubyte.gz: not an idx file"),
    (gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 6), r"train-images-idx3-ubyte.gz: truncated idx header"),
], ids=["garbage", "truncated"])
def test_train_on_corrupt_data_is_a_one_line_error(images, message, tmp_path, capsys):
    assert main(["train", "--data", str(fashion_files(tmp_path, images)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and re.search(message, err)


def test_train_with_ndlc_data_lacking_files_names_the_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NDLC_DATA", str(tmp_path))
    assert main(["train", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} (from NDLC_DATA): it lacks train-images-idx3-ubyte.gz" in err


# faults ndlc recovers from, with a warning naming them
def test_a_corrupt_cache_entry_is_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path))
    ndl.compile(lambda a: a * 5.5)(ones(3))
    entry = max(tmp_path.glob("*/*.obj"), key=lambda p: p.stat().st_size)  # the kernel's object code
    entry.write_bytes(entry.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING, logger="ndlc.cache"):
        out = ndl.compile(lambda a: a * 5.5)(ones(3))
    assert out.numpy().tolist() == [5.5] * 3
    assert re.search(r"ignoring corrupt cache entry .*checksum mismatch", caplog.text)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_cache_directory_is_worked_around(tmp_path, monkeypatch, caplog):
    tmp_path.chmod(0o500)
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / "cache"))
    try:
        with caplog.at_level(logging.WARNING, logger="ndlc.cache"):
            out = ndl.compile(lambda a: a * 6.5)(ones(3))
    finally:
        tmp_path.chmod(0o700)
    assert out.numpy().tolist() == [6.5] * 3 and "cannot write cache entry" in caplog.text


def test_a_cache_path_that_is_a_file_is_worked_around(tmp_path, monkeypatch, caplog):
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="ndlc.cache"):
        out = ndl.compile(lambda a: a * 7.5)(ones(3))
    assert out.numpy().tolist() == [7.5] * 3 and "cannot write cache entry" in caplog.text


def test_an_unknown_dump_stage_is_warned_about(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NDLC_DUMP", "fused,llvm-opt")
    monkeypatch.setenv("NDLC_DUMP_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="ndlc.pipeline"):
        ndl.compile(lambda a: a + 8)(ones(3))
    assert "NDLC_DUMP names unknown stage(s) llvm-opt; stages: traced" in caplog.text
    assert [p.name.rsplit(".", 2)[1] for p in tmp_path.iterdir()] == ["fused"]


def test_a_misspelt_variable_is_warned_about(monkeypatch, caplog):
    from ndlc.env import warn_unknown_names
    monkeypatch.setenv("NDLC_DEBGU", "1")
    warn_unknown_names.cache_clear()
    with caplog.at_level(logging.WARNING, logger="ndlc"):
        ndl.compile(lambda a: a)
    warn_unknown_names.cache_clear()
    assert "NDLC_DEBGU is set, but ndlc reads no such variable (did you mean NDLC_DEBUG?)" in caplog.text


def test_debug_mode_on_the_cuda_backend_is_refused():
    from ndlc.errors import UnsupportedError
    from ndlc.jit.pipeline import compile_graph
    with pytest.raises(UnsupportedError, match="bounds checks are compiled into CPU code only"):
        compile_graph(parse(GRAPH), device="cuda", debug=True)


def test_an_unknown_logger_is_warned_about(caplog):
    from ndlc.logconfig import configure
    with caplog.at_level(logging.WARNING, logger="ndlc"):
        configure("fusion,fussion")
    assert "NDLC_LOG names no logger 'fussion'" in caplog.text
    logging.getLogger("ndlc.fusion").setLevel(logging.NOTSET)
    logging.getLogger("ndlc.fusion").propagate = True
    logging.getLogger("ndlc.fusion").handlers.clear()
