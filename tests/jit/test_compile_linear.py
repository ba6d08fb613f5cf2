"""The compiler's Python passes do work linear in the graph's size: Python function calls per node
(counted, not timed: deterministic on a loaded machine) stay flat from 10 layers to 100."""
import sys

import numpy as np
import pytest

import ndlc as ndl
from ndlc import nn
from ndlc.examples.train_mlp import training_step
from ndlc.ir.graph import Builder, Graph
from ndlc.ir.types import TensorType
from ndlc.jit.capture import capture
from ndlc.jit.pipeline import Stages, _cpu_kernels, _graph_passes
from ndlc.passes.fusion import fuse

FLAT = 1.25  # calls per node at the larger size over the smaller: ~1.0 when linear, ~N/10 when quadratic


def calls(run) -> int:
    """Python function calls made by run()."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        count += event == "call"
    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return count


def chain_step(layers):
    """The captured training step (Adam) of `layers` Linear+ReLU layers of width 16: Adam's updates
    of the equal-shaped parameters merge into one growing kernel."""
    np.random.seed(0)
    model = nn.Sequential(*[module for _ in range(layers) for module in (nn.Linear(16, 16), nn.ReLU())])
    step = training_step(model, ndl.optim.Adam(model.parameters(), lr=1e-3))
    return capture(step, (TensorType((8, 16), "f32"), TensorType((8,), "i64"))).graph


def passes_per_node(graph) -> float:
    def run():
        stages = Stages(graph.name)
        _cpu_kernels(stages, _graph_passes(stages, graph), True, 1, "")
    run()  # first-use work (lazy imports) left out
    return calls(run) / len(graph.nodes)


@pytest.mark.slow
def test_the_passes_of_a_training_step_do_work_linear_in_its_layers():
    small, large = passes_per_node(chain_step(10)), passes_per_node(chain_step(100))
    assert large <= FLAT * small, f"{small:.0f} calls per node at 10 layers, {large:.0f} at 100"


def unrelated_kernels(count):
    """`count` outputs, each the exp of an input of a shape of its own: no kernel reads another's
    output, so each may join any earlier kernel whose loops fit; none fits."""
    graph = Graph("unrelated")
    b = Builder(graph)
    graph.outputs = [b.exp(graph.add_input(TensorType((n + 1, 3), "f32"), f"x{n}")) for n in range(count)]
    return graph


def test_merge_tries_only_kernels_whose_loops_fit():
    """Without an index of the kernels by their loops, each kernel tried every earlier one."""
    def per_kernel(count):
        graph = unrelated_kernels(count)
        fuse(graph)
        return calls(lambda: fuse(graph)) / count
    small, large = per_kernel(20), per_kernel(200)
    assert large <= FLAT * small, f"{small:.0f} calls per kernel at 20 kernels, {large:.0f} at 200"
