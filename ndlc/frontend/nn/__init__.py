"""needle's nn (`ndl.nn`): Module, Parameter and the layers."""
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv, Dropout, Flatten, LayerNorm1d,
                     Linear, MaxPool2d, ReLU, Sigmoid, SoftmaxLoss, Tanh)
from .module import Identity, Module, Parameter, Residual, Sequential

__all__ = ["AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv", "Dropout", "Flatten", "Identity",
           "LayerNorm1d", "Linear", "MaxPool2d", "Module", "Parameter", "ReLU", "Residual",
           "Sequential", "Sigmoid", "SoftmaxLoss", "Tanh"]
