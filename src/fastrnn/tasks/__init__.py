"""Task models: one line to create, fit, predict, save (see ``base``)."""

from .base import NotFittedError, TaskModel, from_bytes, load
from .classifier import SequenceClassifier
from .language_model import LanguageModel
from .regressor import SequenceRegressor
from .seq2seq import Seq2Seq
from .tagger import SequenceTagger

__all__ = ["TaskModel", "NotFittedError", "load", "from_bytes", "LanguageModel", "SequenceClassifier",
           "SequenceTagger", "Seq2Seq", "SequenceRegressor"]
