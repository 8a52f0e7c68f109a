"""Object-level self-attention pictures (paper Figure 7).

    python -m integrations.uniter.visualize --config train.json \\
        --checkpoint baseline.pt --checkpoint iais.pt --label "without IAIS" --label "with IAIS" \\
        --entities flickr30k_entities/ --vocab vocab.txt --image 1000092795 --output fig7.png

For one image-caption pair it draws the object-level text self-attention and
image self-attention heatmaps side by side, one row per checkpoint, with the
object names on both axes. These are the matrices ISDa compares.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np

from ..retrieval import distributed
from ..retrieval.cli import CommandParser, run_command, setup_logging
from ..retrieval.isda import object_attention
from ..retrieval.objective import SetupError
from ..retrieval.plotting import draw_object_attention
from .cli import add_split_arguments, open_split
from .data import collate
from .isda import annotated_pairs, load_tokenizer

__all__ = ["main"]


def _parser() -> CommandParser:
    p = CommandParser(prog="python -m integrations.uniter.visualize",
                      description="Draw object-level text/image self-attention heatmaps of one image-caption pair "
                                  "for one or more checkpoints (paper Fig. 7).")
    add_split_arguments(p, checkpoints="many")
    p.add_argument("--label", action="append", help="row title for each --checkpoint (same order)")
    p.add_argument("--entities", required=True, help="Flickr30k Entities directory")
    p.add_argument("--vocab", required=True, help="WordPiece vocab.txt of the txt_db")
    p.add_argument("--image", help="Flickr30k image id or img_db key (default: the first annotated pair)")
    p.add_argument("--caption", help="txt_db caption id (default: the image's first annotated caption)")
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--output", default="object_attention.png", help="PNG path")
    return p


def _find_pair(args: argparse.Namespace, pairs):
    txt_db, img_db = pairs.sources[0]
    for candidate in annotated_pairs(txt_db, img_db, args.entities, load_tokenizer(args.vocab),
                                     iou_threshold=args.iou, images=[args.image] if args.image else None):
        if args.caption is None or candidate.txt_id == args.caption:
            return candidate
    what = f"image {args.image!r}" if args.image else "the split"
    raise SetupError(f"no caption of {what} with objects in both modalities"
                            + (f" and id {args.caption!r}" if args.caption else ""))


def _draw(args: argparse.Namespace, split, labels: list[str]) -> int:
    device = distributed.default_device(args.device or "cpu")
    pairs = split.open()
    try:
        pair = _find_pair(args, pairs)
        texts, imgs, values = [], [], []
        for ckpt in args.checkpoint:
            model = split.plugin.build_model(checkpoint=ckpt).to(device)
            t, v, isda_value = object_attention(model, collate, pair, device)
            texts.append(t)
            imgs.append(v)
            values.append(isda_value)
    finally:
        pairs.close()
    titles = [f"{label} (ISDa {value:.3f})" for label, value in zip(labels, values)]
    path = draw_object_attention(np.stack(texts), np.stack(imgs), pair.groups.names, titles=titles,
                                 path=args.output, suptitle=f"\"{pair.sentence.text}\"")
    print(f"wrote {path} (caption {pair.txt_id}, image {pair.img_fname}, {len(pair.groups)} objects)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    labels = args.label or [f"checkpoint {i + 1}" for i in range(len(args.checkpoint))]
    if len(labels) != len(args.checkpoint):
        parser.error(f"give one --label per --checkpoint ({len(args.checkpoint)}), got {len(labels)}")
    split = open_split(args, parser)
    setup_logging()
    return run_command(lambda: _draw(args, split, labels), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
