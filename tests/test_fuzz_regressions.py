"""What the fuzzers (test_entry_fuzz, test_training_fuzz, test_text_fuzz, test_files_fuzz and
by hand) found, each kept as the smallest example that failed."""
import numpy as np
import pytest

import ndlc as ndl
from ndlc import backend_ndarray as nd
from ndlc.errors import IRParseError
from ndlc.ir import parse, parse_kernels


def test_a_function_of_no_arguments_runs_through_its_entry():
    """The entry's generated source called the program as `run(, update_state=True)`: a
    SyntaxError on the third call."""
    f = ndl.compile(lambda: ndl.Tensor(np.ones(2, np.float32)) * 2)
    assert [f().numpy().tolist() for _ in range(4)] == [[2.0, 2.0]] * 4
    assert f.entry is not None


def test_a_function_returning_an_empty_tuple_runs_through_its_entry():
    """The entry returned `(,)`: a SyntaxError on the third call."""
    f = ndl.compile(lambda a: ())
    assert [f(np.ones(2, np.float32)) for _ in range(4)] == [()] * 4
    assert f.entry is not None


def test_a_compiled_step_leaves_no_stale_gradient_of_an_eager_step():
    """A compiled step keeps no gradients; it put back the .grad an eager step had left, so that
    after any number of compiled steps `p.grad` still read the eager step's gradient. Now each
    compiled call, through the full path or the entry, leaves None where the step set a grad."""
    np.random.seed(0)
    model = ndl.nn.Linear(3, 2)
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)

    def step(x, y):
        opt.reset_grad()
        loss = ndl.nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        opt.step()
        return loss

    x, y = np.ones((2, 3), np.float32), np.array([0, 1])
    compiled = ndl.compile(step)
    for _ in range(2):
        step(x, y)
        assert model.weight.grad is not None
        for _ in range(3):
            compiled(x, y)
            assert model.weight.grad is None and model.bias.grad is None
    assert compiled.entry is not None


GRAPH = "graph @g(%x: f32[2]) {\n  %0 = add(%x, %x) : f32[2]\n  return %0\n}"


@pytest.mark.parametrize("text, message", [
    (GRAPH.replace("f32[2]", "f32[2.5]", 1), r"line 1, column 18: expected an integer dimension, found '2.5'"),
    ("graph @g(%x: f32[1]) {\n  %0 = broadcast_to(%x, shape=" + "(" * 5000 + ") : f32[1]\n  return %0\n}",
     r"line 2, column \d+: the text nests too deeply to parse"),
])
def test_graph_text_the_parser_crashed_on_is_refused_at_its_line(text, message):
    """A float dimension was a ValueError from int(), deep parentheses a RecursionError."""
    with pytest.raises(IRParseError, match=message):
        parse(text)


@pytest.mark.parametrize("text", [None, b"program @p() -> ()"])
def test_parse_kernels_of_something_not_text_is_refused(text):
    """An AttributeError or TypeError from str.split before."""
    with pytest.raises(IRParseError, match=r"parse_kernels takes the text form of a program \(a str\), not"):
        parse_kernels(text)


def test_a_gzip_idx_file_with_corrupt_deflate_data_names_the_file(tmp_path):
    """zlib.error (not an OSError) escaped read_idx."""
    import gzip
    data = bytearray(gzip.compress(bytes(range(256)) * 40))
    data[20:32] = b"\\\xda\x01rY\xedJ\xde$^\x05\xdc"
    (tmp_path / "x.gz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"x.gz: not a readable idx file"):
        ndl.data.read_idx(str(tmp_path / "x.gz"), 3)


@pytest.mark.parametrize("flip, labels", [(True, [3]), (False, 3)])
def test_a_cifar_batch_that_unpickles_badly_names_the_file(tmp_path, flip, labels):
    """A flipped bit in a pickle frame's length made pickle.load raise MemoryError, labels of no
    length a TypeError from len()."""
    import pickle
    data = bytearray(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": labels}, protocol=4))
    if flip:
        data[7] ^= 0x80  # the frame's length: 2**63 bytes more
    (tmp_path / "test_batch").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"test_batch: (not a CIFAR-10 python batch|data must be \(N, 3072\))"):
        ndl.data.CIFAR10Dataset(str(tmp_path), train=False)


@pytest.mark.parametrize("offset, value", [(8, 1), (10, 99)])
def test_a_checkpoint_whose_zip_entry_says_encrypted_or_unknown_compression_names_the_file(tmp_path, offset, value):
    """zipfile's RuntimeError (an encrypted entry) and NotImplementedError (compression method 99)
    escaped ndl.load. `offset`: of the flags or method field in the first central directory entry."""
    path = tmp_path / "c.npz"
    ndl.save({"w": np.ones(3, np.float32)}, path)
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")
    data[entry + offset] = value
    path.write_bytes(bytes(data))
    with pytest.raises(ndl.CheckpointError, match=r"c.npz.* truncated or corrupt"):
        ndl.load(path)


@pytest.mark.parametrize("dtype", [">i8", ">i4", ">f8"])
def test_big_endian_arguments_are_read_as_their_values_eagerly_and_compiled(dtype):
    """Big-endian integers were refused as 'unsupported dtype int64; supported: ..., int64'."""
    a = np.arange(6).reshape(2, 3).astype(dtype)
    f = lambda x: x * 2 + x  # noqa: E731
    want = (a.astype(a.dtype.newbyteorder("=")) * 3).astype(ndl.Tensor(a).dtype)
    compiled = ndl.compile(f)
    for _ in range(3):
        np.testing.assert_array_equal(compiled(a).numpy(), want)
    np.testing.assert_array_equal(f(ndl.Tensor(a)).numpy(), want)


def test_a_step_bound_to_a_frozen_dataclass_trains_as_eager():
    """Binding `self.scale` (a runtime float) to its input raised FrozenInstanceError after the
    optimizer's lr, momentum and weight decay were bound, and they were never put back: their
    0-d symbolic tensors became state, and the first call failed reading them."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Trainer:
        model: object
        opt: object
        scale: float = 1.5

        def step(self, x, y):
            self.opt.reset_grad()
            loss = ndl.nn.SoftmaxLoss()(self.model(x) * self.scale, y)
            loss.backward()
            self.opt.step()
            return loss

    def trainer():
        np.random.seed(0)
        model = ndl.nn.Linear(3, 2)
        return Trainer(model, ndl.optim.SGD(model.parameters(), lr=0.1, momentum=0.5))

    x, y = np.ones((2, 3), np.float32), np.array([0, 1])
    eager, compiled = trainer(), trainer()
    step = ndl.compile(compiled.step)
    for i in range(5):
        if i == 3:
            for t in (eager, compiled):
                object.__setattr__(t, "scale", 0.5)
        np.testing.assert_allclose(step(x, y).numpy(), eager.step(x, y).numpy(), rtol=1e-5)
    assert compiled.opt.lr == 0.1 and type(compiled.opt.momentum) is float
    np.testing.assert_allclose(compiled.model.weight.numpy(), eager.model.weight.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layer, shape", [
    (lambda: ndl.nn.BatchNorm1d(3), (2, 3)), (lambda: ndl.nn.LayerNorm1d(3), (2, 3)),
    (lambda: ndl.nn.Conv(1, 2, 3), (1, 1, 4, 4)), (lambda: ndl.nn.Flatten(), (2, 3, 1)),
    (lambda: ndl.nn.Linear(3, 2), (2, 3))])
def test_every_layer_takes_a_numpy_array_eagerly_as_its_compiled_call_does(layer, shape):
    """BatchNorm1d, LayerNorm1d and Conv given an array raised AttributeError ('numpy.ndarray'
    object has no attribute 'broadcast_to'), Flatten returned an ndarray; Linear and compiled
    modules took it."""
    np.random.seed(0)
    module = layer()
    x = np.random.default_rng(0).standard_normal(shape)
    got = module(x)
    assert isinstance(got, ndl.Tensor)
    np.testing.assert_array_equal(got.numpy(), module(ndl.Tensor(x)).numpy())
    np.testing.assert_allclose(ndl.compile(module)(x).numpy(), got.numpy(), rtol=1e-5, atol=1e-6)


def test_a_float_minus_a_bool_is_the_float_difference_eagerly_and_compiled():
    """Compiled, [1, 1] - [True, False] gave [2, 1] (negate of a bool is the bool, by bool logic,
    then added); eagerly numpy's TypeError from the interpreter. The boundary fuzzer's slow run
    found it through logsumexp(a - b) of an empty float16 and an empty bool array."""
    a, b = np.ones(2, np.float32), np.array([True, False])
    np.testing.assert_array_equal(ndl.compile(lambda a, b: a - b)(a, b).numpy(), [0, 1])
    np.testing.assert_array_equal((ndl.Tensor(a) - ndl.Tensor(b)).numpy(), [0, 1])


@pytest.mark.parametrize("negate", [lambda t: -t, lambda t: t - t])
def test_negating_a_bool_tensor_is_refused_as_numpy_refuses_it(negate):
    with pytest.raises(ndl.ShapeError, match=r"negate\(bool\[2\]\): has no bool form"):
        negate(ndl.Tensor(np.array([True, False])))
    with pytest.raises(ndl.ShapeError, match=r"negate\(bool\[2\]\): has no bool form"):
        ndl.compile(negate)(np.array([True, False]))


@pytest.mark.parametrize("shape, axis, expected", [((0, 3), 0, np.zeros(3)), ((0, 3), None, np.zeros(1)),
                                                   ((2, 0), 1, np.zeros(2)), ((0, 3), 1, np.zeros(0))])
def test_an_ndarray_sum_over_an_empty_axis_is_zero(shape, axis, expected):
    """reduce_sum reshaped its input to (-1, 0): a numpy ValueError for any NDArray with no elements."""
    a = nd.array(np.zeros(shape))
    np.testing.assert_array_equal(a.sum(axis=axis).numpy(), expected)


def test_an_ndarray_max_over_a_full_axis_of_an_empty_array_is_empty():
    """max refused an array with no elements even where the reduced axis had some ("max over an
    empty axis"); numpy gives an empty result, and only an empty reduced axis is refused."""
    a = nd.array(np.zeros((0, 3)))
    assert a.max(axis=1).shape == (0,)
    with pytest.raises(nd.NDArrayError, match=r"max over an empty axis"):
        a.max(axis=0)


@pytest.mark.parametrize("call", [
    lambda a: a.__setitem__((slice(None),), np.ones(3)), lambda a: a.__setitem__((slice(None),), "1"),
    lambda a: a.__setitem__((slice(None),), [1.0, 2.0]), lambda a: a - "1", lambda a: a.maximum(None),
    lambda a: a >= 1j, lambda a: a * [1.0, 2.0, 3.0]], ids=["setitem-array", "setitem-text", "setitem-list",
                                                          "sub-text", "maximum-none", "ge-complex", "mul-list"])
def test_an_ndarray_operand_that_is_not_a_number_or_ndarray_is_refused(call):
    """setitem passed anything that was not an NDArray to numpy (a numpy array or the text "1" was
    written, a list was a numpy ValueError); `a - "1"` was a TypeError from unary minus, `a >= 1j`
    dropped the imaginary part: every operand is now an NDArray or a real number."""
    a = nd.array(np.arange(3))
    with pytest.raises(nd.NDArrayError, match=r"takes a number here, not"):
        call(a)
    np.testing.assert_array_equal(a.numpy(), np.arange(3))


@pytest.mark.parametrize("call, message", [
    (lambda a: a.reshape((6.0,)), r"reshape takes a tuple of integers"),
    (lambda a: a.reshape(6), r"reshape takes a tuple of integers"),
    (lambda a: a.broadcast_to((2.5, 2, 3)), r"broadcast_to takes a tuple of integers"),
    (lambda a: a.pad(1), r"pad takes one \(before, after\) pair per axis"),
    (lambda a: a.flip(0.5), r"flip takes a tuple of integers"),
    (lambda a: a.sum(axis=0.5), r"reduction over an axis takes a tuple of integers"),
    (lambda a: a[np.arange(2), 0], r"index array\(\[0, 1\]\) of axis 0: NDArray indexes with integers and slices"),
    (lambda a: a[0.5:2, 0], r"slice 0.5:2: of axis 0: its bounds and step must be integers or None"),
    (lambda a: nd.full((2.5,), 1.0), r"an NDArray's shape takes a tuple of integers"),
    (lambda a: a.broadcast_to((-2, 2, 3)), r"cannot broadcast shape \(2, 3\) to \(-2, 2, 3\): it has a negative"),
    (lambda a: nd.empty((2, -3)), r"an NDArray's shape \(2, -3\) has a negative dimension"),
], ids=["reshape-float", "reshape-number", "broadcast-float", "pad-number", "flip-float", "sum-float-axis",
        "index-array", "slice-float", "full-float-shape", "broadcast-negative", "empty-negative"])
def test_an_ndarray_shape_axis_or_index_that_is_not_an_integer_or_negative_is_refused(call, message):
    """Shapes, axes and indices went through int() or iteration: a float was truncated (reshape
    to (6.0,), nd.full((2.5,))), a number or an index array was a TypeError from inside, a float
    slice bound a TypeError from slice.indices; a negative dimension passed broadcast_to and
    nd.empty and failed later in numpy. Each is now an NDArrayError naming the call."""
    a = nd.array(np.arange(6).reshape(2, 3))
    with pytest.raises(nd.NDArrayError, match=message):
        call(a)


@pytest.mark.parametrize("axes", [(0, 0), (1, -1)])
def test_an_ndarray_flip_over_a_repeated_axis_is_refused(axes):
    """flip((0, 0)) flipped axis 0 once (the axes were a set), where numpy refuses a repeated axis."""
    with pytest.raises(nd.NDArrayError, match=r"flip over axes .* of a 2-d array: an axis is repeated"):
        nd.array(np.arange(6).reshape(2, 3)).flip(axes)


@pytest.mark.parametrize("scalar", [ndl.Tensor(np.float32(2.0)), ndl.Tensor(np.ones(3, np.float32)), "2"],
                         ids=["0-d-tensor", "tensor", "text"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_scalar_op_given_something_not_a_number_is_refused_alike_eagerly_and_compiled(scalar, compiled):
    """power_scalar(x, tensor) read the tensor with float(): numpy's TypeError for a tensor of
    several elements, a TraceError when compiled, and the text "2" silently became 2.0."""
    f = (lambda x: ndl.ops.power_scalar(x, scalar))
    f = ndl.compile(f) if compiled else f
    with pytest.raises(ndl.errors.AttrError, match=r"power_scalar: the scalar must be a number, not (Tensor|str)"):
        f(ndl.Tensor(np.ones(3, np.float32)))


def test_a_stack_of_no_tensors_is_a_shape_error():
    """stack(()) failed in numpy's result_type ("at least one array or dtype is required")."""
    with pytest.raises(ndl.errors.ShapeError, match=r"stack of no tensors"):
        ndl.ops.stack((), 0)


def test_an_attribute_given_by_position_is_refused_by_name():
    """ops.slice(x, starts) read the attribute as a tensor: "unsupported dtype object"."""
    with pytest.raises(ndl.errors.ShapeError, match=r"slice takes 1 tensor operand\(s\) and its attributes "
                                                     r"\(start, stop\) by keyword, got 2 positional"):
        ndl.ops.slice(ndl.Tensor(np.ones((2, 3), np.float32)), (slice(0, 1), slice(None)))


GATHER = "graph @g(%t: f32[4,2], %i: i64[3]) {\n  %0 = gather(%t, %i) : f32[3,2]\n  return %0\n}"


@pytest.mark.parametrize("indices", [[0, 9, 1], [0, -3, 1]])
def test_compile_ir_refuses_gather_indices_outside_the_table_as_the_interpreter_does(indices, tmp_path, capsys):
    """compile_ir ran a gather from a text graph on any indices: one outside [0, rows) selected a
    zero row, where the interpreter (and ndl.compile, and eager) raise an IndexError; `ndlc run`
    printed the zeros as the result."""
    table = np.arange(8, dtype=np.float32).reshape(4, 2)
    program = ndl.compile_ir(GATHER)
    with pytest.raises(IndexError, match=r"@g: input %i holds -?\d, outside \[0, 4\) for its gather from 4 rows"):
        program(table, np.array(indices))
    np.testing.assert_array_equal(program(table, np.array([3, 0, 1]))[0], table[[3, 0, 1]])
    from ndlc.cli import main
    (tmp_path / "g.ir").write_text(GATHER)
    np.savez(tmp_path / "in.npz", t=table, i=np.array(indices))
    assert main(["run", str(tmp_path / "g.ir"), "--input", str(tmp_path / "in.npz")]) == 2
    assert "outside [0, 4) for its gather" in capsys.readouterr().err


def test_compile_ir_reads_a_big_endian_input_as_its_values():
    """A big-endian float32 array (np.save of a '>f4' array) was refused with "has type
    float32[2], expected f32[2]": the byte order differed, not the type."""
    program = ndl.compile_ir("graph @g(%x: f32[2]) {\n  %0 = add(%x, %x) : f32[2]\n  return %0\n}")
    np.testing.assert_array_equal(program(np.array([1.5, -2.0], ">f4"))[0], [3.0, -4.0])


def test_ndlc_run_refuses_an_input_given_twice(tmp_path, capsys):
    """`--input x=a.npy --input x=b.npy` (or a .npz holding x as well) kept the last silently."""
    from ndlc.cli import main
    (tmp_path / "g.ir").write_text("graph @g(%x: f32[2]) {\n  %0 = add(%x, %x) : f32[2]\n  return %0\n}")
    np.save(tmp_path / "x.npy", np.ones(2, np.float32))
    np.savez(tmp_path / "all.npz", x=np.ones(2, np.float32))
    for second in (f"x={tmp_path}/x.npy", f"{tmp_path}/all.npz"):
        assert main(["run", str(tmp_path / "g.ir"), "--input", f"x={tmp_path}/x.npy", "--input", second]) == 2
        assert "input x is given twice" in capsys.readouterr().err


def test_unwindows_with_stride_zero_is_a_shape_error():
    """unwindows' shape rule divided by its stride before checking it: a ZeroDivisionError."""
    from ndlc.frontend.tensor import apply
    with pytest.raises(ndl.errors.ShapeError, match=r"unwindows\(f32\[1,1,2,2,2,2\]\): kernel 2 and stride 0 must be >= 1"):
        apply("unwindows", ndl.Tensor(np.ones((1, 1, 2, 2, 2, 2), np.float32)), kernel=2, stride=0, size=(3, 3))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_avg_pool2d_of_integers_is_refused_alike_eagerly_and_compiled(compiled):
    """avg_pool2d's rule took an int32 input: eagerly its reference truncated the means, compiled
    the decomposition's divide_scalar (float only) failed with a ShapeError naming divide_scalar."""
    from ndlc.frontend.tensor import apply
    f = (lambda x: apply("avg_pool2d", x, kernel=2, stride=2))
    f = ndl.compile(f) if compiled else f
    with pytest.raises(ndl.errors.ShapeError, match=r"avg_pool2d\(i32\[1,1,4,4\]\): needs a floating-point input"):
        f(ndl.Tensor(np.arange(16, dtype=np.int32).reshape(1, 1, 4, 4), dtype="int32"))


def test_a_pooling_stride_of_zero_is_refused_not_replaced_by_the_kernel():
    """ops.max_pool2d(x, 2, 0) pooled with stride 2: `stride or kernel` read 0 as not given."""
    with pytest.raises(ndl.errors.ShapeError, match=r"kernel 2 and stride 0 must be >= 1"):
        ndl.ops.max_pool2d(ndl.Tensor(np.ones((1, 1, 4, 4), np.float32)), 2, 0)


@pytest.mark.parametrize("module", ["RNN", "LSTM"])
def test_a_float64_sequence_through_a_float32_recurrent_module_computes_in_float64(module):
    """The initial state (zeros of the weights' dtype, float32) met a step computing in float64
    (the input's product with the weights, as Linear promotes it): a TypeError from inside scan,
    "fn must return a carry of its input's structure, shapes and dtypes"."""
    np.random.seed(0)
    m = getattr(ndl.nn, module)(4, 3)
    x = np.random.randn(3, 2, 4)
    output = m(ndl.Tensor(x, dtype="float64"))[0]
    assert output.dtype == "float64"
    np.testing.assert_allclose(output.numpy(), m(ndl.Tensor(x.astype(np.float32)))[0].numpy(), rtol=1e-5, atol=1e-6)


def test_a_compiled_matmul_of_a_batch_of_zero_rows():
    """The schedule asked register_tile for a tile of 0 rows: `max()` of no divisors, a ValueError
    from ir/tiles.py (found through a Transformer called on a batch of 0 sequences)."""
    result = ndl.compile(lambda a, b: a @ b)(np.ones((0, 16), np.float32), np.ones((16, 16), np.float32))
    assert result.shape == (0, 16)


def test_a_picture_of_the_asm_stage_is_refused_as_a_stage_without_one():
    """Program.ir("asm", format="dot") said "no stage 'asm'; stages: ..., asm": the stage exists
    (made on demand, as text), it has no picture."""
    f = ndl.compile(lambda x: x * 2)
    f(np.ones(2, np.float32))
    with pytest.raises(KeyError, match=r"no picture of stage 'asm'"):
        f.last.program.ir("asm", format="dot")


@pytest.mark.parametrize("call", [lambda a, b: a + b, lambda a, b: a @ b, lambda a, b: a.__setitem__((slice(None),) * 2, b)],
                         ids=["add", "matmul", "setitem"])
def test_ndarrays_on_different_devices_are_refused(call):
    """a (cpu) + b (cpu_numpy) computed, since every device here keeps its data on the host: code
    that mixes devices ran here and failed on needle's real GPU backend."""
    a, b = nd.array(np.ones((2, 2)), device=nd.cpu()), nd.array(np.ones((2, 2)), device=nd.cpu_numpy())
    with pytest.raises(nd.NDArrayError, match=r"NDArrays on different devices: cpu\(\) and cpu_numpy\(\)"):
        call(a, b)


@pytest.mark.parametrize("make, message", [
    (lambda: ndl.nn.Linear(0, 2), r"Linear: in_features must be a positive integer, got 0"),
    (lambda: ndl.nn.Linear(2, -3), r"Linear: out_features must be a positive integer, got -3"),
    (lambda: ndl.nn.Conv(3, 2, 2.5), r"Conv: kernel_size must be a positive integer, got 2.5"),
    (lambda: ndl.nn.BatchNorm1d(None), r"BatchNorm1d: dim must be a positive integer, got None"),
    (lambda: ndl.nn.LayerNorm1d("3"), r"LayerNorm1d: dim must be a positive integer, got '3'"),
    (lambda: ndl.nn.Embedding(-1, 3), r"Embedding: num_embeddings must be a positive integer, got -1"),
    (lambda: ndl.nn.RNN(3, 0), r"RNNCell: hidden_size must be a positive integer, got 0"),
    (lambda: ndl.nn.AttentionLayer(6, 0, 3), r"AttentionLayer: num_head must be a positive integer, got 0"),
    (lambda: ndl.nn.MaxPool2d(2, stride=0), r"MaxPool2d: stride must be a positive integer, got 0"),
], ids=["linear-0", "linear-negative", "conv-float", "batchnorm-none", "layernorm-text", "embedding-negative",
        "rnn-0", "attention-0", "maxpool-stride-0"])
def test_a_module_with_a_size_that_is_not_a_positive_integer_is_refused_by_name(make, message):
    """Sizes went straight to init and numpy: 0 was a ZeroDivisionError in kaiming_uniform, a
    negative one "math domain error" or numpy's "negative dimensions", a float or text numpy's
    TypeError, BatchNorm1d(0) and Embedding(0, 3) empty layers; MaxPool2d(2, stride=0) pooled with
    stride 2 (`stride or kernel_size`)."""
    with pytest.raises(ValueError, match=message):
        make()
