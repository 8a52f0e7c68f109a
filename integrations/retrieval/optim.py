"""Optimizer and learning-rate schedule of the original recipe.

- AdamW (``torch.optim.AdamW``), ``betas`` from the config (0.9, 0.98),
  ``eps = 1e-6`` (the default of UNITER's own AdamW), weight decay on every
  trainable weight except biases and LayerNorm weights. The original matched
  parameter *names* against ``LayerNorm.weight``, which missed the image
  embedder's ``img_layer_norm``/``pos_layer_norm``; here every
  ``nn.LayerNorm`` is exempt. ``torch.optim.AdamW`` applies the decay before
  the Adam update, UNITER's after it (a second-order difference).
  ``optim: "adam"`` / ``"adamax"`` select ``torch.optim.Adam`` / ``Adamax``
  with the same groups (weight decay as L2 there, as in the original).
- Learning rate at update ``u`` (1-based): ``lr * u / warmup`` during the
  warm-up, then ``lr * (total - u) / (total - warmup)``, floored at ``1e-8``
  (UNITER's ``get_lr_sched``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer", "WarmupLinear", "build_scheduler", "ADAM_EPS"]

#: epsilon of UNITER's AdamW
ADAM_EPS = 1e-6


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and biases + LayerNorm weights (no decay); frozen ones left out."""
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if name.endswith("bias") or id(p) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, *, optim: str = "adamw", learning_rate: float = 5e-5,
                    betas=(0.9, 0.98), weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """The optimizer named by the config key ``optim``."""
    groups = param_groups(model, weight_decay)
    betas = tuple(float(b) for b in betas)
    if optim == "adamw":
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=ADAM_EPS)
    if optim == "adam":
        return torch.optim.Adam(groups, lr=learning_rate, betas=betas)
    if optim == "adamax":
        return torch.optim.Adamax(groups, lr=learning_rate, betas=betas)
    raise ValueError(f"optim must be 'adamw', 'adam' or 'adamax', got {optim!r}")


class WarmupLinear:
    """Multiplier of the base learning rate for ``LambdaLR``.

    ``LambdaLR`` calls it with the number of updates done so far (0 before the
    first); the update about to happen is ``done + 1``, the original's
    ``global_step``. A callable object (not a lambda), so that the scheduler's
    ``state_dict`` holds its settings.
    """

    def __init__(self, warmup_steps: int, total_steps: int, base_lr: float) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.floor = 1e-8 / base_lr if base_lr > 0 else 0.0

    def __call__(self, done: int) -> float:
        step = done + 1
        if step < self.warmup_steps:
            factor = step / self.warmup_steps
        elif self.total_steps > self.warmup_steps:
            factor = max(0.0, (self.total_steps - step) / (self.total_steps - self.warmup_steps))
        else:
            factor = 1.0 if step <= self.total_steps else 0.0
        return max(factor, self.floor)


def build_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int,
                    total_steps: int, learning_rate: float) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :class:`WarmupLinear`; call ``.step()`` after every update."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupLinear(warmup_steps, total_steps, learning_rate))
