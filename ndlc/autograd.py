"""`ndl.autograd` (needle's `needle.autograd`): the helpers needle's tests reach for. ndlc's
gradients come from the graph IR's autodiff pass, so only these two views of the tensors exist."""
import gc

from .frontend.tensor import Tensor


def find_topo_sort(node_list):
    """The tensors `node_list` depends on, inputs before their uses, in needle's order (a
    depth-first post-order over `Tensor.inputs`, each tensor once)."""
    visited, order = set(), []
    for node in node_list:
        _visit(node, visited, order)
    return order


def _visit(node, visited, order):
    # a Tensor's identity is its graph value: `inputs` may wrap a value in a new Tensor
    stack = [(node, False)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor._value) in visited:
            continue
        visited.add(id(tensor._value))
        stack.append((tensor, True))
        stack.extend((t, False) for t in reversed(tensor.inputs))


def __getattr__(name):
    """TENSOR_COUNTER: how many Tensors are alive now (needle counts them as they are made and
    freed; hw2's tests check that an optimizer's steps leave no graphs behind)."""
    if name == "TENSOR_COUNTER":
        return sum(issubclass(type(o), Tensor) for o in gc.get_objects())  # type(): no __class__ property runs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
