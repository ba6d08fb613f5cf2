"""The verifier rejects broken graphs with a message naming the offending node."""
import pytest

from ndlc.ir import Builder, Graph, Node, TensorType, VerifyError, verify


def _graph():
    g = Graph("g")
    x = g.add_input(TensorType((2, 3)), "x")
    b = Builder(g)
    y = b.exp(x)
    g.outputs = [b.summation(y, axes=(1,))]
    return g, x, y


def test_valid_graph_passes():
    g, _, _ = _graph()
    assert verify(g) is g


def test_use_before_def_names_the_node():
    g, _, _ = _graph()
    g.nodes.reverse()
    with pytest.raises(VerifyError, match=r"node 0 `%0 = summation\(%1, axes=\(1,\)\) : f32\[2\]`: operand 0 is used before"):
        verify(g)


def test_type_mismatch_names_the_node():
    g, x, _ = _graph()
    g.nodes.append(Node("exp", [x], {}, TensorType((3, 2))))
    with pytest.raises(VerifyError, match=r"node 2 `%2 = exp\(%x\) : f32\[3,2\]`: result type f32\[3,2\] but the op's rule gives f32\[2,3\]"):
        verify(g)


def test_operand_type_error_names_the_node():
    g, x, y = _graph()
    g.nodes.append(Node("add", [x, g.outputs[0]], {}, TensorType((2, 3))))
    with pytest.raises(VerifyError, match=r"node 2 .*add\(f32\[2,3\], f32\[2\]\): operand shapes differ"):
        verify(g)


def test_bad_attribute_names_the_node():
    g, x, _ = _graph()
    g.nodes.append(Node("summation", [x], {"axes": (5,)}, TensorType((2, 3))))
    with pytest.raises(VerifyError, match=r"node 2 `%2 = summation\(%x, axes=\(5,\)\).*axes \(5,\) out of range"):
        verify(g)
    g.nodes[-1] = Node("summation", [x], {"axis": 1}, TensorType((2,)))
    with pytest.raises(VerifyError, match=r"node 2 .*unknown attribute 'axis'"):
        verify(g)


def test_unknown_op_names_the_node():
    g, x, _ = _graph()
    g.nodes.append(Node("frobnicate", [x], {}, TensorType((2, 3))))
    with pytest.raises(VerifyError, match=r"node 2 `%2 = frobnicate\(%x\).*unknown op 'frobnicate'"):
        verify(g)


def test_result_defined_twice():
    g, _, _ = _graph()
    g.nodes.append(g.nodes[0])
    with pytest.raises(VerifyError, match="defined more than once"):
        verify(g)


def test_state_update_must_match_the_state_type():
    g = Graph("g")
    w = g.add_input(TensorType((2,)), "w", kind="state")
    g.updates[w] = Builder(g).summation(w, axes=(0,))
    with pytest.raises(VerifyError, match=r"new value of %w has type f32\[\], the state f32\[2\]"):
        verify(g)


def test_undefined_output():
    g, _, _ = _graph()
    other = Graph("h")
    g.outputs.append(other.add_input(TensorType(())))
    with pytest.raises(VerifyError, match="output 1 is not defined"):
        verify(g)


def test_the_type_of_an_array_is_made_once_per_shape_and_dtype_and_bad_dtypes_are_refused():
    """TensorType.of is asked for every argument and result of every compiled call: arrays of one
    shape and dtype share one (immutable) type; an unsupported dtype is still an error."""
    import numpy as np
    from ndlc.errors import ShapeError
    a, b = np.zeros((3, 4), np.float32), np.ones((3, 4), np.float32)
    assert TensorType.of(a) is TensorType.of(b) == TensorType((3, 4), "f32")
    assert TensorType.of(a.astype(np.float64)) == TensorType((3, 4), "f64")
    with pytest.raises(ShapeError, match="unsupported dtype complex64"):
        TensorType.of(np.zeros(2, np.complex64))
