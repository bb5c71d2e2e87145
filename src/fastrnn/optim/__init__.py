"""Optimizers, gradient clipping and learning-rate schedules.

    opt = fr.optim.Adam([rnn, head], lr=1e-3)
    sched = fr.optim.CosineAnnealingLR(opt, T_max=epochs)
    ...backward...
    fr.optim.clip_grad_norm([rnn, head], max_norm=1.0)
    opt.step(); opt.zero_grad()
    sched.step()                      # once per epoch (or per batch)

Update rules, defaults and schedule formulas are PyTorch's (``torch.optim``,
``torch.optim.lr_scheduler``, ``torch.nn.utils.clip_grad_*``), plus an ``l1``
penalty on every optimizer.
"""

from .clip import clip_grad_norm, clip_grad_value
from .optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .schedules import (CosineAnnealingLR, ExponentialLR, LinearWarmup, ReduceLROnPlateau,
                        StepLR)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
           "clip_grad_norm", "clip_grad_value",
           "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearWarmup",
           "ReduceLROnPlateau"]
