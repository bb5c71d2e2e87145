"""Forward/backward smoke test of an installed fastrnn, for emulated CPUs.

    python .ci/smoke.py save REF.npz    # on the build machine: reference values
    python .ci/smoke.py check REF.npz   # e.g. under qemu-x86_64 -cpu Nehalem

Runs a small LSTM, GRU and RNN (float32 and float64) forward and backward
and a loss, prints the kernel level in use, and with ``check`` compares with
the reference (to float32 rounding: levels sum in different orders).
"""

import sys

import numpy as np

import fastrnn as fr


def results():
    rng = np.random.default_rng(0)
    values = {}
    for cell in (fr.LSTM, fr.GRU, fr.RNN):
        for dtype in ("float32", "float64"):
            layer = cell(6, 10, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
            x = rng.standard_normal((9, 4, 6)).astype(dtype)
            out, _ = layer(x, lengths=[9, 4, 7, 1])
            d_x, _ = layer.backward(np.cos(out))
            key = f"{cell.__name__}_{dtype}"
            values[key + "_out"] = out
            values[key + "_dx"] = d_x
            values[key + "_dw"] = layer.grads["weight_hh_l0"]
    loss = fr.CrossEntropyLoss()
    logits = rng.standard_normal((8, 5)).astype("float32")
    value, grad = loss(logits, np.arange(8) % 5)     # the loss and its gradient
    values["ce_loss"], values["ce_grad"] = np.array(value), grad
    return values


def main(mode, path):
    print("fastrnn", fr.__version__, "kernels:", fr.kernel_levels())
    values = results()
    if mode == "save":
        np.savez(path, **values)
        return 0
    reference = np.load(path)
    for key, value in values.items():
        np.testing.assert_allclose(value, reference[key], rtol=2e-4, atol=2e-5, err_msg=key)
    print(f"smoke: {len(values)} arrays match the reference")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("save", "check"):
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
