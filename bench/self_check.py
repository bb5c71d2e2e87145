"""Self-check of the benchmark's references: ``python bench/self_check.py``.

The numpy layers (``numpy_reference.py``) against torch.nn.RNN/LSTM/GRU, then
the benchmark training step and Adam update of numpy, fastrnn and JAX
(``workloads.py``) against torch.  Exit status 1 on any failure.  It lives
apart from both so that ``workloads`` imports ``numpy_reference`` and nothing
imports back.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy_reference  # noqa: E402
import workloads  # noqa: E402


def self_check(verbose=True):
    """Numpy reference vs torch (and the benchmark training step and Adam of
    numpy, fastrnn and JAX vs torch)."""
    import torch

    torch.set_num_threads(1)
    ok = True
    tolerances = {"float64": 1e-10, "float32": 2e-5}
    for dtype, tol in tolerances.items():
        for cell in ("rnn", "lstm", "gru"):
            errors = numpy_reference.check_layer_vs_torch(torch, cell, dtype)
            worst = max(errors, key=errors.get)
            passed = errors[worst] <= tol
            ok &= passed
            if verbose:
                print(f"{'ok  ' if passed else 'FAIL'} layer {cell:4s} {dtype}: "
                      f"max rel error {errors[worst]:.2e} ({worst}); tol {tol:.0e}")
    # the benchmark training step (embedding + layer + head + softmax
    # cross-entropy + backward) of the numpy reference, fastrnn and JAX
    # against torch, then the Adam update of each against torch.optim.Adam
    for cell in ("rnn", "lstm", "gru"):
        errors = workloads.check_training_gradients(cell, T=6, B=4, E=5, H=8, seed=1)
        for name, (err, tol) in errors.items():
            passed = err <= tol
            ok &= passed
            if verbose:
                print(f"{'ok  ' if passed else 'FAIL'} train step {cell:4s} {name}: "
                      f"max rel error over loss and all gradients {err:.2e}; tol {tol:.0e}")
    for name, (err, tol) in workloads.check_adam().items():
        passed = err <= tol
        ok &= passed
        if verbose:
            print(f"{'ok  ' if passed else 'FAIL'} {name}: max rel error of the parameters "
                  f"after 3 steps {err:.2e}; tol {tol:.0e}")
    if verbose:
        print("self-check", "PASSED" if ok else "FAILED")
    return ok


if __name__ == "__main__":
    sys.exit(0 if self_check() else 1)
