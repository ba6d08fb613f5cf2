"""The kernel table's rows, in order: each op's forward and forward+backward case, with the sizes
of a full run and of --quick."""
from suite.cases.adam import AdamStep
from suite.cases.base import OpCase, both
from suite.cases.conv import Conv
from suite.cases.kernels import Matmul, ReluChain, SoftmaxLoss
from suite.cases.lstm import LstmLM
from suite.cases.norms import BatchNorm, BatchNormByHand, LayerNorm, LayerNormByHand
from suite.cases.transformer import TransformerLayerStep

CASES = [
    *both(BatchNorm((4096, 1024), (256, 32))),
    *both(BatchNormByHand((4096, 1024), (256, 32))),
    OpCase(BatchNorm((65536, 256), (512, 16))),
    *both(BatchNorm((256, 1024), (384, 32))),  # small: a call's overhead shows beside the kernel
    *both(LayerNorm((4096, 1024), (64, 32))),
    *both(LayerNormByHand((4096, 1024), (64, 32))),
    *both(LayerNorm((256, 1024), (16, 32))),
    *both(SoftmaxLoss((4096, 1000), (64, 10))),
    *both(ReluChain((1 << 22,), (1 << 12,))),
    OpCase(Matmul((1024, 1024, 1024), (64, 32, 48))),
    AdamStep((784, 512), (64, 32)),
    *both(Conv((32, 16, 32, 32, 3), (2, 3, 4, 8, 3))),
    *both(Conv((256, 1, 6, 28, 5), (4, 1, 6, 12, 5), padding=2, name="LeNet conv1")),
    *both(Conv((256, 6, 16, 14, 5), (4, 6, 16, 9, 5), padding=0, name="LeNet conv2")),
    *both(Conv((256, 32, 32, 4, 3), (4, 32, 32, 4, 3), name="ResNet9 3x3")),
    OpCase(LstmLM((20, 16, 1000, 64, 128), (3, 2, 12, 4, 5)), backward=True),
    OpCase(TransformerLayerStep((8, 64, 128, 256), (2, 5, 32, 64)), backward=True),
]

__all__ = ["CASES", "AdamStep", "BatchNorm", "BatchNormByHand", "Conv", "LayerNorm", "LayerNormByHand",
           "LstmLM", "Matmul", "OpCase", "ReluChain", "SoftmaxLoss", "TransformerLayerStep"]
