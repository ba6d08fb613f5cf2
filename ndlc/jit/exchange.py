"""A compiled step cut where it exchanges values with other processes (SyncBatchNorm's
statistics and their adjoints, a distributed optimizer's gradient all-reduce): one program per
part of the trace (passes/split.py), the exchanges' hooks in between.

The part that computes an exchange's values writes them straight into that exchange's flat
buffers, one per dtype, in the order they were sent; the hook transforms the buffers in place
(sums or averages them over the processes); later parts read the received values as views of
the same buffers. Nothing is copied on its way through an exchange. The state updates of all
parts are written back after the last one, so each part reads the state as it was before the
step.

A hook is called as `hook(buffers)`; the first exchange's `hook.compiled(fingerprint)` sees a
hash of all the programs first (processes compare it); a hook with `synchronise(arrays)` is
given, after the step, the state arrays that the step updated from its batch alone (BatchNorm's
running statistics: each process's own).
"""
import hashlib

import numpy as np

from ..errors import NdlcError
from ..passes.split import split_at_exchanges
from ..runtime.program import aligned_empty
from ..frontend.tensor import Tensor


def flat_buffers(types):
    """(one flat array per dtype, in first-seen order; a C-contiguous view of them per type)."""
    sizes, dtypes = {}, {}
    for t in types:
        dtypes.setdefault(t.dtype, t.np_dtype)
        sizes[t.dtype] = sizes.get(t.dtype, 0) + int(np.prod(t.shape, dtype=np.int64))
    flats = {dtype: aligned_empty((size,), dtypes[dtype]) for dtype, size in sizes.items()}
    offsets, views = dict.fromkeys(sizes, 0), []
    for t in types:
        size = int(np.prod(t.shape, dtype=np.int64))
        views.append(flats[t.dtype][offsets[t.dtype]:offsets[t.dtype] + size].reshape(t.shape))
        offsets[t.dtype] += size
    return list(flats.values()), views


class Programs:
    """Programs run one after another in a step, seen as one by `ir`, `profile` and `calls`."""

    def __init__(self, *programs):
        self.programs = programs

    def ir(self, stage, format="text") -> str:
        """`stage` of each program that has it (only the first has 'grad'), one after the other
        (as Program.ir: text, or Graphviz dot with format="dot")."""
        having = [p for p in self.programs if stage in p.stages or stage == "asm"] or self.programs[:1]
        return "\n\n".join(p.ir(stage, format=format) for p in having)

    def profile(self, top=None) -> str:
        return "\n\n".join(p.profile(top) for p in self.programs)

    @property
    def calls(self):
        return self.programs[0].calls


class SplitSpecialisation:
    """One compiled specialisation of a step that exchanges values: its parts' programs, and
    each exchange's flat buffers and hook (the module docstring says how they run)."""

    def __init__(self, captured, check, compile_graph, device="cpu"):
        if device != "cpu":
            raise NdlcError(f"@{captured.graph.name} exchanges values with other processes (a distributed "
                            f"optimizer or SyncBatchNorm), which runs on the CPU only, not device={device!r}")
        if check:
            raise NdlcError(f"check mode does not run a step cut at an exchange (@{captured.graph.name} "
                            "uses a distributed optimizer or SyncBatchNorm): check it without them")
        self.captured = captured
        graph, exchanges = captured.graph, captured.exchanges
        self.parts = split_at_exchanges(graph, [(e.sent, [r._value for r in e.received]) for e in exchanges],
                                        graph.inputs[:captured.num_inputs],
                                        graph.inputs[:captured.num_inputs - len(captured.hyperparameters)])
        self.programs = [compile_graph(part.graph, captured.forward if k == 0 else None)
                         for k, part in enumerate(self.parts)]
        self.program = Programs(*self.programs)
        self.hooks = [e.hook for e in exchanges]
        self.buffers, self.views, self.received = [], [], {}
        for e in exchanges:
            flats, views = flat_buffers([v.type for v in e.sent])
            self.buffers.append(flats)
            self.views.append(views)
            self.received.update(zip((r._value for r in e.received), views))
        self.into = []  # per part: output name -> the view its kernels write into
        for part, program in zip(self.parts, self.programs):
            first = len(part.outputs)
            names = program.kernels.outputs[first:first + len(part.sent)]
            into = {}
            for name, (j, i) in zip(names, part.sent):
                into.setdefault(name, self.views[j][i])
            self.into.append(into)
        local = _local(graph, graph.inputs[:captured.num_inputs], self.received)
        self.local_state = [s for s, v in graph.updates.items() if local.get(v)]
        self.num_outputs = len(graph.outputs)
        self.hooks[0].compiled(hashlib.sha256(self.program.ir("fused").encode()).hexdigest())

    def run(self, arrays):
        """One step: each part in turn, each exchange after the part that completes its values,
        then every state update written back."""
        leading = self.captured.arguments(arrays)
        outputs, carried, updates = [None] * self.num_outputs, {}, {}
        last = len(self.parts) - 1
        for k, (part, program) in enumerate(zip(self.parts, self.programs)):
            extra = [carried[v] if v in carried else self.received[v] for v in part.carried_in]
            results = program.run(*leading, *extra, update_state=k == last, into=self.into[k])
            for i, value in zip(part.outputs, results):
                outputs[i] = value
            at = len(part.outputs)
            for (j, i), value in zip(part.sent, results[at:at + len(part.sent)]):
                if value is not self.views[j][i]:
                    np.copyto(self.views[j][i], value)
            at += len(part.sent)
            carried.update(zip(part.carried_out, results[at:at + len(part.carried_out)]))
            updates.update(zip(part.graph.updates, results[at + len(part.carried_out):]))
            if k < last:
                self.hooks[k](self.buffers[k])
        self.captured.write_back(updates)
        states = dict(zip(self.captured.state_inputs, self.captured.state))
        for hook in self.hooks:
            if hasattr(hook, "synchronise"):
                hook.synchronise([states[s].numpy() for s in self.local_state])
        return [Tensor.make_const(out) for out in outputs]


def _local(graph, sources, received):
    """Value -> whether it depends on `sources` (the batch) and on no `received` value: what
    each process computes from its own data alone."""
    on_source, on_received = set(sources), set(received)
    for node in graph.nodes:
        if any(v in on_received for v in node.operands):
            on_received.add(node.result)
        elif any(v in on_source for v in node.operands):
            on_source.add(node.result)
    return {v: v not in on_received for v in on_source}
