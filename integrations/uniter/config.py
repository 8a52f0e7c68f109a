"""The original UNITER JSON configs as typed, validated settings.

Two files describe a UNITER retrieval run:

- the *model config* (``config/uniter-base.json``): transformer sizes, read into
  :class:`UniterModelConfig`;
- the *training config* (``config/train-itm-flickr-base-8gpu-hn.json`` and
  friends): the fine-tuning recipe and the data. Its keys are read, unchanged,
  into two objects: the recipe into the engine's
  :class:`~integrations.retrieval.TrainOptions` and the data and weights into
  :class:`UniterData` (:func:`read_train_config`).

Both files are accepted exactly as the original releases ship them. A value of
the wrong type raises :class:`ValueError` naming the file and the key; a key
neither object knows warns and is ignored.

Example:
    >>> cfg = UniterModelConfig.from_dict({"hidden_size": 32, "num_hidden_layers": 2,
    ...                                   "num_attention_heads": 2, "intermediate_size": 64})
    >>> cfg.head_size
    16
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from ..retrieval.options import OptionError, TrainOptions, check_ranges, check_types, load_config, read_json_object

__all__ = ["UniterModelConfig", "UniterData", "read_train_config", "SUPPORTED_ACTIVATIONS", "CONFIG_ALIASES"]

#: ``hidden_act`` values the model implements ("gelu" is the exact, erf-based GELU
#: used by BERT and UNITER).
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "swish", "silu", "tanh")

#: the authors' IAIS fork writes ``"IAIS": "singular" | "distributed" | false`` into the training config
CONFIG_ALIASES = {"IAIS": lambda v: ("iais", v if v in ("singular", "distributed") else "none")}


#: the ranges of :class:`UniterModelConfig` (type_vocab_size: UNITER uses type 0 for text and type 1 for regions)
_MODEL_RANGES = {
    **dict.fromkeys(("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings"), ">= 1"),
    "type_vocab_size": ">= 2", "hidden_dropout_prob": "in [0, 1)", "attention_probs_dropout_prob": "in [0, 1)",
    "initializer_range": "> 0",
}


@dataclass(frozen=True)
class UniterModelConfig:
    """Transformer sizes of UNITER (the original ``uniter-base.json`` keys).

    Missing keys take the UNITER-base values (base = 768/12/12/3072,
    large = 1024/24/16/4096); checkpoint loading checks every shape, so a wrong
    size cannot go unnoticed.
    """

    vocab_size: int = 28996
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    #: where the values came from, for error messages
    source: str = field(default="<UniterModelConfig>", compare=False, repr=False)

    def __post_init__(self) -> None:
        check_types(self)
        check_ranges(self, _MODEL_RANGES)
        if self.hidden_size % self.num_attention_heads:
            raise OptionError(("hidden_size", "num_attention_heads"),
                              f"must be such that hidden_size ({self.hidden_size}) is divisible by "
                              f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise OptionError("hidden_act", f"must be one of {list(SUPPORTED_ACTIVATIONS)}, got {self.hidden_act!r}")

    @property
    def head_size(self) -> int:
        """Width of one attention head, ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> "UniterModelConfig":
        """Build from a mapping of the original keys; unknown keys warn and are ignored."""
        (config,) = load_config({k: v for k, v in data.items() if k != "source"}, cls, source=source)
        object.__setattr__(config, "source", source)
        return config

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "UniterModelConfig":
        """Read an original model config file such as ``uniter-base.json``."""
        return cls.from_dict(read_json_object(path, "model config"), source=os.fspath(path))

    def to_dict(self) -> dict[str, Any]:
        """The original keys and values (what :meth:`from_dict` accepts)."""
        return {key: getattr(self, key) for key in self.__dataclass_fields__ if key != "source"}


def _path_field(help: str, **metadata: Any) -> Any:
    return field(default=None, metadata={"help": help, "metavar": "PATH", **metadata})


@dataclass
class UniterData:
    """The data and weights of a UNITER run: the original config's database, detector and checkpoint keys."""

    _argument_group_name = "UNITER data and weights (original config keys keep their names)"

    train_txt_dbs: list[str] = field(default_factory=list, metadata={
        "help": "training txt_db(s)", "aliases": ["--txt-db"], "metavar": "PATH"})
    train_img_dbs: list[str] = field(default_factory=list, metadata={
        "help": "training img_db(s), one per txt_db", "aliases": ["--img-db"], "metavar": "PATH"})
    val_txt_db: str | None = _path_field("validation txt_db")
    val_img_db: str | None = _path_field("validation img_db")
    test_txt_db: str | None = _path_field("test txt_db")
    test_img_db: str | None = _path_field("test img_db")
    checkpoint: str | None = _path_field("pre-trained (or fine-tuned) UNITER weights to start from; rank_output is "
                                         "initialised from itm_output when absent")
    model_config: str | None = _path_field("model config JSON (uniter-base.json)")
    max_txt_len: int = field(default=60, metadata={"help": "training keeps captions of at most this many word "
                                                           "pieces"})
    conf_th: float = field(default=0.2, metadata={"help": "detector confidence threshold of the img_db"})
    max_bb: int = field(default=100, metadata={"help": "most regions per image of the img_db"})
    min_bb: int = field(default=10, metadata={"help": "fewest regions per image of the img_db"})
    num_bb: int = field(default=36, metadata={"help": "kept for config compatibility (unused by retrieval)"})
    compressed_db: bool | None = field(default=None, metadata={
        "help": "read the _compressed img_db variant (default: whichever exists)"})
    img_dim: int | None = field(default=None, metadata={"help": "region feature width (default: read from the "
                                                                "img_db)"})
    baseline_layout: Literal["clean", "original"] = field(default="clean", metadata={
        "help": "clean: every row's regions right after its own text; original: the authors' no-IAIS from-image "
                "batches, as the paper's baseline was trained (leaked-length gather index when mining, plain "
                "concatenation with the compact mask when training); not with --iais"})

    def __post_init__(self) -> None:
        check_types(self)
        check_ranges(self, {"max_txt_len": ">= 1 or -1", "max_bb": ">= 1", "min_bb": ">= 1", "num_bb": ">= 1",
                            "img_dim": ">= 1", "conf_th": ">= 0"})
        if len(self.train_txt_dbs) != len(self.train_img_dbs):
            raise OptionError(("train_txt_dbs", "train_img_dbs"), f"must name as many databases, got "
                              f"{len(self.train_txt_dbs)} and {len(self.train_img_dbs)}")
        if self.min_bb > self.max_bb:
            raise OptionError(("min_bb", "max_bb"), f"must satisfy min_bb <= max_bb, got {self.min_bb} and "
                                                    f"{self.max_bb}")

    def split_dbs(self, split: str) -> tuple[str | None, str | None]:
        """``(txt_db, img_db)`` paths of ``split`` ("val" or "test")."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        return getattr(self, f"{split}_txt_db"), getattr(self, f"{split}_img_db")

    def open_img_db(self, path: str):
        """The img_db at ``path`` with this run's detector setting."""
        from .data import ImgDb

        return ImgDb(path, conf_th=self.conf_th, max_bb=self.max_bb, min_bb=self.min_bb, compressed=self.compressed_db)


def read_train_config(path: str | os.PathLike | Mapping[str, Any]) -> tuple[TrainOptions, UniterData]:
    """An original training config (file or mapping) as ``(TrainOptions, UniterData)``.

    >>> opts, data = read_train_config({"negative_size": 31, "max_bb": 50, "IAIS": "singular"})
    >>> opts.negative_size, opts.iais, data.max_bb
    (31, 'singular', 50)
    """
    opts, data = load_config(path, TrainOptions, UniterData, aliases=CONFIG_ALIASES)
    return opts, data
