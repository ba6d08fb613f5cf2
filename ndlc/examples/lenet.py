"""LeNet with BatchNorm, as the batch-norm notebook trains it on Fashion-MNIST: two 5x5
convolutions (the first padded by 2, the second not), each with BatchNorm2d, sigmoid and 2x2
average pooling, then 120 and 84 units with BatchNorm1d and sigmoid, and 10 classes; SGD with
learning rate 1.0, batch 256. `ndlc train --model lenet` trains it compiled."""
from ndlc import nn

LEARNING_RATE = 1.0


def build_lenet(channels=1, classes=10):
    """LeNet-BN for (N, channels, 28, 28) images."""
    return nn.Sequential(
        nn.Conv(channels, 6, 5, padding=2), nn.BatchNorm2d(6), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Conv(6, 16, 5, padding=0), nn.BatchNorm2d(16), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
        nn.Linear(84, classes))
