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
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..entities import ObjectGroups, Sentence, check_entities_dir, object_groups, read_image_entities, \
    tokenize_caption
from ..retrieval import distributed
from ..retrieval.cli import CommandParser, run_command, setup_logging, write_text
from ..retrieval.isda import SURROGATES, isda_over_pairs
from ..retrieval.objective import SetupError
from ..retrieval.protocol import DataError
from .cli import add_split_arguments, open_split
from .data import ImgDb, TxtDb

__all__ = ["AnnotatedPair", "annotated_pairs", "isda_over_split", "load_tokenizer", "image_id", "main"]


def image_id(img_fname: str) -> str:
    """Flickr30k image id of an img_db key: ``flickr30k_1000092795.npz`` -> ``1000092795``."""
    m = re.search(r"(\d+)(?:\.\w+)?$", img_fname)
    if m is None:
        raise DataError(f"cannot read a Flickr30k image id from img_db key {img_fname!r}")
    return m.group(1)


def load_tokenizer(vocab: str) -> Any:
    """A cased WordPiece tokenizer from a ``vocab.txt`` (bert-base-cased for the released txt_dbs)."""
    if not os.path.isfile(vocab):
        raise FileNotFoundError(f"vocabulary file not found: {vocab}")
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab=vocab, do_lower_case=False)


@dataclass
class AnnotatedPair:
    """One caption with its image and the objects present in both modalities.

    An :class:`~integrations.retrieval.isda.ObjectPair`: ``caption``/``image``
    as the UNITER collate takes them, ``text_groups``/``image_groups`` the
    objects' positions in the compact joint sequence.
    """

    txt_id: str
    img_fname: str
    caption: torch.Tensor  # [CLS] + ids + [SEP]
    image: Any  # RegionFeatures
    groups: ObjectGroups
    sentence: Sentence

    @property
    def text_groups(self) -> list:
        return self.groups.text_positions

    @property
    def image_groups(self) -> list:
        return self.groups.image_positions


@dataclass
class Skipped:
    """Why captions were left out, with counts."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


def annotated_pairs(txt_db: TxtDb, img_db: ImgDb, entities: str, tokenizer: Any, *, iou_threshold: float = 0.5,
                    limit: int | None = None, skipped: Skipped | None = None,
                    images: Sequence[str] | None = None) -> Iterator[AnnotatedPair]:
    """Yield the captions of ``txt_db`` that have objects in both modalities.

    A caption is matched to the Flickr30k Entities sentence of its image whose
    WordPiece tokenisation equals its ``input_ids``. ``images`` restricts the
    pass to these img_db keys (or Flickr30k ids).
    """
    check_entities_dir(entities)
    skipped = skipped if skipped is not None else Skipped()
    wanted = None if images is None else set(images)
    n = 0
    for fname, txt_ids in txt_db.img2txts.items():
        if wanted is not None and fname not in wanted and image_id(fname) not in wanted:
            continue
        read = read_image_entities(entities, image_id(fname))
        if read is None:
            skipped.add("no Sentences/Annotations file for the image")
            continue
        sentences, annotation = read
        tokenized = [(s, tokenize_caption(s, tokenizer).input_ids) for s in sentences]
        region_boxes = np.asarray(img_db.raw(fname, fields=("norm_bb",))["norm_bb"][:img_db.num_bb(fname)],
                                  dtype=np.float64)
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
            regions = regions if regions is not None else img_db[fname]
            yield AnnotatedPair(txt_id, fname, txt_db.combine_inputs(ids), regions, groups, sentence)
            n += 1
            if limit is not None and n >= limit:
                return


def isda_over_split(model: torch.nn.Module, txt_db: TxtDb, img_db: ImgDb, entities: str, tokenizer: Any, *,
                    iou_threshold: float = 0.5, batch_size: int = 32, limit: int | None = None,
                    device: torch.device | str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Mean ISDa (and the IAIS surrogate losses) of ``model`` over a split's annotated captions."""
    from .data import collate

    skipped = Skipped()
    pairs = list(annotated_pairs(txt_db, img_db, entities, tokenizer, iou_threshold=iou_threshold, limit=limit,
                                 skipped=skipped))
    if not pairs:
        raise SetupError(f"no caption of {txt_db.path} has an object present in both modalities "
                         f"(skipped: {skipped.counts})")
    result = isda_over_pairs(model, collate, pairs, batch_size=batch_size, device=device, progress=progress)
    return {**result, "skipped": skipped.counts, "iou_threshold": iou_threshold}


def _parser() -> CommandParser:
    p = CommandParser(prog="python -m integrations.uniter.isda",
                      description="Mean ISDa (paper Eq. 9) of a UNITER checkpoint over a split, from Flickr30k "
                                  "Entities annotations, with the IAIS surrogate losses.")
    add_split_arguments(p)
    p.add_argument("--entities", required=True, help="Flickr30k Entities directory (Sentences/, Annotations/)")
    p.add_argument("--vocab", required=True, help="WordPiece vocab.txt of the txt_db (bert-base-cased)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold matching boxes to regions (default 0.5)")
    p.add_argument("--limit", type=int, help="stop after this many annotated captions")
    p.add_argument("--output", help="write the results JSON here")
    p.add_argument("--no-progress", action="store_true")
    return p


def _run(args: argparse.Namespace, split) -> int:
    device = distributed.default_device(args.device)
    check_entities_dir(args.entities)
    tokenizer = load_tokenizer(args.vocab)
    pairs = split.open()
    try:
        model = split.plugin.build_model(checkpoint=args.checkpoint).to(device)
        txt_db, img_db = pairs.sources[0]
        result = isda_over_split(model, txt_db, img_db, args.entities, tokenizer, iou_threshold=args.iou,
                                 batch_size=split.batch_size, limit=args.limit, device=device,
                                 progress=not args.no_progress)
    finally:
        pairs.close()
    result.update(checkpoint=args.checkpoint, split=args.split, txt_db=split.txt_db, img_db=split.img_db)
    text = json.dumps(result, indent=2)
    print(text)
    print(f"\nISDa {result['isda']:.4f} over {result['n_captions']} captions ({result['n_objects']} objects)",
          file=sys.stderr)
    for mode, anchor in SURROGATES:
        print(f"  L_{mode[0]}({anchor}) {result[f'iais_{mode}_{anchor}']:.4f}", file=sys.stderr)
    if args.output:
        write_text(args.output, text + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0.0 < args.iou <= 1.0:
        parser.error(f"--iou must be in (0, 1], got {args.iou}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    split = open_split(args, parser)
    setup_logging()
    return run_command(lambda: _run(args, split), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
