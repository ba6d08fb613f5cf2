"""The reference executor: runs a graph with the numpy interpreter. It is the backend to debug
with and the oracle the native backends are compared against."""
from ..ir.interpreter import run


def reference_executor(graph):
    """A callable arrays -> (outputs, {state input: new array}) that interprets `graph`."""
    def execute(arrays):
        env = run(graph, arrays)
        return [env[v] for v in graph.outputs], {s: env[v] for s, v in graph.updates.items()}
    return execute
