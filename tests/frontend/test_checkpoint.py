"""ndl.save / ndl.load: round trips of every nn module and both optimizers, atomic writes, and the
errors of a truncated, corrupt or foreign file."""
import inspect
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import ndlc as ndl
from ndlc import nn
from ndlc.frontend.checkpoint import FORMAT_VERSION, HEADER


def _rand(*shape):
    return ndl.Tensor(np.random.randn(*shape).astype(np.float32))


def _tokens(*shape):
    return ndl.Tensor(np.random.randint(0, 10, shape).astype(np.float32))


# module name -> (build it, its inputs); every Module of ndl.nn is here (a test checks)
MODULES = {
    "Linear": (lambda: nn.Linear(3, 4), lambda: [_rand(2, 3)]),
    "Flatten": (lambda: nn.Flatten(), lambda: [_rand(2, 3, 2)]),
    "ReLU": (lambda: nn.ReLU(), lambda: [_rand(2, 3)]),
    "Sigmoid": (lambda: nn.Sigmoid(), lambda: [_rand(2, 3)]),
    "Tanh": (lambda: nn.Tanh(), lambda: [_rand(2, 3)]),
    "Identity": (lambda: nn.Identity(), lambda: [_rand(2, 3)]),
    "SoftmaxLoss": (lambda: nn.SoftmaxLoss(), lambda: [_rand(4, 3), ndl.Tensor(np.array([0, 2, 1, 2]))]),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(3), lambda: [_rand(4, 3)]),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3), lambda: [_rand(2, 3, 4, 4)]),
    "LayerNorm1d": (lambda: nn.LayerNorm1d(3), lambda: [_rand(4, 3)]),
    "Dropout": (lambda: nn.Dropout(0.5), lambda: [_rand(4, 3)]),
    "Conv": (lambda: nn.Conv(2, 3, 3), lambda: [_rand(1, 2, 5, 5)]),
    "AvgPool2d": (lambda: nn.AvgPool2d(2), lambda: [_rand(1, 2, 4, 4)]),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), lambda: [_rand(1, 2, 4, 4)]),
    "Sequential": (lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU()), lambda: [_rand(4, 3)]),
    "Residual": (lambda: nn.Residual(nn.Linear(3, 3)), lambda: [_rand(2, 3)]),
    "RNNCell": (lambda: nn.RNNCell(3, 4), lambda: [_rand(2, 3)]),
    "LSTMCell": (lambda: nn.LSTMCell(3, 4), lambda: [_rand(2, 3)]),
    "RNN": (lambda: nn.RNN(3, 4, num_layers=2), lambda: [_rand(5, 2, 3)]),
    "LSTM": (lambda: nn.LSTM(3, 4, num_layers=2), lambda: [_rand(5, 2, 3)]),
    "Embedding": (lambda: nn.Embedding(10, 3), lambda: [_tokens(5, 2)]),
    "MultiHeadAttention": (lambda: nn.MultiHeadAttention(causal=True), lambda: [_rand(1, 2, 3, 4)] * 3),
    "AttentionLayer": (lambda: nn.AttentionLayer(4, 2, 3), lambda: [_rand(1, 3, 4)]),
    "TransformerLayer": (lambda: nn.TransformerLayer(4, 2, 3, 8), lambda: [_rand(1, 3, 4)]),
    "Transformer": (lambda: nn.Transformer(4, 8, 1, num_head=2, dim_head=3), lambda: [_rand(3, 1, 4)]),
}


def _arrays(result):
    """The arrays of a module's result: a Tensor, or tuples of them."""
    if isinstance(result, ndl.Tensor):
        return [result.numpy()]
    return [a for item in result for a in _arrays(item)]


def test_every_module_of_nn_has_a_round_trip_case():
    modules = {name for name, obj in vars(nn).items()
               if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj is not nn.Module}
    assert modules == set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_state_dict_round_trips_through_a_file(name, tmp_path):
    build, inputs = MODULES[name]
    np.random.seed(1)
    source = build()
    args = inputs()
    source.train()
    source(*args)  # moves running statistics where the module has any
    ndl.save(source.state_dict(), tmp_path / "model.npz")
    np.random.seed(2)
    target = build()
    target.load_state_dict(ndl.load(tmp_path / "model.npz"))
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key].numpy(), value.numpy())
        assert target.state_dict()[key].dtype == value.dtype
    source.eval(), target.eval()
    for got, want in zip(_arrays(target(*args)), _arrays(source(*args))):
        np.testing.assert_array_equal(got, want)


def _train(model, optimizer, batches):
    for x, y in batches:
        optimizer.reset_grad()
        loss = nn.SoftmaxLoss()(model(ndl.Tensor(x)), ndl.Tensor(y))
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("make", [
    lambda params: ndl.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda params: ndl.optim.Adam(params, lr=0.01, weight_decay=0.01),
], ids=["SGD", "Adam"])
def test_optimizer_state_round_trips_and_training_continues_identically(make, tmp_path):
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((8, 3)).astype(np.float32), rng.integers(0, 2, 8)) for _ in range(4)]
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    optimizer = make(model.parameters())
    _train(model, optimizer, batches[:2])
    ndl.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "ckpt")
    _train(model, optimizer, batches[2:])

    np.random.seed(1)
    resumed = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    resumed_optimizer = make(resumed.parameters())
    resumed_optimizer.lr = 123.0  # the file's hyperparameters replace it
    checkpoint = ndl.load(tmp_path / "ckpt")
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    assert resumed_optimizer.lr == optimizer.lr
    _train(resumed, resumed_optimizer, batches[2:])
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key].numpy(), value.numpy(), err_msg=key)
    for i, slots in optimizer.state_dict()["state"].items():
        for slot, value in slots.items():
            np.testing.assert_array_equal(resumed_optimizer.state_dict()["state"][i][slot].numpy(), value.numpy())


def test_adam_state_dict_has_pytorchs_layout_and_the_step_count():
    model = nn.Linear(2, 3)
    optimizer = ndl.optim.Adam(model.parameters(), lr=0.5)
    _train(model, optimizer, [(np.ones((4, 2), np.float32), np.array([0, 1, 2, 0]))] * 3)
    state = optimizer.state_dict()
    assert sorted(state) == ["param_groups", "state", "step"]
    assert float(state["step"].numpy()) == 3.0
    assert state["param_groups"] == [{"lr": 0.5, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                      "weight_decay": 0.0, "params": [0, 1]}]
    assert sorted(state["state"][0]) == ["exp_avg", "exp_avg_sq"]
    np.testing.assert_array_equal(state["state"][1]["exp_avg"].numpy(), optimizer.m[1].numpy())


def test_a_compiled_step_keeps_running_after_load_state_dict(tmp_path):
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    optimizer = ndl.optim.Adam(model.parameters(), lr=0.01)
    x, y = np.random.randn(8, 3).astype(np.float32), np.random.randint(0, 2, 8)

    def train_step(x, y):
        optimizer.reset_grad()
        loss = nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    step = ndl.compile(train_step)
    step(x, y)
    ndl.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "c.npz")
    after_one = float(step(x, y).numpy())
    step(x, y)
    checkpoint = ndl.load(tmp_path / "c.npz")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    assert float(step(x, y).numpy()) == after_one
    assert len(step.specialisations) == 1


def test_nested_values_keep_their_kinds(tmp_path):
    value = {"epoch": 3, "name": "mlp", "none": None, "nan": float("nan"), "flag": True,
             3: [np.arange(4, dtype=np.int32), (np.float32(1.5), ndl.Tensor(np.ones(2), dtype="float64"))],
             "rng": np.random.get_state()}
    ndl.save(value, tmp_path / "v.npz")
    loaded = ndl.load(tmp_path / "v.npz")
    assert loaded["epoch"] == 3 and loaded["name"] == "mlp" and loaded["none"] is None and loaded["flag"] is True
    assert np.isnan(loaded["nan"])
    array, (scalar, tensor) = loaded[3]
    assert array.dtype == np.int32 and array.tolist() == [0, 1, 2, 3]
    assert scalar == np.float32(1.5) and scalar.dtype == np.float32
    assert isinstance(tensor, ndl.Tensor) and tensor.dtype == "float64" and tensor.requires_grad
    np.random.set_state(loaded["rng"])  # numpy's own state tuple comes back usable


def test_saving_what_a_checkpoint_cannot_hold_names_it(tmp_path):
    with pytest.raises(ndl.CheckpointError, match=r"cannot save obj\['a'\]\[1\] to .*: a set"):
        ndl.save({"a": [1, {2}]}, tmp_path / "x.npz")
    with pytest.raises(ndl.CheckpointError, match=r"array of Python objects"):
        ndl.save(np.array([None, 1], dtype=object), tmp_path / "x.npz")
    with pytest.raises(ndl.CheckpointError, match=r"dict key \(1, 2\) is a tuple"):
        ndl.save({(1, 2): 0}, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


def test_a_self_referential_object_is_named_not_a_recursion_error(tmp_path):
    cyclic = {"a": [1, 2]}
    cyclic["a"].append(cyclic)
    with pytest.raises(ndl.CheckpointError, match=r"cannot save obj\['a'\]\[2\] to .*: it is obj itself"):
        ndl.save(cyclic, tmp_path / "x.npz")
    shared = [1.0]
    ndl.save({"a": shared, "b": shared}, tmp_path / "y.npz")  # shared, not cyclic: saved twice
    assert ndl.load(tmp_path / "y.npz") == {"a": [1.0], "b": [1.0]}


@pytest.mark.parametrize("array, cause", [
    (np.ones(3, np.complex64), r"is a tensor of dtype complex64, which an ndlc Tensor cannot hold"),
    (np.ones(3, np.float16), r"is a tensor of dtype float16, which an ndlc Tensor cannot hold"),
    (np.array([1, None], object), r"cannot be read back \(Object arrays cannot be loaded"),
])
def test_an_entry_that_cannot_come_back_is_named_with_its_key_and_cause(array, cause, tmp_path):
    ndl.save({"model": {"w": ndl.Tensor(np.ones(3, np.float32))}}, tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["a0"] = array  # the tensor's data replaced by an array ndl.save would never write
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(ndl.CheckpointError, match=re.escape(f"{tmp_path}/c.npz['model']['w'] ") + cause):
        ndl.load(tmp_path / "c.npz")


def test_a_mangled_npy_header_is_named_with_its_key(tmp_path):
    """numpy's header parser lets a SyntaxError, then its tokenizer's TokenError, out of a header
    whose dict no longer parses (found by tests/test_files_fuzz.py): the entry is named instead."""
    ndl.save({"model": {"w": ndl.Tensor(np.ones(3, np.float32))}}, tmp_path / "c.npz")
    with zipfile.ZipFile(tmp_path / "c.npz") as z:
        members = {name: z.read(name) for name in z.namelist()}
    members["a0.npy"] = members["a0.npy"].replace(b"'fortran_order': ", b"'fortran_order'{ ", 1)
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(ndl.CheckpointError, match=re.escape(f"{tmp_path}/c.npz['model']['w'] cannot be read back")):
        ndl.load(tmp_path / "c.npz")


def test_a_parameter_set_to_none_is_named(tmp_path):
    state = dict(nn.Linear(2, 3).state_dict(), bias=None)
    ndl.save(state, tmp_path / "c.npz")
    with pytest.raises(ndl.StateDictError, match=re.escape("Linear.load_state_dict: 'bias' is None in the "
                       f"state dict, the model's is a tensor of shape (1, 3) (in {tmp_path}/c.npz)")):
        nn.Linear(2, 3).load_state_dict(ndl.load(tmp_path / "c.npz"))
    with pytest.raises(ndl.StateDictError, match=r"'bias' is a str in the state dict, not a tensor of float32"):
        nn.Linear(2, 3).load_state_dict(dict(state, bias="zeros"))


CHILD = """
import os, sys
import numpy as np
import ndlc as ndl
os.replace = lambda *args: os._exit(17)  # killed after the new file is written, before the rename
ndl.save({"w": ndl.Tensor(np.full(100000, 2.0))}, sys.argv[1])
"""


def test_a_process_killed_mid_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "model.npz"
    ndl.save({"w": ndl.Tensor(np.full(3, 1.0))}, path)
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True)
    assert child.returncode == 17, child.stderr
    np.testing.assert_array_equal(ndl.load(path)["w"].numpy(), np.full(3, 1.0))
    (left,) = [name for name in os.listdir(tmp_path) if name != "model.npz"]  # the dead save's
    assert left.startswith(".model.npz.") and left.endswith(".tmp")


def test_save_overwrites_atomically_and_keeps_the_files_permissions(tmp_path):
    path = tmp_path / "model.npz"
    ndl.save({"w": 1}, path)
    os.chmod(path, 0o640)
    ndl.save({"w": 2}, path)
    assert ndl.load(path)["w"] == 2 and os.stat(path).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["model.npz"]


def _checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    ndl.save({"weight": ndl.Tensor(np.random.randn(64, 64))}, path)
    return path


def test_a_truncated_file_is_named(tmp_path):
    path = _checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ndl.CheckpointError, match=f"{path} is truncated or corrupt"):
        ndl.load(path)


def test_a_corrupt_file_is_named(tmp_path):
    path = _checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3:len(data) // 3 + 64] = bytes(64)  # inside the weight's data
    path.write_bytes(bytes(data))
    with pytest.raises(ndl.CheckpointError, match=re.escape(f"{path}['weight'] is truncated or corrupt") + ".*CRC"):
        ndl.load(path)


def test_another_format_version_is_refused(tmp_path):
    path = tmp_path / "future.npz"
    header = {"format": FORMAT_VERSION + 1, "ndlc": "9.0", "structure": 1}
    np.savez(path, **{HEADER: np.array(json.dumps(header))})
    with pytest.raises(ndl.CheckpointError, match=rf"{path} is checkpoint format version 2 \(written by "
                       rf"ndlc 9.0\); ndlc {ndl.__version__} reads version 1"):
        ndl.load(path)


@pytest.mark.parametrize("write, message", [
    (lambda p: np.savez(p, w=np.ones(2)), "is not an ndlc checkpoint \\(no __ndlc__ header"),
    (lambda p: np.save(open(p, "wb"), np.ones(2)), "is not an ndlc checkpoint \\(a single .npy array"),
    (lambda p: open(p, "w").write("hello"), "is truncated or corrupt"),
    (lambda p: np.savez(p, **{HEADER: np.array("{not json")}), "has a corrupt __ndlc__ header"),
    (lambda p: np.savez(p, **{HEADER: np.array(json.dumps({"format": 1, "structure": {"tensor": "a9"}}))}),
     "its header describes .* as {'tensor': 'a9'}, which names no array"),
    (lambda p: None, "no such checkpoint file"),
])
def test_files_that_are_not_checkpoints_are_named(write, message, tmp_path):
    path = tmp_path / "thing.npz"  # np.savez adds .npz to a name without it
    write(str(path))
    with pytest.raises(ndl.CheckpointError, match=f"{path}.*{message}|{message}"):
        ndl.load(path)


def test_state_dict_mismatches_name_the_key_and_the_file(tmp_path):
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    ndl.save({"model": model.state_dict()}, tmp_path / "c.npz")
    small = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2))
    with pytest.raises(ndl.StateDictError, match=r"'modules.1.weight' has shape \(3, 1\) in the state "
                       rf"dict, the model's is \(3, 2\) \(in {tmp_path}/c.npz\['model'\]\)"):
        small.load_state_dict(ndl.load(tmp_path / "c.npz")["model"])
    with pytest.raises(ndl.StateDictError, match=r"missing keys \['modules.2.bias', 'modules.2.weight'\]"):
        nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1), nn.Linear(1, 1)).load_state_dict(ndl.load(tmp_path / "c.npz")["model"])
    optimizer = ndl.optim.Adam(model.parameters())
    ndl.save(optimizer.state_dict(), tmp_path / "o.npz")
    saved = ndl.load(tmp_path / "o.npz")
    with pytest.raises(ndl.StateDictError, match=r"parameter groups of \[4\] parameters, this optimizer one of 2"):
        ndl.optim.Adam(nn.Linear(2, 3).parameters()).load_state_dict(saved)
    with pytest.raises(ndl.StateDictError, match=r"SGD.load_state_dict: missing param_groups\[0\]\['momentum'\], "
                       r".*state\[0\]\['momentum_buffer'\]"):
        ndl.optim.SGD(model.parameters()).load_state_dict(saved)
    del saved["step"]
    with pytest.raises(ndl.StateDictError, match=rf"missing keys \['step'\] \(in {tmp_path}/o.npz\)"):
        optimizer.load_state_dict(saved)


def test_the_file_is_an_npz_of_plain_arrays(tmp_path):
    path = _checkpoint(tmp_path)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == [f"{HEADER}.npy", "a0.npy"]
    with np.load(path, allow_pickle=False) as npz:  # readable without ndlc, and without pickle
        assert npz["a0"].shape == (64, 64) and json.loads(str(npz[HEADER]))["format"] == FORMAT_VERSION


def test_eager_training_resumed_from_a_checkpoint_equals_training_straight_through(tmp_path):
    from ndlc.examples.train_mlp import build_mlp, train_epoch
    rng = np.random.default_rng(0)
    data = ndl.data.NDArrayDataset(rng.random((40, 6), dtype=np.float32), rng.integers(0, 3, 40))

    def run(epochs, checkpoint=None, save=None):
        np.random.seed(0)
        model = build_mlp(6, (8,), 3)
        optimizer = ndl.optim.Adam(model.parameters(), lr=0.01)
        loader = ndl.data.DataLoader(data, 16, shuffle=True)
        if checkpoint:
            state = ndl.load(checkpoint)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            np.random.set_state(state["rng"])
        losses = [train_epoch(model, loader, optimizer) for _ in range(epochs)]
        if save:
            ndl.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "rng": np.random.get_state()}, save)
        return losses, model.state_dict()

    straight, final = run(2)
    first, _ = run(1, save=tmp_path / "epoch1.npz")
    second, resumed = run(1, checkpoint=tmp_path / "epoch1.npz")
    assert first + second == straight
    for key, value in final.items():
        np.testing.assert_array_equal(resumed[key].numpy(), value.numpy(), err_msg=key)
