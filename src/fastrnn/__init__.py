"""fastrnn: fast CPU recurrent neural networks (RNN, LSTM, GRU).

Task models (one line to create, fit, predict, save)::

    import fastrnn as fr
    clf = fr.SequenceClassifier(cell="gru", epochs=5)  # also LanguageModel, Seq2Seq,
    clf.fit(texts, labels)             # SequenceTagger, SequenceRegressor; -> clf
    clf.history_.plot()
    clf.predict(new_texts)
    clf.save("clf.npz"); fr.load("clf.npz")

Layers with explicit forward/backward, for your own stacks::

    rnn = fr.RNN(input_size=32, hidden_size=64)
    out, h_n = rnn(x)                  # x: (T, B, 32) float32
    d_x, d_h0 = rnn.backward(d_out)    # parameter gradients in rnn.grads

plus fr.Jordan (output feedback), fr.online (RTRL / online truncated BPTT),
fr.Embedding / fr.Linear / fr.Dropout, fused losses, fr.optim, fr.data,
fr.text, fr.Trainer; the ``fastrnn`` command line (``fastrnn --help``).
"""

from . import _process

with _process.limited_openmp_spinning():     # libgomp reads its settings as it loads
    from ._kernels import _dispatch  # noqa: F401  (loads the kernels, and libgomp)
_process.tune_malloc_if_asked()

from ._io import get_load_limits, set_load_limits
from ._threads import (blas_info, get_num_threads, kernel_levels, openmp_enabled,
                       set_num_threads, show_config)
from .layers import GRU, LSTM, RNN, Attention, Dropout, Embedding, Jordan, Linear, Module
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from . import data, metrics, online, onnx, optim, text, training  # noqa: E402  (submodules: fr.optim, ...)
from .optim import clip_grad_norm, clip_grad_value
from .text import Vocab
from .training import CSVLogger, EarlyStopping, History, ModelCheckpoint, Trainer
from .tasks import (LanguageModel, NotFittedError, Seq2Seq, SequenceClassifier,
                    SequenceRegressor, SequenceTagger, from_bytes, load)
from . import distributed  # noqa: E402  (fr.distributed; mpi4py/dask load only when used)

from ._version import __version__

__all__ = [
    # layers
    "RNN", "LSTM", "GRU", "Jordan", "Attention", "Linear", "Embedding", "Dropout", "Module",
    # losses, optimizers, clipping
    "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "optim", "online", "clip_grad_norm",
    "clip_grad_value",
    # data, text, training
    "data", "text", "Vocab", "metrics", "training", "Trainer", "distributed", "History",
    "EarlyStopping", "ModelCheckpoint", "CSVLogger",
    # task models
    "LanguageModel", "SequenceClassifier", "SequenceTagger", "Seq2Seq", "SequenceRegressor",
    "NotFittedError", "load", "from_bytes", "onnx", "set_load_limits", "get_load_limits",
    # runtime
    "set_num_threads", "get_num_threads", "openmp_enabled", "blas_info", "kernel_levels",
    "show_config", "__version__",
]
