"""Optimizer and learning-rate schedule of the original recipe.

- ``optim_impl="torch"`` (default): ``torch.optim.AdamW``, ``betas`` from the
  config (0.9, 0.98), ``eps = 1e-6`` (the default of UNITER's own AdamW),
  weight decay on every trainable weight except biases and the weights of
  every ``nn.LayerNorm``.
- ``optim_impl="uniter"``: the original optimizer exactly: :class:`UniterAdamW`
  (UNITER's update rule) and UNITER's parameter groups, which match *names*
  (``bias``, ``LayerNorm.weight``) and so also decay the image embedder's
  ``img_layer_norm``/``pos_layer_norm`` weights.
- The two AdamW updates differ in two places: UNITER adds ``eps`` to
  ``sqrt(v)`` *before* the bias correction (an effective epsilon of
  ``eps / sqrt(1 - beta2^t)``: 7.1e-6 at the first update with beta2 = 0.98,
  falling to 1e-6 after a few hundred updates) where ``torch.optim.AdamW``
  adds it after; and UNITER decays the weights *after* the update (``p -= lr
  * weight_decay * p`` on the updated value) where torch decays them before.
- ``optim: "adam"`` / ``"adamax"`` select ``torch.optim.Adam`` / ``Adamax``
  with the same groups (weight decay as L2 there, as in the original).
- Learning rate at update ``u`` (1-based): ``lr * u / warmup`` during the
  warm-up, then ``lr * (total - u) / (total - warmup)``, floored at ``1e-8``
  (UNITER's ``get_lr_sched``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer", "UniterAdamW", "WarmupLinear", "build_scheduler", "ADAM_EPS",
           "OPTIM_IMPLS"]

#: epsilon of UNITER's AdamW
ADAM_EPS = 1e-6
#: whose optimizer: PyTorch's AdamW and LayerNorm modules exempt, or UNITER's update and name-based groups
OPTIM_IMPLS = ("torch", "uniter")


def param_groups(model: nn.Module, weight_decay: float, impl: str = "torch") -> list[dict]:
    """Two groups: decayed weights, and biases + LayerNorm weights (no decay); frozen ones left out.

    ``impl="torch"`` exempts every ``nn.LayerNorm``; ``impl="uniter"`` exempts
    what UNITER's names say (``bias``, ``LayerNorm.weight``), as the original.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        if impl == "torch" and isinstance(module, nn.LayerNorm):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = ("bias" in name or "LayerNorm.weight" in name) if impl == "uniter" else name.endswith("bias")
        (plain if exempt or id(p) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


class UniterAdamW(torch.optim.Optimizer):
    """UNITER's AdamW update rule (``optim_impl="uniter"``).

    For a parameter ``p`` with gradient ``g`` at update ``t`` (1-based)::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
        p = p - lr * weight_decay * p            # after the update, on the updated p

    The state (``step``, ``exp_avg``, ``exp_avg_sq``) is a plain ``state_dict``
    and survives checkpoints.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = ADAM_EPS,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"need lr, eps, weight_decay >= 0 and betas in [0, 1), got lr={lr}, eps={eps}, "
                             f"weight_decay={weight_decay}, betas={tuple(betas)}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        if p.grad.is_sparse:
            raise RuntimeError("UniterAdamW does not support sparse gradients")
        state = self.state[p]
        if not state:
            state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        state["step"] += 1
        (b1, b2), t, lr = group["betas"], state["step"], group["lr"]
        state["exp_avg"].mul_(b1).add_(p.grad, alpha=1.0 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
        step_size = lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        p.addcdiv_(state["exp_avg"], state["exp_avg_sq"].sqrt().add_(group["eps"]), value=-step_size)
        if group["weight_decay"] > 0:
            p.add_(p, alpha=-lr * group["weight_decay"])


def build_optimizer(model: nn.Module, *, optim: str = "adamw", learning_rate: float = 5e-5,
                    betas=(0.9, 0.98), weight_decay: float = 0.01, impl: str = "torch") -> torch.optim.Optimizer:
    """The optimizer named by the config key ``optim``, as PyTorch's (``impl="torch"``) or UNITER's implementation."""
    if impl not in OPTIM_IMPLS:
        raise ValueError(f"impl must be one of {OPTIM_IMPLS}, got {impl!r}")
    groups = param_groups(model, weight_decay, impl)
    betas = tuple(float(b) for b in betas)
    if optim == "adamw":
        if impl == "uniter":
            return UniterAdamW(groups, lr=learning_rate, betas=betas, eps=ADAM_EPS)
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
