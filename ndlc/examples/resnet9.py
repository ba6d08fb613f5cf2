"""needle's ResNet9 for 3x32x32 images (CIFAR-10): conv-BatchNorm-ReLU blocks, strides 4, 2, 2, 2,
two residual pairs of 3x3 blocks, then 128 -> 128 -> 10 linear layers."""
from ndlc import nn


class ConvBN(nn.Module):
    """Convolution (needle's padding k//2), BatchNorm2d, ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.conv = nn.Conv(in_channels, out_channels, kernel_size, stride=stride)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def build_resnet9(classes=10):
    """ResNet9 for (N, 3, 32, 32) images, layer for layer as needle's hw4 builds it."""
    return nn.Sequential(
        ConvBN(3, 16, 7, 4),
        ConvBN(16, 32, 3, 2),
        nn.Residual(nn.Sequential(ConvBN(32, 32, 3, 1), ConvBN(32, 32, 3, 1))),
        ConvBN(32, 64, 3, 2),
        ConvBN(64, 128, 3, 2),
        nn.Residual(nn.Sequential(ConvBN(128, 128, 3, 1), ConvBN(128, 128, 3, 1))),
        nn.Flatten(),
        nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, classes))
