"""Tiny models for the Trainer and checkpoint tests.

``Regressor`` is the docs' example of the model protocol (an LSTM + Linear
stack with a numpy MSE); ``Scripted`` reports losses from a script so
callback logic can be checked against known numbers."""

import numpy as np

import fastrnn as fr
from fastrnn.data import BatchLoader
from fastrnn.losses import MSELoss


# -- models ------------------------------------------------------------------------------

class Regressor:
    """LSTM -> output at each row's last step -> Linear(1); numpy MSE loss."""

    def __init__(self, features=3, hidden=8, num_layers=1, dropout=0.0, seed=0,
                 dtype="float64"):
        self.lstm = fr.LSTM(features, hidden, num_layers=num_layers, dropout=dropout,
                            seed=seed, dtype=dtype)
        self.head = fr.Linear(hidden, 1, seed=seed + 1, dtype=dtype)
        self.epochs_begun = []

    def modules(self):
        return [self.lstm, self.head]

    def on_epoch_begin(self, epoch, training):
        self.epochs_begun.append((epoch, training))

    def _forward(self, batch):
        out, _ = self.lstm(batch.inputs.astype(self.lstm.dtype), lengths=batch.lengths)
        rows = np.arange(len(batch.lengths))
        pred = self.head(out[batch.lengths - 1, rows])[:, 0]
        return out, rows, pred

    def train_batch(self, batch):
        out, rows, pred = self._forward(batch)
        err = pred - batch.targets
        d_pred = (2.0 / len(err)) * err
        d_last = self.head.backward(d_pred[:, None].astype(out.dtype))
        d_out = np.zeros_like(out)
        d_out[batch.lengths - 1, rows] = d_last
        self.lstm.backward(d_out, input_grad=False)
        return {"loss": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}, len(err)

    def evaluate_batch(self, batch):
        _, _, pred = self._forward(batch)
        err = pred - batch.targets
        return {"loss": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err)))}, len(err)


class LossModuleRegressor(Regressor):
    """The same stack with fastrnn.losses.MSELoss (the loss computes the gradient)."""

    def train_batch(self, batch):
        out, rows, pred = self._forward(batch)
        loss, d_pred = MSELoss()(pred, batch.targets.astype(pred.dtype))
        d_out = np.zeros_like(out)
        d_out[batch.lengths - 1, rows] = self.head.backward(d_pred[:, None])
        self.lstm.backward(d_out, input_grad=False)
        return {"loss": loss}, len(pred)

    def evaluate_batch(self, batch):
        _, _, pred = self._forward(batch)
        loss, _ = MSELoss()(pred, batch.targets.astype(pred.dtype))
        return {"loss": loss}, len(pred)


def regression_data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 7, size=n)
    inputs = [rng.standard_normal((t, 3)) for t in lengths]
    targets = np.array([0.5 * x[:, 0].sum() for x in inputs])
    return inputs, targets


def loader(n=24, batch_size=6, seed=0, shuffle=True):
    inputs, targets = regression_data(n, seed)
    return BatchLoader(inputs, targets, batch_size=batch_size, shuffle=shuffle, seed=seed)


class Scripted:
    """A Linear module with fixed gradients; losses come from the batches.

    Training batches are dicts {"loss", "weight"} (optionally "acc", "grad");
    the validation loss of epoch e is ``val_script[e]``.
    """

    def __init__(self, val_script=None):
        self.lin = fr.Linear(2, 1, seed=0, dtype="float64")
        self.val_script = val_script
        self.val_epoch = None

    def modules(self):
        return [self.lin]

    def on_epoch_begin(self, epoch, training):
        if not training:
            self.val_epoch = epoch

    def train_batch(self, batch):
        self.lin.grads["weight"][...] = batch.get("grad", 1.0)
        self.lin.grads["bias"][...] = 1.0
        metrics = {"loss": batch["loss"]}
        if "acc" in batch:
            metrics["acc"] = batch["acc"]
        return metrics, batch.get("weight", 1)

    def evaluate_batch(self, batch):
        return {"loss": self.val_script[self.val_epoch]}, 1


class PerEpoch(list):
    """Batches that depend on the epoch: ``set_epoch`` swaps them in."""

    def __init__(self, scripts):
        super().__init__(scripts[0])
        self.scripts = scripts

    def set_epoch(self, epoch):
        self[:] = self.scripts[epoch]


def scripted_batches(losses, weights=None):
    weights = weights or [1] * len(losses)
    return [{"loss": l, "weight": w} for l, w in zip(losses, weights)]


def weights_of(model):
    return [m.state_dict() for m in model.modules()]


def assert_weights_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name], err_msg=name)
