"""Small PyTorch modules for the object tester (``tests/test_objects.py``),
defined at module level so that they pickle."""
from __future__ import annotations

from typing import Any

import torch

import iaisreg.torch as it

#: the options of the loss the modules hold
OPTS = dict(mode="distributed", anchor="both")


class TinyAttention(torch.nn.Module):
    """A BERT-style self-attention layer: ``query``/``key`` linears and ``num_attention_heads``."""

    def __init__(self, width: int = 8, heads: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.num_attention_heads = heads
        self.query, self.key = torch.nn.Linear(width, width), torch.nn.Linear(width, width)

    def forward(self, hidden: Any) -> Any:
        return self.query(hidden) + self.key(hidden)


class Holder(torch.nn.Module):
    """A model holding an attention layer, an ``IAISLoss`` with the paper's
    schedule and a ``ScoreCapture`` on the layer; ``forward`` returns the
    annealed loss on the captured scores."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = TinyAttention()
        self.loss = it.IAISLoss(schedule="exp", total_steps=100, **OPTS)
        self.capture = it.ScoreCapture(self, module=self.attn)

    def forward(self, hidden: Any, text: Any, image: Any, step: int) -> Any:
        self.attn(hidden)
        return self.loss(self.capture.scores, text_mask=text, image_mask=image, step=step)


def make_capture() -> it.ScoreCapture:
    attn = TinyAttention()
    return it.ScoreCapture(attn, module=attn)
