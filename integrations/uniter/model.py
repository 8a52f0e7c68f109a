"""UNITER for image-text retrieval, loading the original checkpoints unchanged.

Module and parameter names follow the original code (and hence Hugging Face
``BertModel`` below ``uniter.``)::

    uniter.embeddings.{word,position,token_type}_embeddings, .LayerNorm
    uniter.img_embeddings.{img_linear, img_layer_norm, pos_linear, pos_layer_norm,
                           mask_embedding, LayerNorm}
    uniter.encoder.layer.{i}.attention.self.{query,key,value}
    uniter.encoder.layer.{i}.attention.output.{dense,LayerNorm}
    uniter.encoder.layer.{i}.intermediate.dense, .output.{dense,LayerNorm}
    uniter.pooler.dense, itm_output, rank_output

The text embeddings, the attention output, feed-forward and pooler modules are
Hugging Face ``transformers``' BERT modules (same names, same math). Attention
runs through :func:`torch.nn.functional.scaled_dot_product_attention`. Only the
last layer, and only for the batch rows named in ``scores_rows``, computes
``Q K^T / sqrt(d_head)`` explicitly; those scores (before the mask) are what the
IAIS loss consumes, and the same scores produce that layer's output, so data
flows one way. The model is a plug-in model of the retrieval engine: it returns
:class:`~integrations.retrieval.RetrievalOutput`, with the IAIS item masks of
the scored rows.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import (BertEmbeddings, BertIntermediate, BertOutput, BertPooler,
                                                    BertSelfOutput)

from ..retrieval.checkpoint import read_state_dict
from ..retrieval.protocol import RetrievalOutput
from .config import UniterModelConfig
from .data.collate import item_masks

__all__ = [
    "IMG_DIM", "UniterForRetrieval", "UniterModel", "RetrievalOutput", "LoadReport",
    "read_checkpoint", "convert_state_dict", "load_checkpoint", "build_model", "bert_config",
]

logger = logging.getLogger(__name__)

#: width of the released BUTD region features
IMG_DIM = 2048
#: pre-training heads present in the released checkpoints, unused by retrieval
IGNORED_PREFIXES = ("cls.", "feat_regress.", "region_classifier.")


def bert_config(config: UniterModelConfig) -> BertConfig:
    """The Hugging Face ``BertConfig`` of the same sizes (LayerNorm eps 1e-12, pad id 0)."""
    return BertConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                      num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
                      intermediate_size=config.intermediate_size, hidden_act=config.hidden_act,
                      hidden_dropout_prob=config.hidden_dropout_prob,
                      attention_probs_dropout_prob=config.attention_probs_dropout_prob,
                      max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
                      layer_norm_eps=1e-12, pad_token_id=0)


class UniterImageEmbeddings(nn.Module):
    """``LN(img_linear(feat)) + LN(pos_linear(box7)) + token_type[1]``, LayerNorm, dropout.

    ``mask_embedding`` (masked-region pre-training) exists for state-dict
    compatibility only; retrieval never uses it, so it is frozen.
    """

    def __init__(self, config: UniterModelConfig, img_dim: int) -> None:
        super().__init__()
        self.img_linear = nn.Linear(img_dim, config.hidden_size)
        self.img_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.pos_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.pos_linear = nn.Linear(7, config.hidden_size)
        self.mask_embedding = nn.Embedding(2, img_dim, padding_idx=0)
        self.mask_embedding.weight.requires_grad_(False)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, img_feat: torch.Tensor, img_pos_feat: torch.Tensor, type_embedding: torch.Tensor,
                img_index: torch.Tensor | None = None) -> torch.Tensor:
        """``(U, R, img_dim)``, ``(U, R, 7)``, ``(H,)`` -> ``(B, R, H)``.

        Without ``img_index``, ``U = B``; with it, row ``b`` uses image
        ``img_index[b]``, embedded once however many rows share it (dropout
        still draws a separate mask per row).
        """
        emb = (self.img_layer_norm(self.img_linear(img_feat))
               + self.pos_layer_norm(self.pos_linear(img_pos_feat)) + type_embedding)
        emb = self.LayerNorm(emb)
        if img_index is not None:
            emb = emb.index_select(0, img_index)
        return self.dropout(emb)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention; SDPA for all rows, explicit scores for some."""

    def __init__(self, config: UniterModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_size).transpose(1, 2)  # (B, heads, N, d)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor,
                scores_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend.

        Args:
            hidden: ``(B, N, H)``.
            key_mask: ``(B, 1, 1, N)`` bool, True where a key may be attended to.
            scores_rows: optional ``(P,)`` LongTensor of batch rows whose scores
                are computed explicitly and returned.

        Returns:
            ``(context (B, N, H), scores (P, heads, N, N) or None)``; the scores
            are ``Q K^T / sqrt(d_head)`` before masking.
        """
        b, n, h = hidden.shape
        q, k, v = (self._heads(proj(hidden)) for proj in (self.query, self.key, self.value))
        p = self.dropout_prob if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)
        scores = None
        if scores_rows is not None:
            qs, ks, vs = (t.index_select(0, scores_rows) for t in (q, k, v))
            scores = torch.matmul(qs, ks.transpose(-1, -2)) / math.sqrt(self.head_size)
            masked = scores.float().masked_fill(~key_mask.index_select(0, scores_rows),
                                                torch.finfo(torch.float32).min)
            probs = F.dropout(torch.softmax(masked, dim=-1), p=p, training=self.training)
            rows_context = torch.matmul(probs.to(vs.dtype), vs)
            context = context.index_copy(0, scores_rows, rows_context.to(context.dtype))
        return context.transpose(1, 2).reshape(b, n, h), scores


class BertAttention(nn.Module):
    """Self-attention then ``BertSelfOutput`` (dense, dropout, residual, LayerNorm)."""

    def __init__(self, config: UniterModelConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(bert_config(config))

    def forward(self, hidden, key_mask, scores_rows=None):
        context, scores = self.self(hidden, key_mask, scores_rows)
        return self.output(context, hidden), scores


class BertLayer(nn.Module):
    """Post-LN transformer layer (attention, residual+LN, FFN, residual+LN)."""

    def __init__(self, config: UniterModelConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(bert_config(config))
        self.output = BertOutput(bert_config(config))

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor,
                scores_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, N, H)`` -> ``((B, N, H), scores (P, heads, N, N) or None)``."""
        attended, scores = self.attention(hidden, key_mask, scores_rows)
        return self.output(self.intermediate(attended), attended), scores


class UniterEncoder(nn.Module):
    def __init__(self, config: UniterModelConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden, key_mask, scores_rows=None):
        """Run all layers; only the last one is asked for scores."""
        scores = None
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            hidden, scores = layer(hidden, key_mask, scores_rows if i == last else None)
        return hidden, scores


class UniterModel(nn.Module):
    """Embeddings + encoder + pooler (the ``uniter.`` part of a checkpoint)."""

    def __init__(self, config: UniterModelConfig, img_dim: int = IMG_DIM) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(bert_config(config))
        self.img_embeddings = UniterImageEmbeddings(config, img_dim)
        self.encoder = UniterEncoder(config)
        self.pooler = BertPooler(bert_config(config))

    def embed(self, input_ids, position_ids, img_feat, img_pos_feat, gather_index=None, img_index=None):
        """Joint embeddings ``(B, N, H)`` in the compact layout (see ``data.collate``).

        Text: word + token type 0 + position, LayerNorm, dropout (BERT's embeddings).
        """
        txt = self.embeddings(input_ids=input_ids, position_ids=position_ids,
                              token_type_ids=torch.zeros_like(input_ids))
        img = self.img_embeddings(img_feat, img_pos_feat, self.embeddings.token_type_embeddings.weight[1],
                                  img_index)
        joint = torch.cat([txt, img], dim=1)
        if gather_index is None:
            return joint
        index = gather_index.unsqueeze(-1).expand(-1, -1, joint.shape[-1])
        return torch.gather(joint, 1, index)


def _check_batch(input_ids, position_ids, img_feat, img_pos_feat, attn_masks, gather_index, img_index, img_dim):
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    b, t = input_ids.shape
    if position_ids.dim() != 2 or position_ids.shape[1] != t or position_ids.shape[0] not in (1, b):
        raise ValueError(f"position_ids must be (1, {t}) or ({b}, {t}), got {tuple(position_ids.shape)}")
    u = "U" if img_index is not None else b
    if img_feat.dim() != 3 or (img_index is None and img_feat.shape[0] != b) or img_feat.shape[2] != img_dim:
        raise ValueError(f"img_feat must be ({u}, R, {img_dim}), got {tuple(img_feat.shape)}")
    if img_index is not None and (img_index.dim() != 1 or img_index.shape[0] != b or img_index.dtype != torch.long):
        raise ValueError(f"img_index must be a ({b},) LongTensor, got {img_index.dtype} of shape "
                         f"{tuple(img_index.shape)}")
    r = img_feat.shape[1]
    if tuple(img_pos_feat.shape) != tuple(img_feat.shape[:2]) + (7,):
        raise ValueError(f"img_pos_feat must be ({img_feat.shape[0]}, {r}, 7), got {tuple(img_pos_feat.shape)}")
    if attn_masks.dim() != 2 or attn_masks.shape[0] != b:
        raise ValueError(f"attn_masks must be ({b}, N), got {tuple(attn_masks.shape)}")
    n = attn_masks.shape[1]
    if gather_index is None:
        if n != t + r:
            raise ValueError(f"without gather_index, attn_masks must be ({b}, {t + r}), got {tuple(attn_masks.shape)}")
    elif tuple(gather_index.shape) != (b, n):
        raise ValueError(f"gather_index must match attn_masks ({b}, {n}), got {tuple(gather_index.shape)}")


class UniterForRetrieval(nn.Module):
    """UNITER with the retrieval head ``rank_output = Linear(H, 1)``.

    ``itm_output = Linear(H, 2)`` (the pre-training matching head) is kept for
    checkpoint compatibility and as the initialisation of ``rank_output``; it
    is frozen, so DDP finds no unused trainable parameter.

    Example:
        >>> from integrations.uniter.config import UniterModelConfig
        >>> from integrations.uniter.data import collate_pairs
        >>> cfg = UniterModelConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2,
        ...                         num_attention_heads=2, intermediate_size=64)
        >>> model = UniterForRetrieval(cfg, img_dim=16).eval()
        >>> batch = collate_pairs([(torch.tensor([101, 150, 102]), torch.rand(4, 16), torch.rand(4, 7)),
        ...                        (torch.tensor([101, 160, 170, 102]), torch.rand(2, 16), torch.rand(2, 7))])
        >>> out = model(**batch, scores_rows=torch.tensor([1]))
        >>> out.logits.shape, out.scores.shape
        (torch.Size([2]), torch.Size([1, 2, 7, 7]))
        >>> out.text_mask.int().tolist(), out.image_mask.int().tolist()  # the IAIS items of row 1
        ([[0, 1, 1, 0, 0, 0, 0]], [[0, 0, 0, 0, 1, 1, 0]])
    """

    def __init__(self, config: UniterModelConfig, img_dim: int = IMG_DIM) -> None:
        super().__init__()
        if not isinstance(config, UniterModelConfig):
            raise TypeError(f"config must be a UniterModelConfig, got {type(config).__name__}")
        if isinstance(img_dim, bool) or not isinstance(img_dim, int) or img_dim < 1:
            raise ValueError(f"img_dim must be an int >= 1, got {img_dim!r}")
        self.config = config
        self.img_dim = img_dim
        self.uniter = UniterModel(config, img_dim)
        self.itm_output = nn.Linear(config.hidden_size, 2)
        self.rank_output = nn.Linear(config.hidden_size, 1)
        self.apply(self._init_weights)
        self.itm_output.requires_grad_(False)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def init_rank_output_from_itm(self) -> None:
        """``rank_output`` := row 1 ("match") of ``itm_output``."""
        with torch.no_grad():
            self.rank_output.weight.copy_(self.itm_output.weight[1:])
            self.rank_output.bias.copy_(self.itm_output.bias[1:])

    def encode(self, input_ids: torch.Tensor, position_ids: torch.Tensor, img_feat: torch.Tensor,
               img_pos_feat: torch.Tensor, attn_masks: torch.Tensor, gather_index: torch.Tensor | None = None, *,
               scores_rows: torch.Tensor | None = None, img_index: torch.Tensor | None = None,
               **_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pooled joint representation ``(B, H)`` and the last-layer scores of ``scores_rows``.

        The arguments are those of :meth:`forward` (other batch keys are ignored);
        the heads (``rank_output`` for retrieval, ``itm_output`` for image-text
        matching) are applied to the pooled output.
        """
        _check_batch(input_ids, position_ids, img_feat, img_pos_feat, attn_masks, gather_index, img_index,
                     self.img_dim)
        if scores_rows is not None and (scores_rows.dim() != 1 or scores_rows.dtype != torch.long):
            raise ValueError(f"scores_rows must be a 1-d LongTensor of batch rows, got "
                             f"{scores_rows.dtype} of shape {tuple(scores_rows.shape)}")
        hidden = self.uniter.embed(input_ids, position_ids, img_feat, img_pos_feat, gather_index, img_index)
        hidden, scores = self.uniter.encoder(hidden, attn_masks.bool()[:, None, None, :], scores_rows)
        return self.uniter.pooler(hidden), scores

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, img_feat: torch.Tensor,
                img_pos_feat: torch.Tensor, attn_masks: torch.Tensor,
                gather_index: torch.Tensor | None = None, *, scores_rows: torch.Tensor | None = None,
                img_index: torch.Tensor | None = None, txt_lens: torch.Tensor | None = None,
                num_bbs: torch.Tensor | None = None) -> RetrievalOutput:
        """Score (caption, image) pairs.

        Args:
            input_ids: ``(B, T)`` ``[CLS] + ids + [SEP]``, padded with 0.
            position_ids: ``(1, T)`` or ``(B, T)``.
            img_feat: ``(B, R, img_dim)``; img_pos_feat: ``(B, R, 7)``.
            attn_masks: ``(B, N)``, 1 for real positions of the joint sequence.
            gather_index: ``(B, N)`` compact-layout index (None: text then regions,
                ``N = T + R``).
            scores_rows: optional ``(P,)`` LongTensor of batch rows whose
                last-layer attention scores are returned.
            img_index: optional ``(B,)`` LongTensor; when given, ``img_feat``
                and ``img_pos_feat`` hold ``U`` distinct images ``(U, R, ...)``
                and row ``b`` pairs its text with image ``img_index[b]``. Same
                result as repeating the images, without copying them.
            txt_lens, num_bbs: ``(B,)`` text lengths (with ``[CLS]``/``[SEP]``)
                and region counts; with them the output carries the IAIS item
                masks of the scored rows.

        Returns:
            :class:`RetrievalOutput`: ``logits (B,)``; with ``scores_rows``,
            ``scores (P, heads, N, N)`` and, given ``txt_lens``/``num_bbs``, the
            ``(P, N)`` text-item and image-item masks.
        """
        pooled, scores = self.encode(input_ids, position_ids, img_feat, img_pos_feat, attn_masks, gather_index,
                                     scores_rows=scores_rows, img_index=img_index)
        logits = self.rank_output(pooled).squeeze(-1)
        if scores is None or txt_lens is None or num_bbs is None:
            return RetrievalOutput(logits, scores)
        text_mask, image_mask = item_masks(txt_lens[scores_rows], num_bbs[scores_rows], scores.shape[-1],
                                           compact=gather_index is not None, max_tl=input_ids.shape[1])
        return RetrievalOutput(logits, scores, text_mask, image_mask)


# ----------------------------------------------------------------- checkpoints


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did.

    Attributes:
        missing: model keys the checkpoint did not provide (left as initialised).
        unexpected: checkpoint keys the model has no place for (dropped).
        ignored: pre-training head keys dropped on purpose.
        renamed: ``{old: new}`` for ``gamma``/``beta`` LayerNorm names.
        rank_output_from_itm: True when ``rank_output`` was initialised from
            row 1 of ``itm_output`` (checkpoint without ``rank_output.weight``).
    """

    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    renamed: dict = field(default_factory=dict)
    rank_output_from_itm: bool = False


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` onto the CPU.

    ``.safetensors`` files go through :mod:`safetensors`; anything else through
    ``torch.load(weights_only=True)`` (plain ``torch.save`` state dicts, as
    released). A file that cannot be read, or holds something else, is a
    :class:`~integrations.retrieval.checkpoint.CheckpointError` naming it.
    """
    return read_state_dict(path)


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Map original key names onto this module's names.

    Strips a DDP ``module.`` prefix, renames LayerNorm ``gamma``/``beta`` to
    ``weight``/``bias`` and drops the pre-training heads.
    """
    report = LoadReport()
    out: dict[str, torch.Tensor] = {}
    strip = bool(state) and all(k.startswith("module.") for k in state)
    for key, value in state.items():
        name = key[len("module."):] if strip else key
        if name.startswith(IGNORED_PREFIXES):
            report.ignored.append(name)
            continue
        head, _, last = name.rpartition(".")
        if last in ("gamma", "beta"):
            new = f"{head}.{'weight' if last == 'gamma' else 'bias'}"
            report.renamed[name] = new
            name = new
        out[name] = value
    return out, report


def load_checkpoint(model: UniterForRetrieval, checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
                    *, init_rank_output: bool = True) -> LoadReport:
    """Load an original (or our own) checkpoint into ``model``.

    Args:
        model: the model to fill (its dtype is kept: float16 checkpoints are
            cast to the model's parameter dtype).
        checkpoint: a path (``.pt``/``.bin``/``.safetensors``) or a state dict.
        init_rank_output: when the checkpoint has no ``rank_output.weight``
            (a pre-training checkpoint), initialise ``rank_output`` from row 1
            of ``itm_output``. A fine-tuned ``rank_output`` is never touched
            (the original inference script tested for the key ``rank_output``,
            which never exists, and so re-initialised it).

    Returns:
        A :class:`LoadReport`; missing and unexpected keys are also logged.

    Raises:
        ValueError: an encoder key (anything under ``uniter.`` except the unused
            ``mask_embedding``) is missing, or a tensor has the wrong shape.
    """
    source = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "<state dict>"
    raw = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    state, report = convert_state_dict(raw)
    own = model.state_dict()

    if init_rank_output and "rank_output.weight" not in state and "itm_output.weight" in state:
        itm_w, itm_b = state["itm_output.weight"], state.get("itm_output.bias")
        state["rank_output.weight"] = itm_w[1:]
        if itm_b is not None and "rank_output.bias" not in state:
            state["rank_output.bias"] = itm_b[1:]
        report.rank_output_from_itm = True

    report.unexpected = sorted(k for k in state if k not in own)
    report.missing = sorted(k for k in own if k not in state)
    required_missing = [k for k in report.missing
                        if k.startswith("uniter.") and "mask_embedding" not in k]
    if required_missing:
        raise ValueError(f"{source}: checkpoint lacks {len(required_missing)} encoder key(s), e.g. "
                         f"{required_missing[:5]}")
    for key, value in state.items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(f"{source}: key {key!r} has shape {tuple(value.shape)}, the model "
                             f"(config {model.config.source}) expects {tuple(own[key].shape)}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if report.missing:
        logger.warning("%s: keys left as initialised: %s", source, report.missing)
    if report.unexpected:
        logger.warning("%s: unexpected keys dropped: %s", source, report.unexpected)
    if report.rank_output_from_itm:
        logger.info("%s: rank_output initialised from itm_output row 1", source)
    return report


def build_model(config: UniterModelConfig | str | os.PathLike, checkpoint=None, *,
                img_dim: int = IMG_DIM) -> tuple[UniterForRetrieval, LoadReport | None]:
    """Model from a config (object or JSON path), optionally loading a checkpoint."""
    if not isinstance(config, UniterModelConfig):
        config = UniterModelConfig.from_json(config)
    model = UniterForRetrieval(config, img_dim=img_dim)
    report = load_checkpoint(model, checkpoint) if checkpoint is not None else None
    return model, report
