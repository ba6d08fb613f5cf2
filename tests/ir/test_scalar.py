"""Each elementwise op's scalar expression (what backends lower) equals its numpy reference."""
import numpy as np
import pytest

from ndlc.ir import all_ops
from ndlc.ir import scalar as S
from op_cases import BY_OP

ELEMENTWISE = sorted(name for name, op in all_ops().items() if op.kind == "elementwise")


def test_every_elementwise_op_has_a_scalar_expression():
    assert ELEMENTWISE and all(all_ops()[name].scalar is not None for name in ELEMENTWISE)


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalar_expression_matches_reference(name, dtype):
    opdef = all_ops()[name]
    inputs, attrs = BY_OP[name][0].draw(np.random.default_rng(0))
    inputs = [x.astype(dtype) if x.dtype.kind == "f" else x for x in inputs]
    expr = opdef.scalar(*[S.arg(i) for i in range(len(inputs))], **attrs)
    got = S.evaluate(expr, inputs, np.dtype(dtype).name.replace("float", "f"))
    want = opdef.reference(*inputs, **attrs)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                               rtol=1e-6 if dtype == np.float32 else 1e-12)


def test_walks_visit_each_shared_node_once_operands_first():
    x, y = S.arg(0), S.arg(1)
    shared = x * y
    expr = S.exp(shared) + shared
    order = S.postorder(expr)
    assert [e.prim for e in order] == ["arg", "arg", "mul", "exp", "add"] and order[2] is shared
    assert [e.prim for e in S.postorder(expr, stop=lambda e: e is shared)] == ["mul", "exp", "add"]
    assert S.leaf_set([expr, -shared + S.arg(2)]) == {0, 1, 2}
    deep = x
    for _ in range(5000):  # no recursion: long chains are fine
        deep = deep + y
    assert len(S.postorder(deep)) == 5002 and S.leaf_set([deep]) == {0, 1}
