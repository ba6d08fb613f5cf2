"""needle's nn (`ndl.nn`, `import ndlc.nn as nn`): Module, Parameter and the layers."""
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv, Dropout, Flatten, LayerNorm1d,
                     Linear, MaxPool2d, ReLU, Sigmoid, SoftmaxLoss, Tanh)
from .module import Identity, Module, Parameter, Residual, Sequential
from .sequence import LSTM, RNN, Embedding, LSTMCell, RNNCell
from .transformer import AttentionLayer, MultiHeadAttention, Transformer, TransformerLayer

__all__ = ["AttentionLayer", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv", "Dropout",
           "Embedding", "Flatten", "Identity", "LSTM", "LSTMCell", "LayerNorm1d", "Linear",
           "MaxPool2d", "Module", "MultiHeadAttention", "Parameter", "RNN", "RNNCell", "ReLU",
           "Residual", "Sequential", "Sigmoid", "SoftmaxLoss", "Tanh", "Transformer",
           "TransformerLayer"]
