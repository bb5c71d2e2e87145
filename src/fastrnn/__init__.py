"""fastrnn: fast CPU recurrent neural networks (RNN, LSTM, GRU).

    import fastrnn as fr
    rnn = fr.RNN(input_size=32, hidden_size=64)
    out, h_n = rnn(x)                  # x: (T, B, 32) float32
    d_x, d_h0 = rnn.backward(d_out)    # parameter gradients in rnn.grads
"""

from ._threads import blas_info, get_num_threads, openmp_enabled, set_num_threads
from .layers import GRU, LSTM, RNN, Module

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "Module", "set_num_threads", "get_num_threads",
           "openmp_enabled", "blas_info", "__version__"]
