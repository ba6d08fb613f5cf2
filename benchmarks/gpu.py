"""The GPU check: on a machine with an NVIDIA GPU, run the CUDA tests and the GPU benchmarks and
write benchmarks/RESULTS-gpu.md (GPU, driver, date, versions, medians, ratios).

    python benchmarks/gpu.py                    # tests + benchmarks -> benchmarks/RESULTS-gpu.md
    ndlc bench --device cuda                    # the same
    python benchmarks/gpu.py --emulate --quick  # a dry run of this script without a GPU: the CUDA
                                                # host emulation at tiny sizes (numbers meaningless)

Cases, each beside PyTorch eager and torch.compile on the same GPU (where installed): BatchNorm1d,
LayerNorm and softmax cross-entropy forward+backward at 65536x1024 with x, r and dx in device
memory as PyTorch's are (bandwidth over the minimal traffic: x read and dx written, plus the
upstream gradient), and ndlc's same call moving x and r in and dx out as a row of its own, the MLP and ResNet9 training steps
at batch 256 and 1024, and the host overhead of a step (a batch of 8: launch-bound). Float32
throughout, TF32 off in ndlc (cuBLAS default math) and in PyTorch
(torch.backends.cuda.matmul.allow_tf32 = False).
"""
import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import ndlc as ndl  # noqa: E402
from ndlc.examples.resnet9 import build_resnet9  # noqa: E402
from ndlc.examples.train_mlp import build_mlp, training_step  # noqa: E402

nn = ndl.nn
SIZES = {"full": (65536, 1024), "quick": (64, 32)}
BATCHES = {"full": (256, 1024), "quick": (8,)}


def median_ms(call, repeats, sync=lambda: None):
    call()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# ---- ndlc -----------------------------------------------------------------------------------

class DeviceData(nn.Module):
    """A case's inputs (x, r, labels) and its result dx as state of the compiled step: they stay in
    device memory between calls, as PyTorch's CUDA tensors do, so the timed call moves no data
    between host and device (the transfers are timed as a row of their own)."""

    def __init__(self, layer, x, r, labels):
        super().__init__()
        self.layer = layer
        self.x, self.r = ndl.Tensor(x, requires_grad=False), ndl.Tensor(r, requires_grad=False)
        self.labels = ndl.Tensor(labels, requires_grad=False)
        self.dx = ndl.Tensor(np.zeros_like(x), requires_grad=False)


def ndlc_norm(kind, n, d, resident=True):
    """ndlc: d(sum(layer(x) * r))/dx for a BatchNorm1d, LayerNorm or softmax cross-entropy layer;
    `resident`: x, r and dx in device memory (else x, r uploaded and dx downloaded by each call)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    r = rng.standard_normal((n, d)).astype(np.float32)
    labels = rng.integers(0, d, n)
    layer = {"batchnorm": nn.BatchNorm1d(d), "layernorm": nn.LayerNorm1d(d)}.get(kind)

    def gradient(x, r, y):
        x.requires_grad = True
        loss = nn.SoftmaxLoss()(x, y) if kind == "softmax" else (layer(x) * r).sum()
        loss.backward()
        return x.grad
    if not resident:
        step = ndl.compile(gradient, device="cuda", state=[layer] if layer else [])
        return lambda: step(x, r, labels)
    data = DeviceData(layer, x, r, labels)

    def on_device():
        data.dx.data = gradient(data.x.detach(), data.r, data.labels)
        return ()
    step = ndl.compile(on_device, device="cuda", state=[data])
    return step


def ndlc_train(model_name, batch):
    np.random.seed(0)
    rng = np.random.default_rng(0)
    if model_name == "mlp":
        model, x = build_mlp(), rng.random((batch, 784), dtype=np.float32)
        optimizer = ndl.optim.Adam(model.parameters(), lr=1e-3)
    else:
        model, x = build_resnet9(), rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        optimizer = ndl.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    y = rng.integers(0, 10, batch)
    step = ndl.compile(training_step(model, optimizer), device="cuda")
    return lambda: step(x, y), step


# ---- PyTorch --------------------------------------------------------------------------------

def torch_norm(torch, device, kind, n, d, compiled):
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((n, d)), dtype=torch.float32, device=device, requires_grad=True)
    r = torch.tensor(rng.standard_normal((n, d)), dtype=torch.float32, device=device)
    y = torch.tensor(rng.integers(0, d, n), device=device)
    layer = {"batchnorm": torch.nn.BatchNorm1d(d, eps=1e-5, momentum=0.1),
             "layernorm": torch.nn.LayerNorm(d, eps=1e-5)}.get(kind)
    layer = layer.to(device) if layer is not None else None

    def fn(x, r, y):
        loss = torch.nn.functional.cross_entropy(x, y) if kind == "softmax" else (layer(x) * r).sum()
        return torch.autograd.grad(loss, x)[0]
    call = torch.compile(fn) if compiled else fn
    return lambda: call(x, r, y)


def torch_train(torch, device, model_name, batch, compiled):
    rng = np.random.default_rng(0)
    if model_name == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.BatchNorm1d(512), torch.nn.ReLU(),
                                    torch.nn.Linear(512, 256), torch.nn.BatchNorm1d(256), torch.nn.ReLU(),
                                    torch.nn.Linear(256, 10)).to(device)
        x = torch.tensor(rng.random((batch, 784)), dtype=torch.float32, device=device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        model = torch_resnet9(torch).to(device)
        x = torch.tensor(rng.standard_normal((batch, 3, 32, 32)), dtype=torch.float32, device=device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    y = torch.tensor(rng.integers(0, 10, batch), device=device)

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return torch.compile(step) if compiled else step


def torch_resnet9(torch):
    """needle's ResNet9 in PyTorch (the same layers as ndlc.examples.resnet9)."""
    def conv_bn(a, b, k, s):
        return torch.nn.Sequential(torch.nn.Conv2d(a, b, k, s, k // 2), torch.nn.BatchNorm2d(b), torch.nn.ReLU())

    class Residual(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) + x
    return torch.nn.Sequential(conv_bn(3, 16, 7, 4), conv_bn(16, 32, 3, 2),
                               Residual(torch.nn.Sequential(conv_bn(32, 32, 3, 1), conv_bn(32, 32, 3, 1))),
                               conv_bn(32, 64, 3, 2), conv_bn(64, 128, 3, 2),
                               Residual(torch.nn.Sequential(conv_bn(128, 128, 3, 1), conv_bn(128, 128, 3, 1))),
                               torch.nn.Flatten(), torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


# ---- the run --------------------------------------------------------------------------------

def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def run_tests():
    """The CUDA tests (`pytest -m cuda`) and the emulated CUDA tests: (passed, summary line)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda or not slow",
               "tests/codegen/test_cuda.py", "tests/runtime/test_cuda_training.py", "tests/runtime/test_cuda_gpu.py"]
    result = subprocess.run(command, cwd=os.path.dirname(HERE), capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    print(result.stdout[-3000:])
    return result.returncode == 0, lines[-1] if lines else "no output"


def measure(args):
    mode = "quick" if args.quick else "full"
    torch = torch_or_none()
    device = "cuda" if torch is not None and torch.cuda.is_available() and not args.emulate else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    rows, n, d = [], *SIZES[mode]
    peak = None
    if device == "cuda":
        a = torch.empty(1 << 28, dtype=torch.float32, device=device)
        b = torch.empty_like(a)
        peak = 2 * a.numel() * 4 / median_ms(lambda: b.copy_(a), args.repeats, sync) / 1e6  # GB/s
    for kind in ("batchnorm", "layernorm", "softmax"):
        name = f"{kind} fwd+bwd {n}x{d}"
        cells = {"ndlc": median_ms(ndlc_norm(kind, n, d), args.repeats)}
        transfers = median_ms(ndlc_norm(kind, n, d, resident=False), args.repeats)
        if torch is not None:
            for label, compiled in (("PyTorch", False), ("torch.compile", True)):
                cells[label] = median_ms(torch_norm(torch, device, kind, n, d, compiled), args.repeats, sync)
        traffic = (2 if kind == "softmax" else 3) * n * d * 4
        rows.append((name, cells, traffic / cells["ndlc"] / 1e6))
        rows.append((f"{name}, x and r uploaded and dx downloaded by each call (ndlc)", {"ndlc": transfers}, None))
        print(name, cells, f"with host transfers: {transfers:.3f} ms", flush=True)
    for model_name in ("mlp", "resnet9"):
        for batch in BATCHES[mode]:
            name = f"{model_name} training step, batch {batch}"
            call, _ = ndlc_train(model_name, batch)
            cells = {"ndlc": median_ms(call, args.repeats)}
            if torch is not None:
                for label, compiled in (("PyTorch", False), ("torch.compile", True)):
                    cells[label] = median_ms(torch_train(torch, device, model_name, batch, compiled), args.repeats, sync)
            rows.append((name, cells, None))
            print(name, cells, flush=True)
    call, step = ndlc_train("mlp", 8)
    overhead = median_ms(call, args.repeats)
    kernels = len(step.last.program.module.steps)
    return rows, peak, (overhead, kernels), device


def describe():
    from ndlc.runtime.cuda import GpuDevice, emulating
    if emulating():
        return "host emulation of CUDA (no GPU: numbers are not GPU numbers)"
    return GpuDevice.shared().describe()


def document(args, rows, peak, overhead, tests, device):
    torch = torch_or_none()
    lines = ["# ndlc on the GPU", "",
             f"Generated by `python benchmarks/gpu.py` on {datetime.date.today().isoformat()}.", "",
             f"- GPU: {describe()}",
             f"- host: {platform.node()}, Python {platform.python_version()}, numpy {np.__version__}, "
             f"PyTorch {torch.__version__ if torch else 'not installed'} (on {device})",
             f"- CUDA tests: {'passed' if tests[0] else 'FAILED'} ({tests[1]})" if tests else "- CUDA tests: not run",
             f"- device memory bandwidth (PyTorch copy of 1 GiB): {peak:.0f} GB/s" if peak else "- device bandwidth: not measured",
             f"- host overhead of one ndlc step (MLP, batch 8, {overhead[1]} launches and gemms in one CUDA graph, "
             f"batch in, loss out): {overhead[0]:.3f} ms", "",
             "Medians of repeated calls (ms), float32, TF32 off everywhere.", "",
             "| case | ndlc | PyTorch | torch.compile | ndlc / PyTorch | ndlc / torch.compile | ndlc GB/s (share of copy) |",
             "|---|---|---|---|---|---|---|"]
    for name, cells, gbps in rows:
        def cell(label):
            return f"{cells[label]:.3f}" if label in cells else "-"

        def ratio(label):
            return f"{cells['ndlc'] / cells[label]:.2f}" if label in cells else "-"
        share = f"{gbps:.0f} ({gbps / peak:.0%})" if gbps and peak else (f"{gbps:.0f}" if gbps else "")
        lines.append(f"| {name} | {cell('ndlc')} | {cell('PyTorch')} | {cell('torch.compile')} | "
                     f"{ratio('PyTorch')} | {ratio('torch.compile')} | {share} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulate", action="store_true", help="run on the CUDA host emulation (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a dry run)")
    parser.add_argument("--skip-tests", action="store_true", help="benchmarks only")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", default=os.path.join(HERE, "RESULTS-gpu.md"))
    args = parser.parse_args(argv)
    from ndlc.runtime.cuda import emulating
    if args.emulate or emulating():  # never GPU-sized runs, nor RESULTS-gpu.md, from the emulation
        os.environ["NDLC_CUDA_EMULATE"] = "1"
        args.emulate = args.quick = True
    tests = None if args.skip_tests else run_tests()
    rows, peak, overhead, device = measure(args)
    text = document(args, rows, peak, overhead, tests, device)
    print(text)
    if args.emulate and args.output == os.path.join(HERE, "RESULTS-gpu.md"):
        print("(emulated: not written over RESULTS-gpu.md; pass --output to keep it)")
        return 0 if tests is None or tests[0] else 1
    with open(args.output, "w") as f:
        f.write(text)
    print(f"wrote {args.output}")
    return 0 if tests is None or tests[0] else 1


if __name__ == "__main__":
    sys.exit(main())
