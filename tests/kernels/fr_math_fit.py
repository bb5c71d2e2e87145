"""The polynomial fits behind fr_math.h's float32 exp and expm1 (not a test).

Both approximate on the reduced range |r| <= ln2/2 (plus a margin for the
rounding of k) with minimum maximum relative error: Lawson's iteratively
reweighted least squares on Chebyshev nodes, in float64, then rounded to
float.  ``python tests/kernels/fr_math_fit.py`` prints the coefficients in the
order fr_math.h uses (highest degree first).
"""

import numpy as np

REDUCED = np.log(2.0) / 2 * 1.003


def lawson(basis, target, weight, iterations=300):
    """Coefficients c minimising max |weight * (basis @ c - target)|."""
    lam = np.full(len(target), 1.0 / len(target))
    for _ in range(iterations):
        root = np.sqrt(lam) * weight
        coef = np.linalg.lstsq(basis * root[:, None], target * root, rcond=None)[0]
        err = np.abs(weight * (basis @ coef - target))
        lam = lam * err
        lam /= lam.sum()
    return coef


def nodes(count=6001):
    return REDUCED * np.cos(np.linspace(0.0, np.pi, count))


def fit_exp(degree=6):
    """exp(r) = 1 + sum_{k>=1} c_k r^k; returns (c_1..c_degree as float32, error)."""
    r = nodes()
    basis = np.vstack([r ** k for k in range(1, degree + 1)]).T
    coef = lawson(basis, np.exp(r) - 1.0, np.exp(-r)).astype(np.float32)
    return coef, exp_error(coef)


def fit_expm1(degree=6):
    """expm1(r) = r + sum_{k>=2} c_k r^k; returns (c_2..c_degree as float32, error)."""
    r = nodes()
    r = r[np.abs(r) > 1e-6]
    basis = np.vstack([r ** k for k in range(2, degree + 1)]).T
    coef = lawson(basis, np.expm1(r) - r, 1.0 / np.abs(np.expm1(r))).astype(np.float32)
    return coef, expm1_error(coef)


def exp_error(coef):
    """Max relative error of 1 + sum c_k r^k (float64 arithmetic) on the range."""
    r = np.linspace(-REDUCED, REDUCED, 200001)
    basis = np.vstack([r ** k for k in range(1, len(coef) + 1)]).T
    return float(np.max(np.abs(1.0 + basis @ coef.astype(np.float64) - np.exp(r)) / np.exp(r)))


def expm1_error(coef):
    r = np.linspace(-REDUCED, REDUCED, 200001)
    r = r[np.abs(r) > 1e-7]
    basis = np.vstack([r ** k for k in range(2, len(coef) + 2)]).T
    want = np.expm1(r)
    return float(np.max(np.abs(r + basis @ coef.astype(np.float64) - want) / np.abs(want)))


if __name__ == "__main__":
    for name, fit in (("exp", fit_exp), ("expm1", fit_expm1)):
        coef, err = fit()
        print(name, f"max relative error {err:.3g}:",
              ", ".join(f"{c:.9e}f" for c in coef[::-1]))
