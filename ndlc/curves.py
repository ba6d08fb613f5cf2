"""The curves of a training run (`ndlc train --plot/--log-json`): every step's loss and each
epoch's loss and test accuracy. They travel in checkpoints, so a resumed run plots the whole run."""
import json

import numpy as np

FIGURE_INCHES, DPI = (10, 4), 100  # the PNG is 1000 x 400 pixels


class History:
    """The numbers of a run so far; each is also written to `log_path` (JSON lines) as it comes."""

    def __init__(self, log_path=None):
        self.step_losses, self.epochs = [], []
        self.log = open(log_path, "w") if log_path else None

    def step(self, epoch, loss):
        self.step_losses.append(loss)
        self._write_step(epoch, len(self.step_losses), loss)

    def epoch(self, epoch, loss, test_accuracy, seconds, steps):
        record = {"epoch": epoch, "loss": loss, "test_accuracy": test_accuracy, "seconds": seconds,
                  "steps": steps}
        self.epochs.append(record)
        self._write_epoch(record)

    def _write_step(self, epoch, step, loss):
        if self.log:
            self.log.write(json.dumps({"kind": "step", "epoch": epoch, "step": step, "loss": loss}) + "\n")

    def _write_epoch(self, record):
        if self.log:
            self.log.write(json.dumps({"kind": "epoch", **record,
                                       "steps_per_second": record["steps"] / record["seconds"]}) + "\n")
            self.log.flush()

    def state(self) -> dict:
        """What a checkpoint keeps (ndl.save's kinds only)."""
        return {"step_losses": np.array(self.step_losses, np.float64), "epochs": list(self.epochs)}

    def restore(self, state):
        """Continue from a checkpoint's numbers; the log is written again from them, so steps a
        killed run logged after its last checkpoint appear once, as the resumed run makes them."""
        self.step_losses = [float(x) for x in state["step_losses"]]
        self.epochs = [dict(record) for record in state["epochs"]]
        step = 0
        for record in self.epochs:
            for loss in self.step_losses[step:step + record["steps"]]:
                step += 1
                self._write_step(record["epoch"], step, loss)
            self._write_epoch(record)

    def plot(self, path):
        """A PNG of two panels: the loss of every step with each epoch's mean loss over it, and
        the test accuracy after each epoch."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        loss_axes, accuracy_axes = figure.subplots(1, 2)
        ends = np.cumsum([record["steps"] for record in self.epochs])
        loss_axes.plot(np.arange(1, len(self.step_losses) + 1), self.step_losses, lw=0.8, alpha=0.6,
                       label="step")
        loss_axes.plot(ends, [record["loss"] for record in self.epochs], "o-", label="epoch mean")
        loss_axes.set(xlabel="step", ylabel="training loss", title="loss")
        loss_axes.legend()
        accuracy_axes.plot([record["epoch"] for record in self.epochs],
                           [record["test_accuracy"] for record in self.epochs], "o-", color="C2")
        accuracy_axes.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
        accuracy_axes.xaxis.get_major_locator().set_params(integer=True)
        figure.savefig(path, dpi=DPI)

    def close(self):
        if self.log:
            self.log.close()
