"""ViLT as the engine's model: ``transformers.ViltForImageAndTextRetrieval`` with the IAIS inputs.

ViLT's joint sequence, as its own embeddings build it::

    [CLS] w1 .. wn [SEP] [PAD] ..  |  [IMG-CLS] p1 .. pm  [patch pads] ..
    <------- max_text_len ------->    <------ 1 + M (M: patches of the batch) ----->

The image part comes from the model's own ``visual_embed``: the patches of
each image (with their interpolated position embeddings) and a mask of the
ones on real pixels; ViLT samples ``max_image_length`` of them when an image
has more, and pads images with fewer with masked patches. :class:`ViltRetrieval`
embeds each distinct image of a batch once and then puts its patches in one
fixed order, the real ones first, row by row (attention does not depend on the
order of positions once their embeddings are added, so the scores are ViLT's;
the fixed order only makes patch positions predictable):
patch ``(r, c)`` of an image with ``C`` patch columns, all kept, sits at
``max_text_len + 1 + r * C + c``.

The IAIS items of a row (what :func:`iaisreg.iais` calls L and V):

- **text** (L): the word pieces, positions ``1 .. len - 2`` (no ``[CLS]``,
  ``[SEP]`` or padding);
- **image** (V): the real patches, i.e. the image part of the embeddings' own
  mask without the image ``[CLS]``: no patch on padded pixels, no sampling pad.

The scores are the last layer's ``Q K^T / sqrt(d_head)``, before the mask,
recomputed with autograd from that layer's input by a hook
(:class:`iaisreg.torch.ScoreCapture`) for the rows asked for only.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import nn

from iaisreg.torch import ScoreCapture

from ..retrieval.checkpoint import CheckpointError, read_state_dict
from ..retrieval.protocol import RetrievalOutput

__all__ = ["ViltRetrieval", "item_masks", "load_vilt", "load_weights", "first_line"]

logger = logging.getLogger("integrations.vilt")


class _RowScores(ScoreCapture):
    """:class:`ScoreCapture` of the last layer for some batch rows only."""

    def __init__(self, model: nn.Module, module: nn.Module, rows: torch.Tensor) -> None:
        super().__init__(model, module=module)
        self.rows = rows

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        super()._hook(module, (hidden[self.rows],), {})


def item_masks(attention_mask: torch.Tensor, image_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The IAIS text and image items of rows of ViLT's joint sequence.

    Args:
        attention_mask: ``(P, T)`` the text mask (``[CLS] w.. [SEP]`` then padding).
        image_mask: ``(P, 1 + M)`` the embeddings' image mask (image ``[CLS]`` first).

    Returns:
        ``(text, image)``, ``(P, T + 1 + M)`` booleans.

    >>> t, v = item_masks(torch.tensor([[1, 1, 1, 1, 0]]), torch.tensor([[1, 1, 1, 0]]))
    >>> t.int().tolist(), v.int().tolist()
    ([[0, 1, 1, 0, 0, 0, 0, 0, 0]], [[0, 0, 0, 0, 0, 0, 1, 1, 0]])
    """
    if attention_mask.dim() != 2 or image_mask.dim() != 2 or attention_mask.shape[0] != image_mask.shape[0]:
        raise ValueError(f"attention_mask must be (P, T) and image_mask (P, 1 + M), got shapes "
                         f"{tuple(attention_mask.shape)} and {tuple(image_mask.shape)}")
    real = attention_mask.bool()
    pos = torch.arange(real.shape[1], device=real.device)
    length = real.sum(1, keepdim=True)
    words = real & (pos > 0) & (pos < length - 1)
    patches = image_mask.bool().clone()
    patches[:, 0] = False
    return torch.cat([words, torch.zeros_like(patches)], 1), torch.cat([torch.zeros_like(words), patches], 1)


class ViltRetrieval(nn.Module):
    """The plug-in's model around ``ViltForImageAndTextRetrieval`` (see the module docstring).

    ``forward(input_ids, attention_mask, token_type_ids, pixel_values,
    pixel_mask, image_index, scores_rows=None) -> RetrievalOutput``: text
    inputs ``(B, T)``, pixels of the ``U`` distinct images ``(U, 3, H, W)`` /
    ``(U, H, W)``, ``image_index`` ``(B,)``; logits ``(B,)`` (ViLT's
    ``rank_output``), and for ``scores_rows`` ``(P,)`` the scores
    ``(P, heads, N, N)`` with the item masks ``(P, N)``, ``N = T + 1 + M``.

    The state dict is that of the wrapped model under ``model.``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def last_attention(self) -> nn.Module:
        """The last layer's self-attention (its ``query``/``key`` make the scores)."""
        return self.model.vilt.encoder.layer[-1].attention.attention

    def embed_images(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ViLT's image embeddings ``(U, 1 + M, D)`` and mask ``(U, 1 + M)``, real patches first, row-major."""
        embeddings = self.model.vilt.embeddings
        x, mask, (patch_index, (height, width)) = embeddings.visual_embed(
            pixel_values, pixel_mask, max_image_length=self.model.config.max_image_length)
        patches = mask[:, 1:].long()
        key = (1 - patches) * (height * width) + patch_index[..., 0] * width + patch_index[..., 1]
        order = key.argsort(dim=1)
        ordered = x[:, 1:].gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return torch.cat([x[:, :1], ordered], 1), torch.cat([mask[:, :1], patches.gather(1, order)], 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                pixel_values: torch.Tensor, pixel_mask: torch.Tensor, image_index: torch.Tensor,
                scores_rows: torch.Tensor | None = None) -> RetrievalOutput:
        image_embeds, image_mask = self.embed_images(pixel_values, pixel_mask)
        image_embeds, image_mask = image_embeds[image_index], image_mask[image_index]
        capture = (_RowScores(self.model, self.last_attention, scores_rows) if scores_rows is not None
                   else contextlib.nullcontext())
        with capture:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             image_embeds=image_embeds, pixel_mask=image_mask)
        logits = out.logits.squeeze(-1)
        if scores_rows is None:
            return RetrievalOutput(logits)
        text, image = item_masks(attention_mask[scores_rows], image_mask[scores_rows])
        return RetrievalOutput(logits, capture.scores, text, image)


def first_line(err: BaseException) -> str:
    """The first line of an error's message (loaders' errors run over many lines)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_vilt(path: str, *, pretrained: bool = True, dropout: float | None = None,
              max_image_length: int | None = None) -> ViltRetrieval:
    """The ViLT retrieval model of a Hugging Face directory or hub id, wrapped.

    Args:
        path: a ``save_pretrained`` directory or a hub id.
        pretrained: load its weights (False: its config only, random weights,
            e.g. when a checkpoint is loaded next).
        dropout: sets both dropout probabilities (None: the config's).
        max_image_length: overrides the config's (None: keep it).

    Raises ``FileNotFoundError`` (one line) when nothing loads from ``path``.
    """
    from transformers import ViltConfig, ViltForImageAndTextRetrieval

    overrides: dict[str, Any] = {}
    if dropout is not None:
        overrides.update(hidden_dropout_prob=float(dropout), attention_probs_dropout_prob=float(dropout))
    if max_image_length is not None:
        overrides["max_image_length"] = int(max_image_length)
    try:
        config = ViltConfig.from_pretrained(path, **overrides)
        if not pretrained:
            return ViltRetrieval(ViltForImageAndTextRetrieval(config))
        return ViltRetrieval(ViltForImageAndTextRetrieval.from_pretrained(path, config=config))
    except OSError as err:
        raise FileNotFoundError(f"cannot load a ViLT model from {path!r}: {first_line(err)}") from None


def load_weights(model: ViltRetrieval, path: str) -> None:
    """Load a state dict file (``.pt``/``.bin`` or ``.safetensors``) into ``model``.

    Accepts the weights a fine-tuning run saves (``model.``-prefixed) and a
    bare ``ViltForImageAndTextRetrieval`` state dict; every key must match
    (``CheckpointError`` naming the file otherwise, also for a file that
    cannot be read: :func:`~integrations.retrieval.checkpoint.read_state_dict`).
    """
    state = read_state_dict(path)
    target = model if all(k.startswith("model.") for k in state) else model.model
    try:
        target.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: not weights of this ViLT model ({first_line(err)})") from None
