"""What the fuzzers (test_entry_fuzz, test_training_fuzz, test_text_fuzz, test_files_fuzz and
by hand) found, each kept as the smallest example that failed."""
import numpy as np

import ndlc as ndl


def test_a_function_of_no_arguments_runs_through_its_entry():
    """The entry's generated source called the program as `run(, update_state=True)`: a
    SyntaxError on the third call."""
    f = ndl.compile(lambda: ndl.Tensor(np.ones(2, np.float32)) * 2)
    assert [f().numpy().tolist() for _ in range(4)] == [[2.0, 2.0]] * 4
    assert f.entry is not None


def test_a_function_returning_an_empty_tuple_runs_through_its_entry():
    """The entry returned `(,)`: a SyntaxError on the third call."""
    f = ndl.compile(lambda a: ())
    assert [f(np.ones(2, np.float32)) for _ in range(4)] == [()] * 4
    assert f.entry is not None


def test_a_compiled_step_leaves_no_stale_gradient_of_an_eager_step():
    """A compiled step keeps no gradients; it put back the .grad an eager step had left, so that
    after any number of compiled steps `p.grad` still read the eager step's gradient. Now each
    compiled call, through the full path or the entry, leaves None where the step set a grad."""
    np.random.seed(0)
    model = ndl.nn.Linear(3, 2)
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)

    def step(x, y):
        opt.reset_grad()
        loss = ndl.nn.SoftmaxLoss()(model(x), y)
        loss.backward()
        opt.step()
        return loss

    x, y = np.ones((2, 3), np.float32), np.array([0, 1])
    compiled = ndl.compile(step)
    for _ in range(2):
        step(x, y)
        assert model.weight.grad is not None
        for _ in range(3):
            compiled(x, y)
            assert model.weight.grad is None and model.bias.grad is None
    assert compiled.entry is not None
