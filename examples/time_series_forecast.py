"""Time-series forecasting: predict the next value of a noisy periodic signal.

The series is two sine waves (periods 24 and 7.5 steps) whose amplitude
drifts slowly, plus AR(1) noise.  A SequenceRegressor (LSTM, last step ->
linear) reads a window of the past 48 values and predicts the next one.
Training uses the first 80% of the series; the scores are on the last
20%, which the model never saw.

Prints R^2 and RMSE next to three baselines: predicting the training
mean (R^2 = 0 by definition), repeating the last value, and a linear
autoregression on the same window fitted by least squares.  The noise
floor is the RMSE of a forecaster that knew the signal exactly and only
missed the unpredictable part of the noise.  Sines plus AR noise form a
linear process, so the linear autoregression is close to optimal here and
hard to beat; the point is that the LSTM, told nothing about the
structure, gets most of the way from "last value" to the noise floor.

    python examples/time_series_forecast.py           # under a minute on 2 cores
    python examples/time_series_forecast.py --quick   # a few seconds
"""

import argparse
import time

import numpy as np

import fastrnn as fr

WINDOW = 48
NOISE = 0.15          # innovation standard deviation of the AR(1) noise
PHI = 0.7             # AR(1) coefficient


def make_series(length, rng):
    t = np.arange(length)
    amplitude = 1.0 + 0.4 * np.sin(2 * np.pi * t / 400.0)
    signal = amplitude * np.sin(2 * np.pi * t / 24.0) + 0.5 * np.sin(2 * np.pi * t / 7.5 + 1.0)
    noise = np.zeros(length)
    shocks = rng.normal(0.0, NOISE, length)
    for i in range(1, length):
        noise[i] = PHI * noise[i - 1] + shocks[i]
    return signal + noise


def windows(series):
    """(N, WINDOW, 1) inputs and the (N,) values that follow each window."""
    idx = np.arange(WINDOW)[None, :] + np.arange(len(series) - WINDOW)[:, None]
    return series[idx][..., None], series[WINDOW:]


def scores(truth, predicted):
    rmse = float(np.sqrt(np.mean((truth - predicted) ** 2)))
    r2 = 1.0 - float(np.sum((truth - predicted) ** 2) / np.sum((truth - truth.mean()) ** 2))
    return r2, rmse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short series, few epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    length, epochs = (1500, 6) if args.quick else (6000, 25)

    series = make_series(length, rng)
    cut = int(length * 0.8)
    mean, std = series[:cut].mean(), series[:cut].std()
    scaled = (series - mean) / std                     # standardise with training statistics
    X_train, y_train = windows(scaled[:cut])
    X_test, y_test = windows(scaled[cut - WINDOW:])    # test windows may look back into training
    print(f"{len(X_train)} training windows of {WINDOW} steps, {len(X_test)} test windows")

    model = fr.SequenceRegressor(cell="lstm", hidden_size=48, seed=args.seed)
    start = time.perf_counter()
    model.fit(X_train, y_train, epochs=epochs, batch_size=32, lr=3e-3, validation_split=0.1,
              verbose=0 if args.quick else 1)
    print(f"trained in {time.perf_counter() - start:.1f} s")

    unscale = lambda z: z * std + mean                 # noqa: E731 - report in original units
    truth = unscale(y_test)
    results = {"LSTM": unscale(model.predict(X_test)),
               "training mean": np.full_like(truth, mean),
               "last value": unscale(X_test[:, -1, 0])}
    A = np.c_[X_train[:, :, 0], np.ones(len(X_train))]
    coefficients = np.linalg.lstsq(A, y_train, rcond=None)[0]
    results["linear AR(48)"] = unscale(np.c_[X_test[:, :, 0], np.ones(len(X_test))] @ coefficients)
    for name, predicted in results.items():
        r2, rmse = scores(truth, predicted)
        print(f"  {name:>14}: R^2 {r2:6.3f}, RMSE {rmse:.3f}")
    print(f"  noise floor: RMSE {NOISE:.3f} (the unpredictable shock of each step)")


if __name__ == "__main__":
    main()
