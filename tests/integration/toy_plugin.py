"""A second model plug-in for the engine: a one-layer single-stream matcher on generated data.

It shows what a plug-in owes :mod:`integrations.retrieval` and nothing more:
a :class:`~integrations.retrieval.Pairs` subclass, a collate function and a
model returning :class:`~integrations.retrieval.RetrievalOutput`. It imports
nothing from ``integrations.uniter``.

    python tests/integration/toy_plugin.py OUT_DIR   # trains with IAIS, evaluates, writes OUT_DIR/toy.json
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from integrations.retrieval import Pairs, RetrievalOutput, TrainOptions, train

VOCAB, IMG_DIM, CLASSES = 30, 8, 6


class ToyPairs(Pairs):
    """Images of a few classes (noisy class prototypes as 2-5 items) and captions naming their class."""

    def __init__(self, n_images: int, captions_per_image: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        prototypes = np.random.default_rng(0).normal(size=(CLASSES, IMG_DIM))
        self.classes = rng.integers(0, CLASSES, n_images)
        self.features = [prototypes[k] + 0.3 * rng.normal(size=(int(rng.integers(2, 6)), IMG_DIM))
                         for k in self.classes]
        self.tokens = [[1 + int(k)] * int(rng.integers(1, 3)) + rng.integers(CLASSES + 1, VOCAB, 2).tolist()
                       for k in self.classes for _ in range(captions_per_image)]
        caption_image = [i for i in range(n_images) for _ in range(captions_per_image)]
        super().__init__([f"c{c}" for c in range(len(caption_image))], [f"i{i}" for i in range(n_images)],
                         caption_image)

    def load_caption(self, c: int) -> torch.Tensor:
        return torch.tensor(self.tokens[c], dtype=torch.long)

    def load_image(self, i: int) -> torch.Tensor:
        return torch.tensor(self.features[i], dtype=torch.float32)


def toy_collate(captions: Sequence[torch.Tensor], images: Sequence[torch.Tensor],
                image_index: Sequence[int]) -> dict:
    """Text padded to ``T``, then image items padded to ``R``: the joint sequence is ``T + R`` long."""
    return {"input_ids": pad_sequence(list(captions), batch_first=True),
            "txt_len": torch.tensor([len(c) for c in captions]),
            "img_feat": pad_sequence(list(images), batch_first=True),
            "n_items": torch.tensor([len(f) for f in images]),
            "img_index": torch.as_tensor(list(image_index), dtype=torch.long)}


class ToyMatcher(nn.Module):
    """Embeddings, one multi-head self-attention layer over ``[text; image]``, mean-pooled match logit."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.word = nn.Embedding(VOCAB, dim)
        self.item = nn.Linear(IMG_DIM, dim)
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.head = nn.Linear(dim, 1)

    def forward(self, input_ids, txt_len, img_feat, n_items, img_index, scores_rows=None) -> RetrievalOutput:
        b, t = input_ids.shape
        x = torch.cat([self.word(input_ids), self.item(img_feat)[img_index]], 1)
        pos = torch.arange(x.shape[1], device=x.device)
        text = pos < txt_len[:, None]
        image = (pos >= t) & (pos < t + n_items[img_index][:, None])
        q, k, v = (f(x).view(b, -1, self.heads, x.shape[-1] // self.heads).transpose(1, 2)
                   for f in (self.query, self.key, self.value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        probs = scores.masked_fill(~(text | image)[:, None, None, :], float("-inf")).softmax(-1)
        out = (probs @ v).transpose(1, 2).reshape(b, -1, x.shape[-1])
        valid = (text | image).float()[..., None]
        logits = self.head((out * valid).sum(1) / valid.sum(1)).squeeze(-1)
        if scores_rows is None:
            return RetrievalOutput(logits)
        return RetrievalOutput(logits, scores[scores_rows], text[scores_rows], image[scores_rows])


class ToyPlugin:
    """The plug-in: a training split, a test split, the model and its collate."""

    collate = staticmethod(toy_collate)

    def train_pairs(self, *, image_cache: int) -> ToyPairs:
        return ToyPairs(12, 2, seed=1)

    def eval_pairs(self, split: str) -> ToyPairs | None:
        return ToyPairs(6, 2, seed=2) if split == "test" else None

    def build_model(self, *, dropout: float, pretrained: bool) -> ToyMatcher:
        return ToyMatcher()

    def describe(self) -> dict:
        return {"model": "toy"}


def toy_options(out_dir: str, **changes) -> TrainOptions:
    """A few quick steps with IAIS on the positive pairs."""
    settings = dict(output_dir=out_dir, num_train_steps=4, train_batch_size=1, negative_size=5, hard_neg_size=2,
                    inf_minibatch_size=4, learning_rate=1e-2, warmup_steps=1, valid_steps=1000, n_workers=0,
                    iais="singular", progress=False, tensorboard=False, quiet=True, threads=1)
    return TrainOptions(**{**settings, **changes})


if __name__ == "__main__":
    result = train(toy_options(sys.argv[1]), ToyPlugin())
    uniter = sorted(m for m in sys.modules if m.startswith("integrations.uniter"))
    with open(os.path.join(sys.argv[1], "toy.json"), "w", encoding="utf-8") as handle:
        json.dump({"finished": result.finished, "history": result.history, "test_metrics": result.test_metrics,
                   "uniter_modules": uniter}, handle)
