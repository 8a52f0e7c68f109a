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
import logging
import sys
from typing import Sequence

import numpy as np
import torch

from .config import UniterModelConfig
from .data import ImgDb, TxtDb
from .evaluate import _resolve
from .isda import annotated_pairs, load_tokenizer, object_level
from .model import UniterForRetrieval, load_checkpoint
from .plotting import draw_object_attention

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m integrations.uniter.visualize",
                                description="Draw object-level text/image self-attention heatmaps of one "
                                            "image-caption pair for one or more checkpoints (paper Fig. 7).")
    p.add_argument("--config", help="original training config JSON")
    p.add_argument("--checkpoint", action="append", required=True, help="weights; repeat for several rows")
    p.add_argument("--label", action="append", help="row title for each --checkpoint (same order)")
    p.add_argument("--entities", required=True, help="Flickr30k Entities directory")
    p.add_argument("--vocab", required=True, help="WordPiece vocab.txt of the txt_db")
    p.add_argument("--image", help="Flickr30k image id or img_db key (default: the first annotated pair)")
    p.add_argument("--caption", help="txt_db caption id (default: the image's first annotated caption)")
    p.add_argument("--model-config", help="model config JSON (default: the config's model_config)")
    p.add_argument("--txt-db")
    p.add_argument("--img-db")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--output", default="object_attention.png", help="PNG path")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    labels = args.label or [f"checkpoint {i + 1}" for i in range(len(args.checkpoint))]
    if len(labels) != len(args.checkpoint):
        parser.error(f"give one --label per --checkpoint ({len(args.checkpoint)}), got {len(labels)}")
    cfg, txt_path, img_path, model_config, _ = _resolve(args, parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    txt_db = TxtDb(txt_path, max_txt_len=-1)
    img_db = ImgDb(img_path, conf_th=cfg.conf_th, max_bb=cfg.max_bb, min_bb=cfg.min_bb, compressed=cfg.compressed_db)
    images = [args.image] if args.image else None
    pair = None
    for candidate in annotated_pairs(txt_db, img_db, args.entities, load_tokenizer(args.vocab),
                                     iou_threshold=args.iou, images=images):
        if args.caption is None or candidate.txt_id == args.caption:
            pair = candidate
            break
    if pair is None:
        what = f"image {args.image!r}" if args.image else "the split"
        parser.error(f"no caption of {what} with objects in both modalities"
                     + (f" and id {args.caption!r}" if args.caption else ""))
    device = torch.device(args.device)
    texts, imgs, values = [], [], []
    for ckpt in args.checkpoint:
        model = UniterForRetrieval(UniterModelConfig.from_json(model_config))
        load_checkpoint(model, ckpt)
        model.to(device).eval()
        t, v, isda_value = object_level(model, pair, device)
        texts.append(t)
        imgs.append(v)
        values.append(isda_value)
    titles = [f"{label} (ISDa {value:.3f})" for label, value in zip(labels, values)]
    path = draw_object_attention(np.stack(texts), np.stack(imgs), pair.groups.names, titles=titles,
                                 path=args.output, suptitle=f"\"{pair.sentence.text}\"")
    print(f"wrote {path} (caption {pair.txt_id}, image {pair.img_fname}, {len(pair.groups)} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
