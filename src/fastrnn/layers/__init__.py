"""Layers with explicit forward/backward (see ``module.Module``)."""

from .attention import Attention
from .dropout import Dropout
from .embedding import Embedding
from .jordan import Jordan
from .linear import Linear
from .module import Module
from .recurrent import GRU, LSTM, RNN

__all__ = ["Module", "RNN", "LSTM", "GRU", "Jordan", "Attention", "Linear", "Embedding",
           "Dropout"]
