"""A compiled step cut where it exchanges values (a distributed optimizer's all-reduce of the
gradients): two programs from one trace, the runtime's hook in between.

The first program (forward and backward) writes the values it sends straight into flat buffers,
one per dtype, in the order they were sent; the hook transforms those buffers in place (averages
them over the processes); the second program (the optimizer update) reads its received values as
views of the same buffers. No value is copied on its way through the exchange.
"""
import hashlib

import numpy as np

from ..ir.errors import NdlcError
from ..passes.split import split_at_exchange
from ..runtime.program import aligned_empty
from .tensor import Tensor


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

    def ir(self, stage) -> str:
        """`stage` of each program that has it (only the first has 'grad'), one after the other."""
        having = [p for p in self.programs if stage in p.stages or stage == "asm"] or self.programs[:1]
        return "\n\n".join(p.ir(stage) for p in having)

    def profile(self, top=None) -> str:
        return "\n\n".join(p.profile(top) for p in self.programs)

    @property
    def calls(self):
        return self.programs[0].calls


class SplitSpecialisation:
    """One compiled specialisation of a step that exchanges values: `before` computes the outputs
    and state the batch determines and the values sent; `hook(flat buffers, state arrays `before`
    updated)` transforms the sent values in place; `after` runs the rest from them. The hook's
    `compiled(fingerprint)` sees a hash of both programs first (processes compare it)."""

    def __init__(self, captured, check, compile_graph):
        if check:
            raise NdlcError(f"check mode does not run a step cut at an exchange (@{captured.graph.name} "
                            "uses a distributed optimizer): check it without one")
        self.captured = captured
        sent, received, self.hook = captured.exchange
        self.split = split_at_exchange(captured.graph, sent, received,
                                       captured.graph.inputs[:captured.num_inputs])
        self.before = compile_graph(self.split.before, captured.forward)
        self.after = compile_graph(self.split.after)
        self.program = Programs(self.before, self.after)
        self.flats, self.views = flat_buffers([v.type for v in sent])
        first = len(self.split.outputs_before)
        self.sent_names = self.before.kernels.outputs[first:first + len(sent)]
        self.into = {}
        for name, view in zip(self.sent_names, self.views):
            self.into.setdefault(name, view)
        self.num_outputs = len(captured.graph.outputs)
        self.hook.compiled(hashlib.sha256(self.program.ir("planned").encode()).hexdigest())

    def run(self, arrays):
        """One step: gradients into the flat buffers, the hook, the update from them."""
        first, count = len(self.split.outputs_before), len(self.views)
        results = self.before.run(*arrays, *self.captured.state_arrays(), update_state=True, into=self.into)
        for view, result in zip(self.views, results[first:first + count]):
            if result is not view:
                np.copyto(view, result)
        updated = dict(zip(self.split.before.updates, results[first + count:]))
        self.captured.write_back(updated)
        states = dict(zip(self.captured.state_inputs, self.captured.state))
        self.hook(self.flats, [states[s].numpy() for s in self.split.before.updates])
        late = self.after.run(*self.views, *self.captured.state_arrays(), update_state=True)
        done = len(self.split.outputs_after)
        self.captured.write_back(dict(zip(self.split.after.updates, late[done:])))
        outputs = [None] * self.num_outputs
        for i, value in zip(self.split.outputs_before, results[:first]):
            outputs[i] = value
        for i, value in zip(self.split.outputs_after, late[:done]):
            outputs[i] = value
        return [Tensor.make_const(out) for out in outputs]
