"""Training toolkit: the fit loop, callbacks, history and checkpoints.

    trainer = fr.Trainer(model, fr.optim.Adam(model.modules(), lr=1e-3),
                         clip_norm=1.0, callbacks=[EarlyStopping(patience=2)])
    history = trainer.fit(loader, epochs=20, validation_split=0.1)
    trainer.save_checkpoint("run.npz")          # ... later, in a new process:
    trainer.fit(loader, epochs=30, validation_split=0.1, resume_from="run.npz")

See ``fastrnn.training.trainer`` for the model protocol the trainer drives.
"""

from .callbacks import (Callback, CSVLogger, EarlyStopping, LambdaCallback,
                        LearningRateScheduler, ModelCheckpoint)
from .checkpoint import Checkpoint, load_checkpoint, restore_checkpoint, save_checkpoint
from .history import History
from .trainer import Trainer

__all__ = ["Trainer", "History", "Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger",
           "LearningRateScheduler", "LambdaCallback", "Checkpoint", "save_checkpoint",
           "load_checkpoint", "restore_checkpoint"]
