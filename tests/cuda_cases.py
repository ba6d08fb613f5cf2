"""The graphs the CUDA tests run: every registry op's forward (float32) and gradient graph."""
import numpy as np

from ndlc.passes import autodiff
from op_cases import CASES, loss_graph, single_op_graph

TOLERANCE = (2e-5, 2e-4)  # float32 (atol, rtol): CUDA's expf/logf/tanhf differ from numpy by a few ulp


def op_graphs():
    """(id, graph, inputs) for every registry op's forward (float32) and gradient graph."""
    found = []
    for i, case in enumerate(CASES):
        inputs, attrs = case.draw(np.random.default_rng(0))
        graph, arrays = single_op_graph(case.op, inputs, attrs, "f32")
        found.append((f"{case.op}-{i}-forward", graph, arrays))
        if case.differentiable:
            rng = np.random.default_rng(7)
            inputs, attrs = case.draw(rng)
            g, values, r = loss_graph(case.op, inputs, attrs)
            grad = autodiff(g, wrt=[v for v in values if v.dtype == "f64"])
            found.append((f"{case.op}-{i}-gradient", grad, inputs + [rng.standard_normal(r.shape)]))
    return found


OPS = op_graphs()
