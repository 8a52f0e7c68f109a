"""The settings of the ViLT commands: the model and processor, and the data.

Two dataclasses, each field also a flag (``--max-text-len``) and a config-file
key, read like the engine's :class:`~integrations.retrieval.TrainOptions`
(:func:`integrations.retrieval.options_parser`):

- :class:`ViltSettings`: the Hugging Face model (a local directory or a hub
  id), its processor, and how captions and images are cut to the model's
  tables (``max_text_len``, ``max_image_length``, ``image_size``);
- :class:`ViltData`: the settings plus the data of a retrieval run, a
  Karpathy split JSON and the image folder.

Example:
    >>> data = ViltData(model="dandelin/vilt-b32-mlm", karpathy_json="dataset_flickr30k.json", image_root="images")
    >>> data.max_text_len, data.train_splits
    (40, ['train', 'restval'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..retrieval.options import OptionError, check_ranges, check_types

__all__ = ["ViltSettings", "ViltData"]


@dataclass
class ViltSettings:
    """The ViLT model, its processor and the sequence limits."""

    _argument_group_name = "ViLT model"

    model: str | None = field(default=None, metadata={
        "help": "a Hugging Face ViLT directory or hub id (config, weights and, unless --processor is given, the "
                "processor), e.g. dandelin/vilt-b32-mlm", "metavar": "PATH_OR_HUB_ID"})
    processor: str | None = field(default=None, metadata={
        "help": "the ViltProcessor's directory or hub id (default: --model)", "metavar": "PATH_OR_HUB_ID"})
    max_text_len: int = field(default=40, metadata={
        "help": "word pieces per caption with [CLS] and [SEP]; every caption is padded to this length (ViLT's "
                "max_text_len)"})
    max_image_length: int | None = field(default=None, metadata={
        "help": "patches kept per image, sampled at random when an image has more (-1: all; default: the model "
                "config's max_image_length)"})
    image_size: int | None = field(default=None, metadata={
        "help": "shorter image side after the processor's resize (default: the processor's, 384 for the dandelin "
                "checkpoints)"})

    def __post_init__(self) -> None:
        check_types(self)
        # max_text_len: [CLS], a word piece, [SEP]
        check_ranges(self, {"max_text_len": ">= 3", "max_image_length": ">= 1 or -1", "image_size": ">= 1"})

    @property
    def processor_path(self) -> str | None:
        """Where the processor is read from."""
        return self.processor or self.model


@dataclass
class ViltData(ViltSettings):
    """The settings plus the data of a retrieval run: a Karpathy split JSON and its images."""

    _argument_group_name = "ViLT model and data"

    karpathy_json: str | None = field(default=None, metadata={
        "help": "the Karpathy split file (dataset_flickr30k.json, dataset_coco.json)", "metavar": "PATH"})
    image_root: str | None = field(default=None, metadata={
        "help": "the folder the file's image paths ([filepath/]filename) are relative to", "metavar": "DIR"})
    train_splits: list[str] = field(default_factory=lambda: ["train", "restval"], metadata={
        "help": "the splits of the file trained on (COCO's restval joins train)", "metavar": "SPLIT"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train_splits:
            raise OptionError("train_splits", "must name at least one split")
