"""The original JSON configs are read as they are; bad values name the key."""

from __future__ import annotations

import json
import os

import pytest
from . import helpers as H

import dataclasses
import warnings

from integrations.retrieval import TrainOptions
from integrations.uniter.config import UniterData, UniterModelConfig, read_train_config

RELEASED_TRAIN = os.path.join(H.FIXTURES, "train-itm-flickr-base-8gpu-hn.json")
RELEASED_MODEL = os.path.join(H.FIXTURES, "uniter-base.json")


def _known(opts, data) -> dict:
    return {**dataclasses.asdict(opts), **dataclasses.asdict(data)}


def test_released_train_config_is_read_as_is():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key known
        opts, data = read_train_config(RELEASED_TRAIN)
    with open(RELEASED_TRAIN) as f:
        raw = json.load(f)
    known = _known(opts, data)
    assert {k: known[k] for k in raw} == raw  # every value kept
    assert data.conf_th == 0.2 and data.max_bb == 100 and data.min_bb == 10 and data.compressed_db is False
    assert opts.negative_size == 399 and opts.hard_neg_size == 31 and opts.train_batch_size == 8
    assert opts.betas == [0.9, 0.98] and opts.fp16 is True and opts.output_dir == raw["output_dir"]
    assert data.split_dbs("test") == ("/txt/itm_flickr30k_test.db", "/img/flickr30k/")
    assert data.split_dbs("val") == ("/txt/itm_flickr30k_val.db", "/img/flickr30k/")


@pytest.mark.parametrize("name, expected", [("train-itm-flickr-base-8gpu-hn.json", 8),
                                            ("train-itm-coco-large-16gpu-hn.json", 16), ("my-run.json", None)])
def test_a_config_naming_its_gpu_count_makes_it_the_default_equivalent(tmp_path, name, expected):
    path = tmp_path / name
    path.write_text(json.dumps({"train_batch_size": 8}))
    assert read_train_config(path)[0].num_gpus_equivalent == expected
    path.write_text(json.dumps({"train_batch_size": 8, "num_gpus_equivalent": 2}))
    assert read_train_config(path)[0].num_gpus_equivalent == 2  # the file's own key wins
    assert read_train_config({"train_batch_size": 8})[0].num_gpus_equivalent is None  # a mapping has no name


def test_module_doctests():
    import doctest
    import importlib

    for name in ("integrations.retrieval.options", "integrations.retrieval.objective", "integrations.uniter.config",
                 "integrations.uniter.data.collate"):
        module = importlib.import_module(name)
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_contract_key_set_is_known_and_held_once():
    keys = ("train_txt_dbs, train_img_dbs, val_txt_db, val_img_db, test_txt_db, test_img_db, checkpoint, "
            "model_config, output_dir, max_txt_len, conf_th, max_bb, min_bb, num_bb, train_batch_size, "
            "negative_size, hard_neg_size, inf_minibatch_size, margin, valid_steps, num_train_steps, optim, "
            "betas, dropout, weight_decay, grad_norm, warmup_steps, seed, fp16, full_val, learning_rate, "
            "n_workers, pin_mem").split(", ")
    recipe = {f.name for f in dataclasses.fields(TrainOptions)}
    uniter = {f.name for f in dataclasses.fields(UniterData)}
    assert set(keys) <= recipe | uniter
    assert not recipe & uniter  # no setting lives in two objects


def test_unknown_keys_warn_and_the_forks_iais_key_is_understood():
    with pytest.warns(UserWarning, match="my_key"):
        opts, _ = read_train_config({"my_key": "x", "seed": 1, "IAIS": "distributed"})
    assert opts.seed == 1 and opts.iais == "distributed"
    assert read_train_config({"IAIS": False})[0].iais == "none"


@pytest.mark.parametrize("key, value", [
    ("max_bb", "100"), ("conf_th", "0.2"), ("fp16", 1), ("betas", [0.9]), ("train_txt_dbs", "/txt/a.db"),
    ("seed", 4.0), ("test_txt_db", 3), ("pin_mem", None), ("learning_rate", True),
])
def test_wrong_type_names_file_and_key(tmp_path, key, value):
    with open(RELEASED_TRAIN) as f:
        raw = json.load(f)
    raw[key] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=rf"bad\.json.*'{key}'"):
        read_train_config(path)


def test_inconsistent_values_are_rejected(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"min_bb": 20, "max_bb": 10}))
    with pytest.raises(ValueError, match="cfg.json.*min_bb"):
        read_train_config(path)
    with pytest.raises(ValueError, match="train_img_dbs"):
        UniterData(train_txt_dbs=["a"], train_img_dbs=[])
    with pytest.raises(ValueError, match="split"):
        UniterData().split_dbs("train")
    with pytest.raises(ValueError, match="'negative_size' must be >= 1"):
        TrainOptions(negative_size=0)


def test_released_model_config():
    cfg = UniterModelConfig.from_json(RELEASED_MODEL)
    sizes = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size)
    assert sizes == (768, 12, 12, 3072)
    assert cfg.vocab_size == 28996 and cfg.hidden_act == "gelu" and cfg.head_size == 64
    with open(RELEASED_MODEL) as f:
        assert cfg.to_dict() == json.load(f)


@pytest.mark.parametrize("changes, match", [
    ({"hidden_size": "768"}, "'hidden_size'"),
    ({"hidden_size": 100, "num_attention_heads": 12}, "divisible"),
    ({"hidden_act": "mish"}, "'hidden_act'"),
    ({"hidden_dropout_prob": 1.5}, "'hidden_dropout_prob'"),
    ({"num_hidden_layers": 0}, "'num_hidden_layers'"),
    ({"type_vocab_size": 1}, "'type_vocab_size'"),
])
def test_bad_model_config(changes, match):
    with pytest.raises(ValueError, match=match):
        UniterModelConfig.from_dict({**H.TINY, **changes}, source="m.json")


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_train_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        UniterModelConfig.from_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        read_train_config(bad)
