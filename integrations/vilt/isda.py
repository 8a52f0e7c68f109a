"""ISDa of a ViLT model over a split with Flickr30k Entities annotations (paper Sec. 2.2-2.3, Table 2).

    python -m integrations.vilt.isda --model dandelin/vilt-b32-finetuned-flickr30k \\
        --karpathy-json dataset_flickr30k.json --image-root flickr30k-images --entities flickr30k_entities/

An object is a visual entity of a caption (:mod:`integrations.entities`)
present in both modalities:

- **its word pieces**: the entity's phrases tokenised word by word by the
  processor's tokenizer; a caption is matched to the Entities sentence of its
  image with the same word pieces;
- **its patches**: the patches whose centre lies in one of the entity's boxes
  after the processor's resize. The resize maps the whole ``W x H`` image
  onto ``w x h`` pixels (both multiples of the patch size ``P``), so patch
  ``(r, c)``, centred at ``((c + 1/2) P, (r + 1/2) P)``, belongs to a box
  ``(x1, y1, x2, y2)`` of 0-based inclusive pixels when
  ``x1 w/W <= (c + 1/2) P <= (x2 + 1) w/W`` and likewise for ``y``.

Patch ``(r, c)`` sits at ``max_text_len + 1 + r * (w / P) + c`` of the joint
sequence (see :mod:`.model`); the model keeps every patch here. The engine
(:func:`integrations.retrieval.isda.isda_over_pairs`) runs the model and
computes :func:`iaisreg.isda` and the four IAIS surrogate losses on the last
layer's scores. Captions without such an object are skipped and counted.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..entities import check_entities_dir, phrase_token_positions, read_image_entities, tokenize_caption
from ..retrieval.cli import run_command, setup_logging
from ..retrieval.isda import SURROGATES, ObjectPair, isda_over_pairs
from ..retrieval.objective import SetupError
from ..retrieval.options import check_ranges, check_types
from .cli import ScoreOptions, device_of, parse_command, write_report
from .config import ViltData
from .data import ViltPairs
from .plugin import ViltPlugin

__all__ = ["IsdaOptions", "patch_grid", "patch_positions", "annotated_pairs", "isda_over_split", "main"]


@dataclass
class IsdaOptions:
    """The annotations and which captions are measured."""

    _argument_group_name = "ISDa"

    entities: str | None = field(default=None, metadata={
        "help": "Flickr30k Entities directory (Sentences/, Annotations/); required", "metavar": "DIR"})
    split: str = field(default="test", metadata={"help": "the split of the Karpathy file"})
    limit: int | None = field(default=None, metadata={"help": "stop after this many annotated captions",
                                                      "metavar": "N"})

    def __post_init__(self) -> None:
        check_types(self)
        check_ranges(self, {"limit": ">= 1"})


def patch_grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """``(rows, columns)`` of patches of a resized ``height x width`` image; both must be multiples of the patch."""
    if height % patch_size or width % patch_size:
        raise SetupError(f"the processor resizes to {height} x {width} pixels, not a multiple of the patch size "
                         f"{patch_size}: patches would straddle the padding (give the image processor a size_divisor "
                         f"that is a multiple of {patch_size})")
    return height // patch_size, width // patch_size


def patch_positions(boxes: Sequence[Sequence[float]], original_size: tuple[int, int], resized: tuple[int, int],
                    patch_size: int, *, offset: int = 0) -> list[int]:
    """Positions of the patches whose centre lies in one of ``boxes`` (see the module docstring).

    Args:
        boxes: ``(x1, y1, x2, y2)`` 0-based inclusive pixels of the original image.
        original_size: ``(W, H)`` of the original image; resized: ``(h, w)`` after the resize.
        offset: added to the row-major patch index (the image's first patch position).

    >>> patch_positions([(0, 0, 9, 9)], (20, 20), (32, 32), 16)
    [0]
    """
    (full_w, full_h), (h, w) = original_size, resized
    rows, cols = patch_grid(h, w, patch_size)
    sx, sy = w / full_w, h / full_h
    cx = (np.arange(cols) + 0.5) * patch_size
    cy = (np.arange(rows) + 0.5) * patch_size
    inside = np.zeros((rows, cols), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        in_y = (cy >= y1 * sy) & (cy <= (y2 + 1) * sy)
        in_x = (cx >= x1 * sx) & (cx <= (x2 + 1) * sx)
        inside |= in_y[:, None] & in_x[None, :]
    return (np.flatnonzero(inside.ravel()) + offset).tolist()


def _original_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _caption_objects(ids: list[int], sentences: list, annotation: Any, tokenizer: Any, image: torch.Tensor,
                     size: tuple[int, int], plugin: ViltPlugin) -> tuple[list, list] | str:
    """The objects of one caption as ``(text groups, image groups)``, or why there are none."""
    cls, sep = ids[0], ids[-1]
    match = next((s for s in sentences if [cls, *tokenize_caption(s, tokenizer).input_ids, sep] == ids), None)
    if match is None:
        return "caption cut at max_text_len" if len(ids) == plugin.data.max_text_len else \
            "caption matches no sentence of the image"
    offset = plugin.data.max_text_len + 1
    text, patches = [], []
    for entity, positions in phrase_token_positions(match, tokenizer).items():
        group = patch_positions(annotation.boxes.get(entity, []), size, tuple(image.shape[1:]), plugin.patch_size,
                                offset=offset)
        if group:
            text.append([p + 1 for p in positions])
            patches.append(group)
    return (text, patches) if text else "no object present in both modalities"


def annotated_pairs(plugin: ViltPlugin, pairs: ViltPairs, entities: str, *, skipped: Counter,
                    limit: int | None = None) -> Iterator[ObjectPair]:
    """The captions of ``pairs`` with objects in both modalities, as the engine's :class:`ObjectPair`."""
    check_entities_dir(entities)
    tokenizer, n = plugin.processor.tokenizer, 0
    for i, entry in enumerate(pairs.entries):
        stem = os.path.splitext(os.path.basename(entry.path))[0]
        found = read_image_entities(entities, stem)
        if found is None:
            skipped["no Sentences/Annotations file for the image"] += len(pairs.image_captions[i])
            continue
        sentences, annotation = found
        image, size = pairs.image(i), _original_size(pairs.image_path(i))
        for c in pairs.image_captions[i]:
            ids = pairs.caption(c)
            found = _caption_objects(ids, sentences, annotation, tokenizer, image, size, plugin)
            if isinstance(found, str):
                skipped[found] += 1
                continue
            yield ObjectPair(ids, image, *found)
            n += 1
            if limit is not None and n >= limit:
                return


def isda_over_split(model: torch.nn.Module, plugin: ViltPlugin, pairs: ViltPairs, entities: str, *,
                    batch_size: int = 32, limit: int | None = None, device: torch.device | str = "cpu",
                    progress: bool = True) -> dict[str, Any]:
    """Mean ISDa and the IAIS surrogate losses of ``model`` over the annotated captions of ``pairs``."""
    skipped: Counter = Counter()
    items = list(annotated_pairs(plugin, pairs, entities, skipped=skipped, limit=limit))
    if not items:
        raise SetupError(f"no caption of split {pairs.name!r} has an object present in both modalities "
                         f"(skipped: {dict(skipped)})")
    result = isda_over_pairs(model, plugin.collate, items, batch_size=batch_size, device=device, progress=progress)
    return {**result, "skipped": dict(skipped), "patch_rule": "centre in box after the resize"}


def _run(plugin: ViltPlugin, options: ScoreOptions, isda: IsdaOptions) -> int:
    device = device_of(options)
    check_entities_dir(isda.entities)
    pairs = plugin.eval_pairs(isda.split)
    if pairs is None:
        raise SetupError(f"{plugin.data.karpathy_json} has no image in split {isda.split!r}")
    model = plugin.build_model(checkpoint=options.checkpoint, max_image_length=-1).to(device)
    result = isda_over_split(model, plugin, pairs, isda.entities, batch_size=options.batch_size, limit=isda.limit,
                             device=device, progress=options.progress)
    result.update(model=plugin.data.model, checkpoint=options.checkpoint, split=isda.split)
    write_report(result, options.output)
    print(f"\nISDa {result['isda']:.4f} over {result['n_captions']} captions ({result['n_objects']} objects)",
          file=sys.stderr)
    for mode, anchor in SURROGATES:
        print(f"  L_{mode[0]}({anchor}) {result[f'iais_{mode}_{anchor}']:.4f}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    (_, options, isda), plugin, debug = parse_command(
        argv, ViltData, ScoreOptions, IsdaOptions, prog="python -m integrations.vilt.isda",
        description="Mean ISDa (paper Eq. 9) of a Hugging Face ViLT over a split of a Karpathy file, from "
                    "Flickr30k Entities annotations (objects mapped to the patches whose centre lies in their "
                    "boxes), with the IAIS surrogate losses.", needs=("karpathy_json", "image_root", "entities"))
    setup_logging()
    return run_command(lambda: _run(plugin, options, isda), debug=debug)


if __name__ == "__main__":
    sys.exit(main())
