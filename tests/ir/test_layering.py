"""The layering the design promises: the IR and eager execution need no code generator."""
import subprocess
import sys


def imported_after(code):
    script = f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'llvmlite'))"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()


def test_import_ndlc_ir_imports_no_llvmlite():
    assert imported_after("import ndlc.ir") == "[]"


def test_eager_training_imports_no_llvmlite():
    code = """
import numpy as np
import ndlc as ndl
model = ndl.nn.Sequential(ndl.nn.Linear(4, 3), ndl.nn.BatchNorm1d(3))
opt = ndl.optim.Adam(model.parameters())
loss = ndl.nn.SoftmaxLoss()(model(ndl.Tensor(np.ones((5, 4)))), ndl.Tensor(np.zeros(5)))
loss.backward()
opt.step()"""
    assert imported_after(code) == "[]"


def test_compiling_imports_it():
    assert "llvmlite" in imported_after("import numpy as np, ndlc as ndl\nndl.compile(lambda x: x + 1)(np.ones(2))")
