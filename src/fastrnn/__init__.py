"""fastrnn: fast CPU recurrent neural networks (RNN, LSTM, GRU).

Task models (one line to create, fit, predict, save)::

    import fastrnn as fr
    clf = fr.SequenceClassifier(cell="gru")   # also LanguageModel, SequenceTagger,
    history = clf.fit(texts, labels)          # Seq2Seq, SequenceRegressor
    clf.predict(new_texts)
    clf.save("clf.npz"); fr.load("clf.npz")

Layers with explicit forward/backward, for your own stacks::

    rnn = fr.RNN(input_size=32, hidden_size=64)
    out, h_n = rnn(x)                  # x: (T, B, 32) float32
    d_x, d_h0 = rnn.backward(d_out)    # parameter gradients in rnn.grads

plus fr.Embedding / fr.Linear / fr.Dropout, fused losses, fr.optim, fr.data,
fr.text, fr.Trainer; the ``fastrnn`` command line (``fastrnn --help``).
"""

from . import _process

_process.limit_openmp_spinning()     # before the kernels load libgomp
_process.keep_freed_arrays_mapped()

from ._threads import (blas_info, get_num_threads, kernel_levels, openmp_enabled,
                       set_num_threads, show_config)
from .layers import GRU, LSTM, RNN, Dropout, Embedding, Linear, Module
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from . import data, metrics, optim, text, training  # noqa: E402  (submodules: fr.optim, ...)
from .optim import clip_grad_norm, clip_grad_value
from .text import Vocab
from .training import EarlyStopping, History, ModelCheckpoint, Trainer
from .tasks import (LanguageModel, NotFittedError, Seq2Seq, SequenceClassifier,
                    SequenceRegressor, SequenceTagger, load)

__version__ = "0.1.0"

__all__ = [
    # layers
    "RNN", "LSTM", "GRU", "Linear", "Embedding", "Dropout", "Module",
    # losses, optimizers, clipping
    "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "optim", "clip_grad_norm",
    "clip_grad_value",
    # data, text, training
    "data", "text", "Vocab", "metrics", "training", "Trainer", "History", "EarlyStopping",
    "ModelCheckpoint",
    # task models
    "LanguageModel", "SequenceClassifier", "SequenceTagger", "Seq2Seq", "SequenceRegressor",
    "NotFittedError", "load",
    # runtime
    "set_num_threads", "get_num_threads", "openmp_enabled", "blas_info", "kernel_levels",
    "show_config", "__version__",
]
