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
