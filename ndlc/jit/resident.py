"""State resident on the GPU: a step compiled for device='cuda' keeps its parameters, running
statistics and optimizer slots in the program's device memory between steps. Only the batch (and
the optimizer's numbers) go in and the outputs come out; a state tensor read on the host
(`.numpy()`, `state_dict()`, an eager op) is fetched from the device then, once (tensor.py's
resident values). A state tensor the host may have changed since the device last held it (it was
fetched, rebound with `.data = ...`, or is read but not updated by this program) is uploaded again
before the next step."""
from ..frontend.tensor import Tensor, mark_resident, resident_in, store_data


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
        arguments = self.captured.arguments(arrays)
        count = len(self.state_names)
        names = self.program.kernels.inputs
        uploads = dict(zip(names[:len(names) - count], arguments[:len(arguments) - count]))
        for i, (tensor, name) in enumerate(zip(self.captured.state, self.state_names)):
            if not (self.updates[i] and self.held[i] is tensor._value and resident_in(tensor._value) is self):
                uploads[name] = tensor.numpy()
        outputs = self.program.step(uploads)
        for i, (tensor, name) in enumerate(zip(self.captured.state, self.state_names)):
            self.held[i] = tensor._value
            if self.updates[i]:
                mark_resident(tensor._value, self, lambda value=tensor._value, name=name:
                              store_data(value, self.program.download(name)))
        return [Tensor.make_const(out) for out in outputs]
