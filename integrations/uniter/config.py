"""The original UNITER JSON configs as typed, validated settings.

Two files describe a UNITER retrieval run:

- the *model config* (``config/uniter-base.json``): transformer sizes, read into
  :class:`UniterModelConfig`;
- the *training config* (``config/train-itm-flickr-base-8gpu-hn.json`` and
  friends): data paths and the fine-tuning recipe, read into
  :class:`TrainConfig`.

Both are accepted exactly as the original releases ship them. A value of the
wrong type raises :class:`ValueError` naming the file and the key; a key this
module does not know is kept in :attr:`TrainConfig.extra` with a warning (the
IAIS fork, for instance, adds options of its own).

Example:
    >>> cfg = UniterModelConfig.from_dict({"hidden_size": 32, "num_hidden_layers": 2,
    ...                                   "num_attention_heads": 2, "intermediate_size": 64})
    >>> cfg.head_size
    16
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["UniterModelConfig", "TrainConfig", "SUPPORTED_ACTIVATIONS"]

#: ``hidden_act`` values the model implements ("gelu" is the exact, erf-based GELU
#: used by BERT and UNITER).
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "swish", "silu", "tanh")

# Value kinds understood by _check_value.
_INT, _FLOAT, _STR, _BOOL = "an int", "a number", "a string", "a bool"
_OPT_STR, _OPT_BOOL, _STR_LIST, _FLOAT_PAIR = ("a string or null", "a bool or null", "a list of strings",
                                              "a list of 2 numbers")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_value(source: str, key: str, value: Any, kind: str) -> Any:
    """Return ``value`` if it has the expected JSON kind, else raise ValueError.

    Numbers keep the type they were written with (``0.2`` stays a float and ``1``
    an int), because some of them are spelled into file names (``conf_th``).
    """
    ok = {
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _FLOAT: _is_number(value),
        _STR: isinstance(value, str),
        _BOOL: isinstance(value, bool),
        _OPT_STR: value is None or isinstance(value, str),
        _OPT_BOOL: value is None or isinstance(value, bool),
        _STR_LIST: isinstance(value, list) and all(isinstance(v, str) for v in value),
        _FLOAT_PAIR: isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value),
    }[kind]
    if not ok:
        raise ValueError(
            f"{source}: key {key!r} must be {kind}, got {_type_name(value)} {value!r}"
        )
    return list(value) if isinstance(value, list) else value


def _read_json_object(path: str | os.PathLike) -> dict:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, got {_type_name(data)}")
    return data


def _build(cls, data: Mapping[str, Any], source: str, kinds: Mapping[str, str], *, keep_extra: bool):
    if not isinstance(data, Mapping):
        raise TypeError(f"{source}: expected a mapping of config keys, got {_type_name(data)}")
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if key in kinds:
            values[key] = _check_value(source, key, value, kinds[key])
        else:
            extra[key] = value
    if extra:
        what = "kept in .extra" if keep_extra else "ignored"
        warnings.warn(f"{source}: unknown key(s) {sorted(extra)} {what}", UserWarning, stacklevel=3)
    if keep_extra:
        values["extra"] = extra
    return cls(**values, source=source)


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

    _KINDS = {
        "vocab_size": _INT, "hidden_size": _INT, "num_hidden_layers": _INT,
        "num_attention_heads": _INT, "intermediate_size": _INT, "hidden_act": _STR,
        "hidden_dropout_prob": _FLOAT, "attention_probs_dropout_prob": _FLOAT,
        "max_position_embeddings": _INT, "type_vocab_size": _INT, "initializer_range": _FLOAT,
    }

    def __post_init__(self) -> None:
        src = self.source
        for key, kind in self._KINDS.items():
            _check_value(src, key, getattr(self, key), kind)
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings"):
            if getattr(self, key) < 1:
                raise ValueError(f"{src}: key {key!r} must be >= 1, got {getattr(self, key)}")
        if self.type_vocab_size < 2:
            raise ValueError(
                f"{src}: key 'type_vocab_size' must be >= 2 (UNITER uses type 0 for text "
                f"and type 1 for regions), got {self.type_vocab_size}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"{src}: 'hidden_size' ({self.hidden_size}) must be divisible by "
                f"'num_attention_heads' ({self.num_attention_heads})"
            )
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{src}: key {key!r} must be in [0, 1), got {getattr(self, key)}")
        if self.initializer_range <= 0:
            raise ValueError(f"{src}: key 'initializer_range' must be > 0, got {self.initializer_range}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"{src}: key 'hidden_act' must be one of {list(SUPPORTED_ACTIVATIONS)}, "
                f"got {self.hidden_act!r}"
            )

    @property
    def head_size(self) -> int:
        """Width of one attention head, ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> "UniterModelConfig":
        """Build from a mapping of the original keys; unknown keys warn and are ignored."""
        return _build(cls, data, source, cls._KINDS, keep_extra=False)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "UniterModelConfig":
        """Read an original model config file such as ``uniter-base.json``."""
        return cls.from_dict(_read_json_object(path), source=os.fspath(path))

    def to_dict(self) -> dict[str, Any]:
        """The original keys and values (what :meth:`from_dict` accepts)."""
        return {key: getattr(self, key) for key in self._KINDS}


@dataclass(frozen=True)
class TrainConfig:
    """An original retrieval training config (``train-itm-*-hn.json``).

    Every key is optional and defaults to the value of the released Flickr30k
    hard-negative config; database and checkpoint paths default to ``None``.
    ``compressed_db`` (present in the released files) selects the
    ``_compressed`` img_db variant; ``None`` means "whichever exists on disk".
    """

    train_txt_dbs: list = field(default_factory=list)
    train_img_dbs: list = field(default_factory=list)
    val_txt_db: str | None = None
    val_img_db: str | None = None
    test_txt_db: str | None = None
    test_img_db: str | None = None
    checkpoint: str | None = None
    model_config: str | None = None
    output_dir: str | None = None
    max_txt_len: int = 60
    conf_th: float = 0.2
    max_bb: int = 100
    min_bb: int = 10
    num_bb: int = 36
    train_batch_size: int = 8
    negative_size: int = 399
    hard_neg_size: int = 31
    inf_minibatch_size: int = 400
    margin: float = 0.2
    valid_steps: int = 500
    num_train_steps: int = 5000
    optim: str = "adamw"
    betas: list = field(default_factory=lambda: [0.9, 0.98])
    dropout: float = 0.1
    weight_decay: float = 0.01
    grad_norm: float = 2.0
    warmup_steps: int = 500
    seed: int = 42
    fp16: bool = True
    full_val: bool = True
    learning_rate: float = 5e-05
    n_workers: int = 4
    pin_mem: bool = True
    compressed_db: bool | None = None
    #: keys this module does not know, as read
    extra: dict = field(default_factory=dict, compare=False)
    #: where the values came from, for error messages
    source: str = field(default="<TrainConfig>", compare=False, repr=False)

    _KINDS = {
        "train_txt_dbs": _STR_LIST, "train_img_dbs": _STR_LIST,
        "val_txt_db": _OPT_STR, "val_img_db": _OPT_STR, "test_txt_db": _OPT_STR,
        "test_img_db": _OPT_STR, "checkpoint": _OPT_STR, "model_config": _OPT_STR,
        "output_dir": _OPT_STR, "max_txt_len": _INT, "conf_th": _FLOAT, "max_bb": _INT,
        "min_bb": _INT, "num_bb": _INT, "train_batch_size": _INT, "negative_size": _INT,
        "hard_neg_size": _INT, "inf_minibatch_size": _INT, "margin": _FLOAT,
        "valid_steps": _INT, "num_train_steps": _INT, "optim": _STR, "betas": _FLOAT_PAIR,
        "dropout": _FLOAT, "weight_decay": _FLOAT, "grad_norm": _FLOAT, "warmup_steps": _INT,
        "seed": _INT, "fp16": _BOOL, "full_val": _BOOL, "learning_rate": _FLOAT,
        "n_workers": _INT, "pin_mem": _BOOL, "compressed_db": _OPT_BOOL,
    }

    def __post_init__(self) -> None:
        src = self.source
        for key, kind in self._KINDS.items():
            _check_value(src, key, getattr(self, key), kind)
        if len(self.train_txt_dbs) != len(self.train_img_dbs):
            raise ValueError(
                f"{src}: 'train_txt_dbs' and 'train_img_dbs' must have the same length, got "
                f"{len(self.train_txt_dbs)} and {len(self.train_img_dbs)}"
            )
        if not 1 <= self.min_bb <= self.max_bb:
            raise ValueError(
                f"{src}: keys 'min_bb' and 'max_bb' must satisfy 1 <= min_bb <= max_bb, "
                f"got min_bb={self.min_bb}, max_bb={self.max_bb}"
            )
        for key in ("train_batch_size", "inf_minibatch_size", "num_bb"):
            if getattr(self, key) < 1:
                raise ValueError(f"{src}: key {key!r} must be >= 1, got {getattr(self, key)}")
        if self.max_txt_len < 1 and self.max_txt_len != -1:
            raise ValueError(f"{src}: key 'max_txt_len' must be >= 1 or -1 (no limit), got {self.max_txt_len}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> "TrainConfig":
        """Build from a mapping of the original keys; unknown keys go to :attr:`extra`."""
        return _build(cls, data, source, cls._KINDS, keep_extra=True)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrainConfig":
        """Read an original training config such as ``train-itm-flickr-base-8gpu-hn.json``."""
        return cls.from_dict(_read_json_object(path), source=os.fspath(path))

    def to_dict(self) -> dict[str, Any]:
        """Known keys plus :attr:`extra`, as a JSON-ready dict."""
        out = {key: getattr(self, key) for key in self._KINDS}
        out.update(self.extra)
        return out

    def split_dbs(self, split: str) -> tuple[str | None, str | None]:
        """``(txt_db, img_db)`` paths of ``split`` ("val" or "test")."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        return getattr(self, f"{split}_txt_db"), getattr(self, f"{split}_img_db")

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some keys changed (validated again)."""
        return dataclasses.replace(self, **changes)
