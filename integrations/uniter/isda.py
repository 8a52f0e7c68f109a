"""ISDa of a UNITER checkpoint over a split, with Flickr30k Entities
annotations (paper Sec. 2.2-2.3 and Table 2).

    python -m integrations.uniter.isda --config train-itm-flickr-base-8gpu-hn.json \\
        --checkpoint model.pt --entities flickr30k_entities/ --vocab bert-base-cased-vocab.txt

For every caption of the split the command reads the Flickr30k Entities
sentence that tokenises to the caption's ``input_ids`` and the image's
boxes. It matches the boxes to the img_db's detected regions by IoU, runs the
model, and computes ISDa (:func:`iaisreg.isda`) on the last layer's scores.
It also computes the four IAIS surrogate losses (singular and distributed,
each with anchor V and anchor L) on the same scores. Captions with no object
present in both modalities are skipped and counted.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

import iaisreg.torch as it

from .config import UniterModelConfig
from .data import ImgDb, TxtDb, collate_pairs, item_masks
from .entities import (Annotation, ObjectGroups, Sentence, object_groups, parse_annotations,
                       parse_sentences, tokenize_caption)
from .evaluate import _resolve
from .model import UniterForRetrieval, load_checkpoint

__all__ = ["AnnotatedPair", "annotated_pairs", "pair_scores", "isda_over_split", "load_tokenizer", "image_id",
           "main"]

log = logging.getLogger(__name__)

#: the four surrogate losses reported next to ISDa (paper Table 2)
SURROGATES = tuple((mode, anchor) for mode in ("singular", "distributed") for anchor in ("V", "L"))


def image_id(img_fname: str) -> str:
    """Flickr30k image id of an img_db key: ``flickr30k_1000092795.npz`` -> ``1000092795``."""
    m = re.search(r"(\d+)(?:\.\w+)?$", img_fname)
    if m is None:
        raise ValueError(f"cannot read a Flickr30k image id from img_db key {img_fname!r}")
    return m.group(1)


def load_tokenizer(vocab: str) -> Any:
    """A cased WordPiece tokenizer from a ``vocab.txt`` (bert-base-cased for the released txt_dbs)."""
    if not os.path.isfile(vocab):
        raise FileNotFoundError(f"vocabulary file not found: {vocab}")
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab=vocab, do_lower_case=False)


@dataclass
class AnnotatedPair:
    """One caption with its image and the objects present in both modalities."""

    txt_id: str
    img_fname: str
    input_ids: torch.Tensor  # [CLS] + ids + [SEP]
    features: torch.Tensor
    boxes: torch.Tensor
    groups: ObjectGroups
    sentence: Sentence


@dataclass
class Skipped:
    """Why captions were left out, with counts."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


def _read_entities(entities: str, img_id: str) -> tuple[list[Sentence], Annotation] | None:
    sent = os.path.join(entities, "Sentences", f"{img_id}.txt")
    ann = os.path.join(entities, "Annotations", f"{img_id}.xml")
    if not (os.path.isfile(sent) and os.path.isfile(ann)):
        return None
    return parse_sentences(sent), parse_annotations(ann)


def annotated_pairs(txt_db: TxtDb, img_db: ImgDb, entities: str, tokenizer: Any, *, iou_threshold: float = 0.5,
                    limit: int | None = None, skipped: Skipped | None = None,
                    images: Sequence[str] | None = None) -> Iterator[AnnotatedPair]:
    """Yield the captions of ``txt_db`` that have objects in both modalities.

    A caption is matched to the Flickr30k Entities sentence of its image whose
    WordPiece tokenisation equals its ``input_ids``. ``images`` restricts the
    pass to these img_db keys (or Flickr30k ids).
    """
    if not os.path.isdir(os.path.join(entities, "Sentences")):
        raise FileNotFoundError(f"no Sentences/ folder in the Flickr30k Entities directory {entities}")
    skipped = skipped if skipped is not None else Skipped()
    wanted = None if images is None else set(images)
    n = 0
    for fname, txt_ids in txt_db.img2txts.items():
        if wanted is not None and fname not in wanted and image_id(fname) not in wanted:
            continue
        read = _read_entities(entities, image_id(fname))
        if read is None:
            skipped.add("no Sentences/Annotations file for the image")
            continue
        sentences, annotation = read
        tokenized = [(s, tokenize_caption(s, tokenizer).input_ids) for s in sentences]
        raw = img_db.raw(fname, fields=("norm_bb",))
        nbb = img_db.num_bb(fname)
        region_boxes = np.asarray(raw["norm_bb"][:nbb], dtype=np.float64)
        regions = None
        for txt_id in txt_ids:
            ids = txt_db.input_ids(txt_id)
            sentence = next((s for s, toks in tokenized if list(toks) == list(ids)), None)
            if sentence is None:
                skipped.add("caption matches no sentence of the image")
                continue
            groups = object_groups(sentence, annotation, region_boxes, tokenizer, iou_threshold=iou_threshold,
                                   normalized=True, text_offset=1, image_offset=len(ids) + 2)
            if len(groups) == 0:
                skipped.add("no object present in both modalities")
                continue
            if regions is None:
                regions = img_db[fname]
            yield AnnotatedPair(txt_id, fname, txt_db.combine_inputs(ids), regions.features, regions.boxes,
                                groups, sentence)
            n += 1
            if limit is not None and n >= limit:
                return


@torch.no_grad()
def pair_scores(model: UniterForRetrieval, pairs: Sequence[AnnotatedPair], device: torch.device) -> dict[str, Any]:
    """Run ``model`` on ``pairs``: last-layer scores ``(B, H, N, N)`` and the item masks."""
    batch = collate_pairs([(p.input_ids, p.features, p.boxes) for p in pairs])
    batch = {k: v.to(device) for k, v in batch.items()}
    out = model(**batch, scores_rows=torch.arange(len(pairs), device=device))
    n = batch["attn_masks"].shape[1]
    text_mask, image_mask = item_masks(batch["txt_lens"], batch["num_bbs"], n)
    return {"scores": out.scores.float(), "text_mask": text_mask, "image_mask": image_mask,
            "logits": out.logits.float()}


def object_level(model: UniterForRetrieval, pair: AnnotatedPair, device: torch.device) -> tuple[np.ndarray, np.ndarray, float]:
    """Object-level text and image self-attention ``(K, K)`` of one pair, and its ISDa."""
    r = pair_scores(model, [pair], device)
    res = it.isda(r["scores"], [pair.groups.text_positions], [pair.groups.image_positions],
                  text_mask=r["text_mask"], image_mask=r["image_mask"], return_matrices=True)
    return res.text[0, 0].cpu().numpy(), res.image[0, 0].cpu().numpy(), float(res.value[0])


def isda_over_split(model: UniterForRetrieval, txt_db: TxtDb, img_db: ImgDb, entities: str, tokenizer: Any, *,
                    iou_threshold: float = 0.5, batch_size: int = 32, limit: int | None = None,
                    device: torch.device | str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Mean ISDa (and the IAIS surrogate losses) of ``model`` over a split."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    model.eval()
    skipped = Skipped()
    values: list[float] = []
    surrogate: dict[str, list[float]] = {f"iais_{m}_{a}": [] for m, a in SURROGATES}
    n_objects = 0

    def flush(chunk: list[AnnotatedPair]) -> None:
        nonlocal n_objects
        r = pair_scores(model, chunk, device)
        kw = dict(text_mask=r["text_mask"], image_mask=r["image_mask"])
        v = it.isda(r["scores"], [p.groups.text_positions for p in chunk],
                    [p.groups.image_positions for p in chunk], **kw)
        values.extend(v.cpu().tolist())
        for mode, anchor in SURROGATES:
            loss = it.iais(r["scores"], mode=mode, anchor=anchor, reduction="none", **kw)
            surrogate[f"iais_{mode}_{anchor}"].extend(loss.cpu().tolist())
        n_objects += sum(len(p.groups) for p in chunk)

    chunk: list[AnnotatedPair] = []
    bar = tqdm(desc="ISDa", unit="caption", disable=not progress)
    for pair in annotated_pairs(txt_db, img_db, entities, tokenizer, iou_threshold=iou_threshold, limit=limit,
                                skipped=skipped):
        chunk.append(pair)
        if len(chunk) == batch_size:
            flush(chunk)
            bar.update(len(chunk))
            chunk = []
    if chunk:
        flush(chunk)
        bar.update(len(chunk))
    bar.close()
    if not values:
        raise ValueError(f"no caption of {txt_db.path} has an object present in both modalities "
                         f"(skipped: {skipped.counts})")
    result = {
        "isda": float(np.mean(values)),
        "n_captions": len(values),
        "n_objects": n_objects,
        "skipped": skipped.counts,
        "iou_threshold": iou_threshold,
    }
    result.update({k: float(np.mean(v)) for k, v in surrogate.items()})
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m integrations.uniter.isda",
                                description="Mean ISDa (paper Eq. 9) of a UNITER checkpoint over a split, from "
                                            "Flickr30k Entities annotations, with the IAIS surrogate losses.")
    p.add_argument("--config", help="original training config JSON (train-itm-*-hn.json)")
    p.add_argument("--checkpoint", required=True, help="model weights (.pt or .safetensors)")
    p.add_argument("--entities", required=True, help="Flickr30k Entities directory (Sentences/, Annotations/)")
    p.add_argument("--vocab", required=True, help="WordPiece vocab.txt of the txt_db (bert-base-cased)")
    p.add_argument("--model-config", help="model config JSON (default: the config's model_config)")
    p.add_argument("--txt-db", help="txt_db directory (default: the config's <split>_txt_db)")
    p.add_argument("--img-db", help="img_db directory (default: the config's <split>_img_db)")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold matching boxes to regions (default 0.5)")
    p.add_argument("--batch-size", type=int, help="pairs per forward pass (default: inf_minibatch_size)")
    p.add_argument("--limit", type=int, help="stop after this many annotated captions")
    p.add_argument("--output", help="write the results JSON here")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0.0 < args.iou <= 1.0:
        parser.error(f"--iou must be in (0, 1], got {args.iou}")
    cfg, txt_path, img_path, model_config, batch_size = _resolve(args, parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = UniterForRetrieval(UniterModelConfig.from_json(model_config))
    load_checkpoint(model, args.checkpoint)
    model.to(device)
    txt_db = TxtDb(txt_path, max_txt_len=-1)
    img_db = ImgDb(img_path, conf_th=cfg.conf_th, max_bb=cfg.max_bb, min_bb=cfg.min_bb, compressed=cfg.compressed_db)
    result = isda_over_split(model, txt_db, img_db, args.entities, load_tokenizer(args.vocab), iou_threshold=args.iou,
                             batch_size=batch_size, limit=args.limit, device=device, progress=not args.no_progress)
    result.update(checkpoint=args.checkpoint, split=args.split, txt_db=txt_path, img_db=img_path)
    text = json.dumps(result, indent=2)
    print(text)
    print(f"\nISDa {result['isda']:.4f} over {result['n_captions']} captions ({result['n_objects']} objects)", file=sys.stderr)
    for mode, anchor in SURROGATES:
        print(f"  L_{mode[0]}({anchor}) {result[f'iais_{mode}_{anchor}']:.4f}", file=sys.stderr)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
