"""Winoground (Thrush et al., CVPR 2022) with a ViLT retrieval model: text, image and group scores.

    python -m integrations.vilt.winoground --model dandelin/vilt-b32-finetuned-flickr30k --data winoground/

    python -m integrations.vilt.winoground --model dandelin/vilt-b32-mlm \\
        --checkpoint runs/vilt-iais/ckpt/model_step_5000_final.pt --data winoground/

``--data`` is the released dataset folder: ``examples.jsonl`` (one example a
line: ``caption_0``, ``caption_1``, ``image_0``, ``image_1``, and tags) and
``images/`` (``images.zip`` extracted: ``<image id>.png``), or a folder that
holds them under ``data/``.

With ``s(c, i)`` the match logit of caption ``c`` and image ``i`` of an
example, the paper's scores are the fractions of examples where

- **text**: ``s(0, 0) > s(1, 0)`` and ``s(1, 1) > s(0, 1)`` (each image
  prefers its caption);
- **image**: ``s(0, 0) > s(0, 1)`` and ``s(1, 1) > s(1, 0)`` (each caption
  prefers its image);
- **group**: both.

Chance is 25%, 25% and 16.67%. Results are also given per ``collapsed_tag``.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..retrieval.cli import run_command, setup_logging
from ..retrieval.mining import collate_pairs, to_device
from .cli import ScoreOptions, device_of, parse_command, scoring_precision, write_report
from .config import ViltSettings
from .data import DataFileError, KarpathyImage, ViltPairs
from .plugin import ViltPlugin

__all__ = ["WinogroundOptions", "WinogroundExample", "find_layout", "read_examples", "winoground_pairs",
           "score_examples", "winoground_scores", "main"]

IMAGE_SUFFIXES = ("", ".png", ".jpg", ".jpeg")


@dataclass
class WinogroundOptions:
    """Where the dataset is."""

    _argument_group_name = "Winoground"

    data: str | None = field(default=None, metadata={
        "help": "the dataset folder: examples.jsonl and images/ (or data/examples.jsonl, data/images/); required",
        "metavar": "DIR"})


@dataclass(frozen=True)
class WinogroundExample:
    """One example: two captions, two image ids (caption ``j`` describes image ``j``) and its tag."""

    id: Any
    captions: tuple[str, str]
    images: tuple[str, str]
    tag: str = ""


def find_layout(folder: str) -> tuple[str, str]:
    """``(examples.jsonl, images folder)`` of a dataset folder (directly or under ``data/``)."""
    for base in (folder, os.path.join(folder, "data")):
        examples, images = os.path.join(base, "examples.jsonl"), os.path.join(base, "images")
        if os.path.isfile(examples):
            if not os.path.isdir(images):
                hint = " (extract images.zip there)" if os.path.isfile(os.path.join(base, "images.zip")) else ""
                raise FileNotFoundError(f"no images/ folder next to {examples}{hint}")
            return examples, images
    raise FileNotFoundError(f"no examples.jsonl in {folder} or {os.path.join(folder, 'data')}")


def _example(line: str, where: str) -> WinogroundExample:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{where}: not valid JSON ({err})") from None
    keys = ("caption_0", "caption_1", "image_0", "image_1")
    if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item[k] for k in keys):
        raise DataFileError(f"{where}: an example needs the non-empty strings {', '.join(keys)}")
    return WinogroundExample(item.get("id"), (item["caption_0"], item["caption_1"]), (item["image_0"], item["image_1"]),
                             str(item.get("collapsed_tag") or item.get("tag") or ""))


def read_examples(path: str) -> list[WinogroundExample]:
    """The examples of an ``examples.jsonl``; malformed lines are errors naming the file and line."""
    with open(path, encoding="utf-8") as handle:
        examples = [_example(line, f"{path}, line {n}") for n, line in enumerate(handle, 1) if line.strip()]
    if not examples:
        raise DataFileError(f"{path}: no example")
    return examples


def _image_name(images: str, image_id: str) -> str:
    for suffix in IMAGE_SUFFIXES:
        if os.path.isfile(os.path.join(images, image_id + suffix)):
            return image_id + suffix
    raise FileNotFoundError(f"image file not found: {os.path.join(images, image_id)}.png")


def winoground_pairs(plugin: ViltPlugin, examples: Sequence[WinogroundExample], images: str) -> ViltPairs:
    """The examples as a split: caption and image ``2e + j`` are caption ``j`` and image ``j`` of example ``e``."""
    entries = [KarpathyImage(_image_name(images, ex.images[j]), "winoground", (ex.captions[j],))
               for ex in examples for j in range(2)]
    return plugin.open_entries(entries, root=images, name="winoground")


@torch.no_grad()
def score_examples(model: torch.nn.Module, plugin: ViltPlugin, pairs: ViltPairs, *, batch_size: int = 64,
                   device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(n_examples, 2, 2)`` match logits ``s[e, caption, image]`` (each image processed once)."""
    device, n = torch.device(device), pairs.n_images // 2
    per_batch = max(1, batch_size // 4)
    out = []
    model.eval()
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    for lo in range(0, n, per_batch):
        examples = range(lo, min(n, lo + per_batch))
        captions = [2 * e + c for e in examples for c in range(2) for _ in range(2)]
        images = [2 * e + i for e in examples for _ in range(2) for i in range(2)]
        batch = to_device(collate_pairs(pairs, captions, images, plugin.collate), device)
        with autocast:
            out.append(model(**batch).logits.float().view(-1, 2, 2).cpu())
    return torch.cat(out)


def winoground_scores(scores: torch.Tensor) -> dict[str, float]:
    """Text, image and group scores (fractions) of ``(n, 2, 2)`` scores ``s[e, caption, image]``.

    >>> winoground_scores(torch.tensor([[[2.0, 1.0], [0.0, 3.0]], [[1.0, 2.0], [0.0, 3.0]]]))
    {'text': 1.0, 'image': 0.5, 'group': 0.5}
    """
    if scores.dim() != 3 or tuple(scores.shape[1:]) != (2, 2):
        raise ValueError(f"scores must be (n, 2, 2), got shape {tuple(scores.shape)}")
    text, image, group = _correct(scores)
    return {"text": text.double().mean().item(), "image": image.double().mean().item(),
            "group": group.double().mean().item()}


def _correct(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    text = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    image = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    return text, image, text & image


def _by_tag(examples: Sequence[WinogroundExample], scores: torch.Tensor) -> dict[str, dict]:
    rows: dict[str, list[int]] = defaultdict(list)
    for e, ex in enumerate(examples):
        if ex.tag:
            rows[ex.tag].append(e)
    return {tag: {"n": len(r), **winoground_scores(scores[r])} for tag, r in sorted(rows.items())}


def _run(plugin: ViltPlugin, options: ScoreOptions, data_dir: str) -> int:
    examples_path, images = find_layout(data_dir)
    examples = read_examples(examples_path)
    pairs = winoground_pairs(plugin, examples, images)
    device = device_of(options)
    precision, amp_dtype = scoring_precision(options, device)
    model = plugin.build_model(checkpoint=options.checkpoint).to(device)
    scores = score_examples(model, plugin, pairs, batch_size=options.batch_size, device=device, amp_dtype=amp_dtype)
    result = winoground_scores(scores)
    write_report({**result, "n_examples": len(examples), "by_tag": _by_tag(examples, scores),
                  "model": plugin.data.model, "checkpoint": options.checkpoint, "data": data_dir,
                  "precision": precision, "scores": {str(ex.id): s.tolist() for ex, s in zip(examples, scores)}},
                 options.output)
    print(f"\nWinoground over {len(examples)} examples: text {100 * result['text']:.2f}, image "
          f"{100 * result['image']:.2f}, group {100 * result['group']:.2f}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    (_, options, wino), plugin, debug = parse_command(
        argv, ViltSettings, ScoreOptions, WinogroundOptions, prog="python -m integrations.vilt.winoground",
        description="Winoground text, image and group scores of a Hugging Face ViLT retrieval model.",
        needs=("data",))
    setup_logging()
    return run_command(lambda: _run(plugin, options, wino.data), debug=debug)


if __name__ == "__main__":
    sys.exit(main())
