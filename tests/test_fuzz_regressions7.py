"""What round seven's red team found at the boundaries a user touches: environment variables and
the cache folder, checkpoints loaded into the wrong model or optimizer, ops and ndl.compile given
arguments of the wrong kind, graph text, and the command line's paths; each kept as the smallest
example that failed."""
import os

import numpy as np
import pytest

import ndlc as ndl
from ndlc.cli import main
from ndlc.errors import AttrError, IRParseError
from test_cli_errors import refused

nn = ndl.nn


def _double(x):
    return x * 2


def test_a_dump_folder_that_cannot_be_written_is_a_setting_error_naming_ndlc_dump_dir(tmp_path, monkeypatch):
    """NDLC_DUMP_DIR under a file (or in /proc) ended the compilation with a bare
    NotADirectoryError/FileNotFoundError from inside the pipeline; it is now a SettingError
    naming the variable, the stage and the path."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("NDLC_DUMP", "traced")
    monkeypatch.setenv("NDLC_DUMP_DIR", str(tmp_path / "file" / "dumps"))
    with pytest.raises(ndl.SettingError, match=r"NDLC_DUMP_DIR=.*file/dumps.*traced dump"):
        ndl.compile(_double)(ndl.Tensor(np.ones(3, np.float32)))
    monkeypatch.setenv("NDLC_DUMP_DIR", str(tmp_path / "dumps"))
    out = ndl.compile(_double)(ndl.Tensor(np.ones(3, np.float32)))
    np.testing.assert_array_equal(out.numpy(), [2, 2, 2])
    assert [p.name.split(".", 2)[2] for p in (tmp_path / "dumps").iterdir()] == ["traced.txt"]


def _mlp():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.parametrize("state", [None, "model.npz", 3])
def test_a_module_state_dict_that_is_not_a_dict_is_a_state_dict_error(state):
    """`load_state_dict(None)` raised "'NoneType' object is not iterable" from its key check."""
    expected = f"Sequential.load_state_dict: the state dict is a {type(state).__name__}"
    with pytest.raises(ndl.StateDictError, match=expected):
        _mlp().load_state_dict(state)


def test_a_complex_tensor_loaded_into_a_real_one_is_refused_not_cut_to_its_real_part(tmp_path):
    """A complex entry was cast to float32 with numpy's ComplexWarning only, its imaginary parts
    silently dropped; it is refused, naming the entry and the file."""
    model = _mlp()
    state = model.state_dict()
    state["modules.0.weight"] = state["modules.0.weight"].numpy() * (1 + 1j)
    ndl.save(state, tmp_path / "complex.npz")
    before = model.state_dict()["modules.0.weight"].numpy()
    with pytest.raises(ndl.StateDictError, match=r"'modules.0.weight' is complex .*complex.npz"):
        model.load_state_dict(ndl.load(tmp_path / "complex.npz"))
    np.testing.assert_array_equal(model.state_dict()["modules.0.weight"].numpy(), before)


@pytest.mark.parametrize("change, message", [
    (lambda s: None, "the state dict is a NoneType"),
    (lambda s: "sgd.npz", "the state dict is a str"),
    (lambda s: {**s, "param_groups": "lr=0.1"}, "param_groups is not a list of dicts"),
    (lambda s: {**s, "param_groups": [None]}, "param_groups is not a list of dicts"),
    (lambda s: {**s, "state": None}, "state is not a dict of dicts"),
    (lambda s: {**s, "state": {0: None}}, "state is not a dict of dicts"),
])
def test_an_optimizer_state_dict_of_the_wrong_form_is_a_state_dict_error(change, message):
    """A state dict whose param_groups or state were not PyTorch's form (text, None, a list of
    None) raised AttributeError/TypeError from `.get` or `in`."""
    sgd = ndl.optim.SGD(_mlp().parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ndl.StateDictError, match=f"SGD.load_state_dict: {message}"):
        sgd.load_state_dict(change(sgd.state_dict()))


def test_loading_a_folder_as_a_checkpoint_says_it_is_a_folder(tmp_path):
    """`ndl.load(folder)` called the folder "truncated or corrupt"."""
    with pytest.raises(ndl.CheckpointError, match="is a folder, not a checkpoint file"):
        ndl.load(tmp_path)


@pytest.mark.parametrize("output, message", [
    ("{tmp}", "is a folder, not a file"),
    ("{tmp}/file/RESULTS.md", "/file is a file, not a folder"),
    ("{tmp}/file/deeper/RESULTS.md", "/file is a file, not a folder"),
])
def test_bench_refuses_a_report_path_it_cannot_write_before_timing(tmp_path, capsys, output, message):
    """`ndlc bench --output` over a folder, or under a file, was found only after every case was
    timed (minutes), with "Is a directory" or "File exists" and no option named."""
    (tmp_path / "file").write_text("")
    output = output.format(tmp=tmp_path)
    refused(capsys, ["bench", "--quick", "--only", "relu", "--no-plot", "--no-progress", "--output", output],
            "--output", message)
    assert capsys.readouterr().out == ""  # nothing was timed


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("call, message", [
    (lambda x: ndl.summation(x, axes=-3), r"summation\(f32\[2,3\]\): axes \(-3,\) out of range for rank 2"),
    (lambda x: ndl.flip(x, (0, -5)), r"flip\(f32\[2,3\]\): axes \(0, -5\) out of range for rank 2"),
    (lambda x: ndl.stack([x, x], -4), r"stack\(f32\[2,3\], f32\[2,3\]\): axis -4 out of range"),
    (lambda x: ndl.summation(x, axes=1.0), r"summation: attribute axes=\(1.0,\) must be an integer"),
    (lambda x: ndl.stack([x, x], "0"), r"stack: attribute axis='0' must be an integer"),
])
def test_an_axis_out_of_range_or_not_an_integer_is_named_as_the_user_wrote_it(compiled, call, message):
    """A negative axis past the rank was counted from the end once and reported as another axis
    (`axes=-3` of a matrix: "axes (-1,) out of range"); a float `axes` raised "'float' object is
    not iterable", and a text stack axis "'<' not supported", naming no op."""
    x = ndl.Tensor(np.ones((2, 3), np.float32))
    with pytest.raises((ndl.ShapeError, AttrError), match=message):
        (ndl.compile(call) if compiled else call)(x)
    np.testing.assert_array_equal(ndl.summation(x, axes=-2).numpy(), [2, 2, 2])  # in range: counted from the end
    assert ndl.stack([x, x], -3).shape == (2, 2, 3)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("scalar", [float("nan"), float("inf"), -float("inf")])
def test_an_integer_tensor_meeting_a_nan_or_infinite_number_computes_in_float32(compiled, scalar):
    """`int_tensor + nan` raised "cannot convert float NaN to integer" (and inf an OverflowError)
    while deciding the result's dtype; like 0.5, such a number makes the result float32."""
    step = (lambda a: (a + scalar, a * scalar, a - scalar))
    outs = (ndl.compile(step) if compiled else step)(ndl.Tensor(np.array([1, -2, 0], np.int64)))
    values = np.array([1, -2, 0], np.float32)
    with np.errstate(invalid="ignore"):
        for out, expected in zip(outs, (values + scalar, values * scalar, values - scalar)):
            assert out.dtype == "float32"
            np.testing.assert_array_equal(out.numpy(), expected.astype(np.float32))


@pytest.mark.parametrize("call", [lambda x: x + 10**400, lambda x: 10**400 - x, lambda x: x / -10**400,
                                  lambda x: ndl.power_scalar(x, 10**400)])
def test_an_integer_too_large_for_a_float_is_an_attribute_error_naming_the_op(call):
    """A scalar of 401 digits raised "int too large to convert to float" from float(), naming no
    op (numpy refuses it too)."""
    x = ndl.Tensor(np.ones(2, np.float32))
    with pytest.raises(AttrError, match=r"_scalar: the scalar, an integer of 401 digits, is too large for a float"):
        call(x)
    with pytest.raises(AttrError, match="too large for a float"):
        ndl.compile(call)(x)
    with pytest.raises(AttrError, match=r"an integer of about 5000 digits, is too large"):
        x + 10 ** 5000  # past Python's 4300-digit limit the message itself raised ValueError


def test_graph_text_with_a_scalar_too_large_for_a_float_is_refused_at_its_line():
    """`add_scalar(%x, scalar=1000...0)` (400 digits) in graph text raised OverflowError from the
    registry's attribute check instead of the parser's IRParseError naming the line."""
    text = ("graph @g(%x: f32[2]) {\n  %0 = add_scalar(%x, scalar=1" + "0" * 400 + ") : f32[2]\n"
            "  return %0\n}\n")
    with pytest.raises(IRParseError,
                       match=r"line 2, column .*add_scalar: attribute scalar=1000.*000 must be a number a "
                             r"float can hold"):
        ndl.ir.parse(text)


@pytest.mark.parametrize("init, fans", [("kaiming_uniform", (0, 3)), ("kaiming_normal", (-2, 3)),
                                        ("xavier_uniform", (0, 0)), ("xavier_normal", (-1, 1))])
def test_an_initialiser_with_no_positive_fan_names_it(init, fans):
    """`kaiming_uniform(0, 3)` raised ZeroDivisionError, `kaiming_normal(-2, 3)` "math domain
    error": neither named the initialiser or its fans."""
    with pytest.raises(ValueError, match=f"{init}: fan_in={fans[0]}, fan_out={fans[1]} give no bound"):
        getattr(ndl.init, init)(*fans)
    assert getattr(ndl.init, init)(4, 3).shape == (4, 3)


def test_a_cache_folder_that_is_a_file_is_warned_about_once(tmp_path, monkeypatch, caplog):
    """NDLC_CACHE_DIR naming a file warned twice per module, library and program (read, then
    write: 30 lines for a small model); it warns once per kind of access (reading an entry,
    writing one, reading a library), runs, and the rest is at INFO."""
    import logging
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("NDLC_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="ndlc.cache"):
        out = ndl.compile(lambda x: ndl.exp(x) * 2)(ndl.Tensor(np.zeros((3, 5), np.float32)))
    np.testing.assert_array_equal(out.numpy(), np.full((3, 5), 2, np.float32))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    messages = [r.getMessage().split(" /")[0] for r in warnings]
    assert len(messages) == len(set(messages)) <= 3, caplog.text
    assert all("further such failures" in r.getMessage() for r in warnings), caplog.text
    assert sum(r.levelno == logging.INFO and "Not a directory" in r.getMessage() for r in caplog.records) >= 2


@pytest.mark.parametrize("options, message", [
    (dict(debug="no"), "debug must be True or False, not 'no'"),
    (dict(check="no"), "check must be True or False, not 'no'"),
    (dict(static_hyperparameters="yes"), "static_hyperparameters must be True or False"),
    (dict(max_specialisations=True), "max_specialisations must be a positive integer, not True"),
    (dict(state=3), "state must be a list or tuple of Modules, Optimizers and Tensors, not int"),
])
def test_compile_options_of_the_wrong_type_are_refused_by_name(options, message):
    """`debug="no"` raised "unsupported operand type(s) for +: 'int' and 'str'" at the first call;
    `check="no"` turned check mode on (a string is true); `state=3` raised "'int' object is not
    iterable"; `max_specialisations=True` kept one program."""
    with pytest.raises(ndl.NdlcError, match=f"ndlc.compile: {message}"):
        ndl.compile(_double, **options)
    out = ndl.compile(_double, check=False, debug=1, state=[])(ndl.Tensor(np.ones(2, np.float32)))
    np.testing.assert_array_equal(out.numpy(), [2, 2])


def test_ndlc_run_says_an_input_of_python_objects_is_not_read_rather_than_corrupt(tmp_path, capsys):
    """An intact .npy of dtype object (stored pickled) was called "truncated or corrupt"."""
    (tmp_path / "g.ir").write_text("graph @g(%x: f32[2]) {\n  %0 = negate(%x) : f32[2]\n  return %0\n}\n")
    np.save(tmp_path / "x.npy", np.array([1.0, None], dtype=object), allow_pickle=True)
    err = refused(capsys, ["run", str(tmp_path / "g.ir"), "--input", f"x={tmp_path / 'x.npy'}"],
                  "--input x=", "holds an array of Python objects", "is not read")
    assert "corrupt" not in err


def test_a_checkpoint_path_given_as_bytes_is_saved_and_loaded(tmp_path):
    """`ndl.save(obj, b"/path/ckpt.npz")` raised "Can't mix bytes and non-bytes in path
    components" while naming its temporary file; bytes paths are os.PathLike's other form."""
    path = os.fsencode(tmp_path / "ckpt.npz")
    ndl.save({"w": np.arange(3.0), "step": 4}, path)
    loaded = ndl.load(path)
    assert loaded["step"] == 4 and loaded["w"].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("make, message", [
    (lambda: ndl.Tensor(None), r"unsupported dtype object \(Python objects such as None"),
    (lambda: ndl.compile(_double)(None), r"input 0: unsupported dtype object \(Python objects such as None"),
    (lambda: ndl.Tensor([1.0, "a"]), r"unsupported dtype str\d+ \(text, not numbers\)")])
def test_python_objects_given_as_a_tensor_are_named_as_such(make, message):
    """None (or text among numbers) made "unsupported dtype object" ("str1024"), which names numpy's
    dtype, not what the user gave."""
    with pytest.raises(ndl.NdlcError, match=message):
        make()


@pytest.mark.parametrize("shape, shown", [((10 ** 6000,), r"\(<an integer of about 6000 digits>\)"),
                                          ((2, 2 ** 63), r"\(2, 9223372036854775808\)")])
def test_an_integer_attribute_past_64_bits_is_refused_by_name(shape, shown):
    """reshape to (10**6000,) raised Python's "Exceeds the limit (4300 digits) for integer string
    conversion" from its own error message, and 2**63 reached the shape rule; every later layer
    holds shapes and axes in 64 bits."""
    with pytest.raises(AttrError, match=f"reshape: attribute shape={shown} must be an integer of 64 bits"):
        ndl.ops.reshape(ndl.Tensor(np.ones(3, np.float32)), shape)


@pytest.mark.parametrize("make, message", [
    (lambda: ndl.nn.Linear(3, 4, bias="no"), "Linear: bias must be True or False, got 'no'"),
    (lambda: ndl.nn.Conv(3, 4, 3, bias="False"), "Conv: bias must be True or False, got 'False'"),
    (lambda: ndl.nn.LSTM(3, 4, bias="no"), "LSTMCell: bias must be True or False"),
    (lambda: ndl.data.DataLoader(ndl.data.NDArrayDataset(np.ones((4, 3), np.float32)), 2, shuffle="no"),
     "DataLoader: shuffle must be True or False, got 'no'"),
])
def test_a_switch_given_as_text_is_refused_by_name(make, message):
    """`bias="no"` or `shuffle="no"` is true to Python: the layer got its bias, the loader shuffled."""
    with pytest.raises(ValueError, match=message):
        make()
    assert ndl.nn.Linear(3, 4, bias=None).bias is None and ndl.nn.Linear(3, 4, bias=0).bias is None
