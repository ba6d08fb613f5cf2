"""The kernel benchmark suite behind `ndlc bench`: ndlc's compiled code against hand-written numpy,
PyTorch eager, torch.compile and JAX, side by side in one process on the same threads, each
contender's first result checked against numpy's before it is timed; then the MLP step
(mlp_step.py) and the convolutional models' steps (model_steps.py). Writes RESULTS.md and
ratios.png.

    cases/       the rows, by family (norms, kernels, adam, conv, lstm, transformer)
    *_runner.py  how each framework runs a case (torch_runner.py: torch.compile really compiled)
    contenders.py, measure.py, report.py, chart.py, command.py (`run(args)`, from ndlc/cli.py)
"""
from suite.cases import (CASES, AdamStep, BatchNorm, BatchNormByHand, Conv, LayerNorm, LayerNormByHand,
                         LstmLM, Matmul, OpCase, ReluChain, SoftmaxLoss, TransformerLayerStep)
from suite.command import run

__all__ = ["CASES", "AdamStep", "BatchNorm", "BatchNormByHand", "Conv", "LayerNorm", "LayerNormByHand",
           "LstmLM", "Matmul", "OpCase", "ReluChain", "SoftmaxLoss", "TransformerLayerStep", "run"]
