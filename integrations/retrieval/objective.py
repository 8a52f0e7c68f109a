"""The training objective: the margin ranking loss plus the annealed IAIS term.

Per training group (row 0 the positive pair, the rest its hard negatives)::

    rank = mean(clamp(margin + sigmoid(neg) - sigmoid(pos), 0))
    iais = iaisreg.torch.iais(scores of row 0, text_mask, image_mask, anchor=policy(direction))
    loss = rank / A + (K / G) * weight * lambda_t * iais

``A`` micro-steps are accumulated per update, ``K`` processes stand in for the
``G`` GPUs of the recipe (:func:`batch_arithmetic`). The ranking term is
divided by the accumulation count as in the original; the IAIS term is not (as
in the authors' code).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

import iaisreg
import iaisreg.torch as iais_torch

from .protocol import RetrievalOutput

__all__ = ["IAIS_MODES", "ANCHOR_POLICY", "SetupError", "GroupLoss", "Objective", "rank_loss", "iais_term",
           "batch_arithmetic"]

IAIS_MODES = ("none",) + iaisreg.OPTIONS["mode"].choices
#: the authors' anchor per sampling direction: V on from-image groups, L on from-text groups
ANCHOR_POLICY = {"image": "V", "text": "L"}


class SetupError(ValueError):
    """The settings cannot work together (e.g. fp16 on a CPU, an uneven batch split)."""


def rank_loss(logits: torch.Tensor, margin: float) -> torch.Tensor:
    """``mean(clamp(margin + s_neg - s_pos, 0))`` on sigmoid scores; row 0 is the positive."""
    scores = torch.sigmoid(logits.float())
    return torch.clamp(margin + scores[1:] - scores[0], min=0).mean()


def iais_term(out: RetrievalOutput, *, mode: str, anchor: str, variant: str) -> torch.Tensor:
    """IAIS of the rows whose scores ``out`` holds (the positive pair), on their item masks."""
    return iais_torch.iais(out.scores, text_mask=out.text_mask, image_mask=out.image_mask, mode=mode,
                           anchor=anchor, variant=variant)


def batch_arithmetic(train_batch_size: int, gpus: int, world: int) -> tuple[int, float]:
    """``(A, c)``: micro-steps per process per update and the factor on the IAIS term.

    The original recipe on ``G`` GPUs accumulates ``train_batch_size``
    micro-steps per GPU and averages the gradients over the GPUs (Horovod),
    each micro-step adding ``rank / train_batch_size + lambda_t * iais``. With
    ``K`` processes, each accumulates ``A = train_batch_size * G / K``
    micro-steps and DDP averages over ``K``; the same gradient results when a
    micro-step adds ``rank / A + (K / G) * lambda_t * iais``.

    >>> batch_arithmetic(8, 8, 2)
    (32, 0.25)
    >>> batch_arithmetic(8, 1, 1)
    (8, 1.0)
    """
    total = train_batch_size * gpus
    if total % world:
        raise SetupError(f"train_batch_size ({train_batch_size}) x num_gpus_equivalent ({gpus}) = {total} "
                         f"micro-steps per update cannot be split evenly over {world} processes")
    return total // world, world / gpus


class GroupLoss(NamedTuple):
    """The losses of one training group (0-d tensors): what is back-propagated is ``total``."""

    rank: torch.Tensor
    iais: torch.Tensor
    total: torch.Tensor


class Objective:
    """The loss of a training group, with the IAIS settings and the ``lambda_t`` schedule.

    Args:
        iais: ``"none"``, ``"singular"`` or ``"distributed"``.
        variant: ``"official"`` or ``"paper"``.
        anchor: ``"policy"`` (:data:`ANCHOR_POLICY`) or an anchor of :func:`iaisreg.iais`.
        schedule: a ``step -> lambda_t`` function; weight: a constant factor on it.
        margin: of the ranking loss; accumulation, iais_scale: from :func:`batch_arithmetic`.
    """

    def __init__(self, *, iais: str, variant: str, anchor: str, schedule, weight: float, margin: float,
                 accumulation: int, iais_scale: float) -> None:
        self.mode, self.variant, self.schedule, self.weight = iais, variant, schedule, weight
        self.anchors = ANCHOR_POLICY if anchor == "policy" else {d: anchor for d in ANCHOR_POLICY}
        self.margin, self.accumulation, self.iais_scale = margin, accumulation, iais_scale

    @property
    def uses_iais(self) -> bool:
        return self.mode != "none"

    def lam(self, step: int) -> float:
        """``weight * lambda_t`` at ``step`` (0 without IAIS)."""
        return float(self.schedule(step)) * self.weight if self.uses_iais else 0.0

    def __call__(self, out: RetrievalOutput, direction: str, lam: float) -> GroupLoss:
        r_loss = rank_loss(out.logits, self.margin)
        if self.uses_iais:
            i_loss = iais_term(out, mode=self.mode, anchor=self.anchors[direction], variant=self.variant)
        else:
            i_loss = torch.zeros((), device=out.logits.device)
        return GroupLoss(r_loss, i_loss, r_loss / self.accumulation + (self.iais_scale * lam) * i_loss)
