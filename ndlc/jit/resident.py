"""State resident on the GPU: a step compiled for device='cuda' keeps its parameters, running
statistics and optimizer slots in the program's device memory between steps. Only the batch (and
the optimizer's numbers) go in and the outputs come out; a state tensor read on the host
(`.numpy()`, `state_dict()`, an eager op) is fetched from the device then, once (tensor.py's
resident values). A state tensor the host may have changed since the device last held it (it was
fetched or rebound with `.data = ...`) is uploaded again before the next step; state the program
reads but does not update (the weights of an eval step) is uploaded once, and again only when the
host rebinds it (`.data = ...`, `load_state_dict`). Writes into a tensor's `.numpy()` array in
place are not seen by a resident program: assign with `.data = ...`."""
import functools

from ..frontend.tensor import Tensor, mark_resident, resident_in, store_data


def _fetch(program, name, value):
    """`value`'s data from the device buffer `name` of `program` (which holds no tensor)."""
    store_data(value, program.download(name))


class ResidentState:
    """Runs a CudaProgram for a captured step, its state tensors kept in the program's memory."""

    def __init__(self, program, captured):
        self.program, self.captured = program, captured
        count = len(captured.state)
        inputs = program.kernels.inputs
        self.state_names = inputs[len(inputs) - count:] if count else []
        updated = set(program.kernels.updated)
        self.updates = [name in updated for name in self.state_names]
        self.held = [None] * count  # the Value each state tensor had when the device last took it

    def run(self, arrays):
        count = len(self.state_names)
        names = self.program.kernels.inputs
        uploads = dict(zip(names[:len(names) - count], self.captured.inputs(arrays)))
        for i, (tensor, name) in enumerate(zip(self.captured.state, self.state_names)):
            held = self.held[i] is tensor._value
            if not held or (self.updates[i] and resident_in(tensor._value) is not self):
                uploads[name] = tensor.numpy()
        outputs = self.program.step(uploads)
        for i, (tensor, name) in enumerate(zip(self.captured.state, self.state_names)):
            self.held[i] = tensor._value
            if self.updates[i]:
                mark_resident(tensor._value, self, functools.partial(_fetch, self.program, name))
        return [Tensor.make_const(out) for out in outputs]
