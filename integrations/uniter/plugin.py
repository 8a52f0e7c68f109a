"""UNITER as a model plug-in of the retrieval engine.

- :class:`UniterPairs`: a split read from the original txt_db/img_db pairs:
  captions in ``id2len.json`` order database by database, images sorted by
  name (only those some caption refers to); a caption decodes to ``[CLS] + ids
  + [SEP]``, an image to its regions;
- :class:`UniterPlugin`: the splits of a run, the model (with its starting
  weights) and the collate function (:func:`.data.collate`; with
  ``baseline_layout="original"``, :func:`.data.collate_original_from_image`
  for the batches of from-image groups).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import torch

from ..retrieval.objective import SetupError
from ..retrieval.protocol import GroupInfo, Pairs
from .config import UniterData, UniterModelConfig
from .data import CorruptRecordError, DbError, ImgDb, MissingRecordError, TxtDb, collate, collate_original_from_image
from .model import UniterForRetrieval, build_model

__all__ = ["UniterPairs", "UniterPlugin"]

logger = logging.getLogger("integrations.uniter")


class UniterPairs(Pairs):
    """The captions and images of ``(txt_db, img_db)`` sources, as the engine numbers them.

    Args:
        sources: ``[(TxtDb, ImgDb), ...]``; negatives are drawn within a source.
        model_config: when given, captions are checked against its vocabulary
            and position table.
        image_cache: decoded images kept (LRU).
    """

    def __init__(self, sources: Sequence[tuple[TxtDb, ImgDb]], *, model_config: UniterModelConfig | None = None,
                 image_cache: int = 1024) -> None:
        self.sources, self.model_config = list(sources), model_config
        caption_ids, image_ids, caption_image, counts, self._where = [], [], [], [], []
        for s, (txt_db, img_db) in enumerate(self.sources):
            fnames = sorted({txt_db.txt2img[t] for t in txt_db.ids})
            if not fnames:
                raise DbError(f"txt_db {txt_db.path} holds no caption (after the max_txt_len filter)",
                              db_path=txt_db.path)
            for fname in fnames:
                if fname not in img_db:
                    raise MissingRecordError(f"image {fname!r} (of txt_db {txt_db.path}) not in img_db {img_db.path}",
                                             db_path=img_db.path, key=fname)
            column = {fname: len(image_ids) + j for j, fname in enumerate(fnames)}
            image_ids += fnames
            caption_ids += txt_db.ids
            caption_image += [column[txt_db.txt2img[t]] for t in txt_db.ids]
            self._where += [s] * len(fnames)
            counts.append((len(txt_db.ids), len(fnames)))
        super().__init__(caption_ids, image_ids, caption_image, sources=counts, image_cache=image_cache)

    @classmethod
    def open(cls, txt_dbs: Sequence[str], img_dbs: Sequence[str], data: UniterData, *, max_txt_len: int = -1,
             **kwargs) -> "UniterPairs":
        """The split of these database paths, with ``data``'s detector setting."""
        sources = [(TxtDb(t, max_txt_len=max_txt_len), data.open_img_db(i)) for t, i in zip(txt_dbs, img_dbs)]
        return cls(sources, **kwargs)

    def load_caption(self, c: int) -> torch.Tensor:
        """``[CLS] + input_ids + [SEP]`` of caption ``c``, checked against the model's tables."""
        txt_db = self.sources[self.caption_source[c]][0]
        txt_id = self.caption_ids[c]
        tokens = txt_db.combine_inputs(txt_db.input_ids(txt_id))
        cfg = self.model_config
        if cfg is not None and int(tokens.max()) >= cfg.vocab_size:
            raise CorruptRecordError(f"txt_db {txt_db.path}: caption {txt_id!r} has token id {int(tokens.max())} "
                                     f">= vocab_size {cfg.vocab_size} of the model config", db_path=txt_db.path,
                                     key=txt_id)
        if cfg is not None and tokens.numel() > cfg.max_position_embeddings:
            raise CorruptRecordError(f"txt_db {txt_db.path}: caption {txt_id!r} has {tokens.numel()} tokens with "
                                     f"[CLS]/[SEP], more than max_position_embeddings={cfg.max_position_embeddings}",
                                     db_path=txt_db.path, key=txt_id)
        return tokens

    def load_image(self, i: int):
        """``RegionFeatures(features (nbb, D), boxes (nbb, 7))`` of image ``i``."""
        return self.sources[self._where[i]][1][self.image_ids[i]]

    def describe(self) -> dict:
        txt = [t.path for t, _ in self.sources]
        img = [i.path for _, i in self.sources]
        return {"txt_db": txt[0] if len(txt) == 1 else txt, "img_db": img[0] if len(img) == 1 else img}

    def close(self) -> None:
        for txt_db, img_db in self.sources:
            txt_db.close()
            img_db.close()


class UniterPlugin:
    """UNITER's data, model and batches for :func:`integrations.retrieval.train`.

    Args:
        data: the databases, detector setting, model config and starting weights.
        model_config: the model config (default: read from ``data.model_config``).
    """

    def __init__(self, data: UniterData, model_config: UniterModelConfig | None = None) -> None:
        if model_config is None:
            if not data.model_config:
                raise FileNotFoundError("no model config: pass --model-config (or set model_config in the config)")
            model_config = UniterModelConfig.from_json(data.model_config)
        self.data, self.model_config = data, model_config
        self._img_dim = data.img_dim

    def collate(self, captions: Sequence[torch.Tensor], images: Sequence, image_index: Sequence[int], *,
                group: GroupInfo | None = None) -> dict:
        """The batch of the pairs ``(captions[b], images[image_index[b]])`` (see :func:`.data.collate`).

        With ``baseline_layout="original"``, a batch of a from-image group is
        laid out as the authors' no-IAIS code laid out the whole candidate set
        (:func:`.data.collate_original_from_image`), whatever chunk of it
        ``captions`` is.
        """
        if group is None or group.direction != "image" or self.data.baseline_layout == "clean":
            return collate(captions, images, image_index)
        if len(images) != 1:
            raise ValueError(f"a from-image group pairs one image with its captions, got {len(images)} images")
        lengths = [len(t) for t in group.captions]
        return collate_original_from_image(captions, images[0], max_tl=max(lengths), last_tl=lengths[-1],
                                           mining=group.phase == "mining")

    def check_options(self, opts) -> None:
        """The original layout is the paper's no-IAIS baseline only (its IAIS runs used the clean one)."""
        if self.data.baseline_layout == "original" and opts.iais != "none":
            raise SetupError(f"--baseline-layout original reproduces the paper's no-IAIS baseline and cannot be "
                             f"combined with --iais {opts.iais} (the authors' IAIS runs used the clean layout)")

    def train_pairs(self, *, image_cache: int) -> UniterPairs:
        if not self.data.train_txt_dbs:
            raise SetupError("no training data: give train_txt_dbs/train_img_dbs in the config or --txt-db/--img-db")
        pairs = UniterPairs.open(self.data.train_txt_dbs, self.data.train_img_dbs, self.data,
                                 max_txt_len=self.data.max_txt_len, model_config=self.model_config,
                                 image_cache=image_cache)
        self._check_width(pairs)
        return pairs

    def eval_pairs(self, split: str) -> UniterPairs | None:
        txt, img = self.data.split_dbs(split)
        return self.open_split(txt, img) if txt and img else None

    def open_split(self, txt_db: str, img_db: str) -> UniterPairs:
        """An evaluation split: every caption of ``txt_db`` with the images of ``img_db`` it refers to."""
        pairs = UniterPairs.open([txt_db], [img_db], self.data, model_config=self.model_config, image_cache=0)
        self._check_width(pairs)
        return pairs

    def _check_width(self, pairs: UniterPairs) -> None:
        """Every img_db of ``pairs`` has the features the model takes: ``img_dim`` when set, else the width of
        the first img_db opened, which the model then takes."""
        for s, (_, img_db) in enumerate(pairs.sources):
            width = int(pairs.image(pairs.source_images[s][0]).features.shape[1])
            if self._img_dim is None:
                self._img_dim = width
            elif width != self._img_dim:
                given = (f"img_dim {self._img_dim} (--img-dim, or img_dim in the config)" if self.data.img_dim
                         else f"the {self._img_dim}-d features of the img_db opened first")
                raise SetupError(f"img_db {img_db.path} holds {width}-d region features, but the model takes "
                                 f"{given}; leave --img-dim unset to read the width from the img_db, or use img_dbs "
                                 f"of one feature width")

    @property
    def img_dim(self) -> int:
        """Region feature width: ``img_dim`` of the data settings, else read from the first img_db."""
        if self._img_dim is None:
            paths = self.data.train_img_dbs or [p for p in (self.data.test_img_db, self.data.val_img_db) if p]
            if not paths:
                raise FileNotFoundError("no img_db to read the region feature width from; pass --img-dim")
            img_db = self.data.open_img_db(paths[0])
            try:
                self._img_dim = int(img_db[img_db.names[0]].features.shape[1])
            finally:
                img_db.close()
        return self._img_dim

    def build_model(self, *, dropout: float | None = None, pretrained: bool = True,
                    checkpoint: str | None = None) -> UniterForRetrieval:
        """The model; with ``pretrained``, ``checkpoint`` (default: the data's) loaded into it."""
        config = self.model_config
        if dropout is not None:
            config = dataclasses.replace(config, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        checkpoint = (checkpoint or self.data.checkpoint) if pretrained else None
        try:
            model, report = build_model(config, checkpoint, img_dim=self.img_dim)
        except (ValueError, TypeError) as err:  # weights that do not fit the model config: the user's to fix
            raise SetupError(str(err)) from None
        if report is not None:
            logger.info("loaded %s%s", checkpoint,
                        " (rank_output initialised from itm_output)" if report.rank_output_from_itm else "")
        elif pretrained:
            logger.warning("no pre-trained checkpoint given: training UNITER from random initialisation")
        return model

    def describe(self) -> dict:
        return {"model": "uniter", "data": dataclasses.asdict(self.data), "model_config": self.model_config.to_dict(),
                "img_dim": self.img_dim}
