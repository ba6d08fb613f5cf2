"""Train an MLP with BatchNorm1d on Fashion-MNIST in eager mode; print each epoch's loss and
test accuracy. `python -m ndlc.examples.train_mlp --epochs 1`."""
import argparse
import time

import numpy as np

import ndlc as ndl
from ndlc import nn


def build_mlp(in_features=784, hidden=(512, 256), classes=10):
    """784-512-BN-ReLU-256-BN-ReLU-10: Linear -> BatchNorm1d -> ReLU per hidden layer."""
    layers, width = [], in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, classes))


def training_step(model, optimizer, loss_fn=None):
    """needle's training step for `model`: forward, loss (SoftmaxLoss), backward, optimizer step.
    The same function runs eagerly or under `ndl.compile`."""
    loss_fn = loss_fn or nn.SoftmaxLoss()

    def train_step(x, y):
        optimizer.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return train_step


def train_epoch(model, loader, optimizer):
    """One pass over `loader`; returns the mean loss per sample."""
    model.train()
    step, total, count = training_step(model, optimizer), 0.0, 0
    for x, y in loader:
        loss = step(x, y)
        total += float(loss.numpy()) * x.shape[0]
        count += x.shape[0]
    return total / count


def accuracy(model, loader):
    """Fraction of samples whose largest logit is the label (eval mode)."""
    model.eval()
    correct, count = 0, 0
    for x, y in loader:
        correct += int((model(x).numpy().argmax(axis=1) == y.numpy()).sum())
        count += x.shape[0]
    return correct / count


def train(train_set, test_set, epochs=1, batch_size=256, lr=1e-3, weight_decay=0.0, seed=0, log=print):
    """Train `build_mlp()` with Adam; returns (model, [(epoch, loss, test accuracy, seconds)])."""
    np.random.seed(seed)
    model = build_mlp(in_features=train_set[0][0].size)
    optimizer = ndl.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    train_loader = ndl.data.DataLoader(train_set, batch_size, shuffle=True)
    test_loader = ndl.data.DataLoader(test_set, batch_size)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss = train_epoch(model, train_loader, optimizer)
        acc = accuracy(model, test_loader)
        history.append((epoch, loss, acc, time.perf_counter() - start))
        log(f"epoch {epoch}: loss {loss:.4f}  test accuracy {acc:.4f}  ({history[-1][3]:.1f} s)")
    return model, history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None,
                        help="directory of the Fashion-MNIST idx .gz files (default: $NDLC_DATA, "
                             "then /usr/share/datasets/fashion-mnist)")
    args = parser.parse_args(argv)
    train_set = ndl.data.FashionMNIST(train=True, root=args.data)
    test_set = ndl.data.FashionMNIST(train=False, root=args.data)
    train(train_set, test_set, args.epochs, args.batch_size, args.lr, args.weight_decay, args.seed)


if __name__ == "__main__":
    main()
