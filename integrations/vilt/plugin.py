"""ViLT as a model plug-in of the retrieval engine.

:class:`ViltPlugin` opens the Karpathy split file once, builds the splits
(:class:`~.data.ViltPairs`) from it, loads the model (:func:`~.model.load_vilt`)
and batches with the processor (:class:`~.data.ViltCollate`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from ..retrieval.objective import SetupError
from .config import ViltData, ViltSettings
from .data import ViltCollate, ViltPairs, read_karpathy
from .model import ViltRetrieval, first_line, load_vilt, load_weights

__all__ = ["load_processor", "model_config", "ViltPlugin"]

logger = logging.getLogger("integrations.vilt")


def load_processor(path: str) -> Any:
    """The ``ViltProcessor`` of a directory or hub id; ``FileNotFoundError`` (one line) when none loads."""
    from transformers import ViltProcessor

    try:
        return ViltProcessor.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"cannot load a ViltProcessor from {path!r}: {first_line(err)}") from None


def model_config(path: str) -> Any:
    """The ``ViltConfig`` of a directory or hub id."""
    from transformers import ViltConfig

    try:
        return ViltConfig.from_pretrained(path)
    except OSError as err:
        raise FileNotFoundError(f"cannot load a ViLT config from {path!r}: {first_line(err)}") from None


def _missing_folder(path: str) -> bool:
    """Whether ``path`` names a local folder (not a hub id ``owner/name``) that does not exist."""
    local = os.path.isabs(path) or path.startswith(("./", "../", "~")) or path.count("/") > 1
    return local and not os.path.isdir(os.path.expanduser(path))


class ViltPlugin:
    """ViLT's splits, model and batches for :func:`integrations.retrieval.train` and the commands.

    Args:
        data: the model, processor and limits; with :class:`~.config.ViltData`,
            also the split file and the image folder.

    Raises ``FileNotFoundError`` when the model, processor or split file is
    missing, ``ValueError`` for limits the model cannot take.
    """

    def __init__(self, data: ViltSettings) -> None:
        if not data.model:
            raise ValueError("no model: pass --model (a ViLT directory or hub id)")
        for flag, path in (("--model", data.model), ("--processor", data.processor)):
            if path and _missing_folder(path):
                raise FileNotFoundError(f"{flag} {path}: no such directory (a local model is a folder written by "
                                        f"save_pretrained; a hub id reads owner/name)")
        self.data = data
        self.config = model_config(data.model)
        self.processor = load_processor(data.processor_path)
        if data.max_text_len > self.config.max_position_embeddings:
            raise ValueError(f"--max-text-len {data.max_text_len} (max_text_len) exceeds the model's "
                             f"max_position_embeddings {self.config.max_position_embeddings}")
        self.collate = ViltCollate(self.processor, max_text_len=data.max_text_len)
        self.entries = None
        if isinstance(data, ViltData) and data.karpathy_json:
            self.entries = read_karpathy(data.karpathy_json)

    @property
    def patch_size(self) -> int:
        return int(self.config.patch_size)

    def open_entries(self, entries, *, root: str, name: str, image_cache: int = 0) -> ViltPairs:
        """A split of :class:`~.data.KarpathyImage` entries whose paths are relative to ``root``."""
        return ViltPairs(entries, root, self.processor, max_text_len=self.data.max_text_len,
                         image_size=self.data.image_size, image_cache=image_cache, name=name)

    def split(self, names, *, image_cache: int = 0) -> ViltPairs | None:
        """The images of the split file whose split is one of ``names`` (None when there is none)."""
        if self.entries is None:
            raise SetupError("no split file: pass --karpathy-json and --image-root")
        chosen = [e for e in self.entries if e.split in set(names)]
        if not chosen:
            return None
        return self.open_entries(chosen, root=self.data.image_root, name="+".join(names), image_cache=image_cache)

    def train_pairs(self, *, image_cache: int) -> ViltPairs:
        pairs = self.split(self.data.train_splits, image_cache=image_cache)
        if pairs is None:
            raise SetupError(f"{self.data.karpathy_json} has no image in the training split(s) "
                             f"{self.data.train_splits}")
        return pairs

    def eval_pairs(self, split: str) -> ViltPairs | None:
        return self.split([split])

    def build_model(self, *, dropout: float | None = None, pretrained: bool = True, checkpoint: str | None = None,
                    max_image_length: int | None = None) -> ViltRetrieval:
        """The model of ``--model``; with ``checkpoint``, those weights loaded on top.

        ``max_image_length`` overrides the setting's (``-1``: every patch).
        """
        if max_image_length is None:
            max_image_length = self.data.max_image_length
        model = load_vilt(self.data.model, pretrained=pretrained and checkpoint is None, dropout=dropout,
                          max_image_length=max_image_length)
        if checkpoint is not None:
            load_weights(model, checkpoint)
            logger.info("loaded %s", checkpoint)
        return model

    def describe(self) -> dict:
        return {"model": "vilt", "data": dataclasses.asdict(self.data),
                "max_image_length": self.config.max_image_length if self.data.max_image_length is None
                else self.data.max_image_length, "patch_size": self.patch_size}
