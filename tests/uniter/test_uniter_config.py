"""The original JSON configs are read as they are; bad values name the key."""

from __future__ import annotations

import json
import os

import pytest
import uniter_helpers as H

from integrations.uniter.config import TrainConfig, UniterModelConfig

RELEASED_TRAIN = os.path.join(H.FIXTURES, "train-itm-flickr-base-8gpu-hn.json")
RELEASED_MODEL = os.path.join(H.FIXTURES, "uniter-base.json")


def test_released_train_config_is_read_as_is():
    cfg = TrainConfig.from_json(RELEASED_TRAIN)
    with open(RELEASED_TRAIN) as f:
        raw = json.load(f)
    assert cfg.to_dict() == raw  # every key known, every value kept
    assert cfg.extra == {}
    assert cfg.conf_th == 0.2 and cfg.max_bb == 100 and cfg.min_bb == 10
    assert cfg.negative_size == 399 and cfg.hard_neg_size == 31 and cfg.train_batch_size == 8
    assert cfg.betas == [0.9, 0.98] and cfg.fp16 is True and cfg.compressed_db is False
    assert cfg.split_dbs("test") == ("/txt/itm_flickr30k_test.db", "/img/flickr30k/")
    assert cfg.split_dbs("val") == ("/txt/itm_flickr30k_val.db", "/img/flickr30k/")


def test_contract_key_set_is_known():
    keys = ("train_txt_dbs, train_img_dbs, val_txt_db, val_img_db, test_txt_db, test_img_db, checkpoint, "
            "model_config, output_dir, max_txt_len, conf_th, max_bb, min_bb, num_bb, train_batch_size, "
            "negative_size, hard_neg_size, inf_minibatch_size, margin, valid_steps, num_train_steps, optim, "
            "betas, dropout, weight_decay, grad_norm, warmup_steps, seed, fp16, full_val, learning_rate, "
            "n_workers, pin_mem").split(", ")
    assert set(keys) <= set(TrainConfig._KINDS)


def test_unknown_keys_warn_and_are_kept():
    with pytest.warns(UserWarning, match="IAIS"):
        cfg = TrainConfig.from_dict({"IAIS": "singular", "seed": 1}, source="my.json")
    assert cfg.extra == {"IAIS": "singular"} and cfg.seed == 1


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
        TrainConfig.from_json(path)


def test_inconsistent_values_are_rejected():
    with pytest.raises(ValueError, match="min_bb"):
        TrainConfig.from_dict({"min_bb": 20, "max_bb": 10})
    with pytest.raises(ValueError, match="train_img_dbs"):
        TrainConfig.from_dict({"train_txt_dbs": ["a"], "train_img_dbs": []})
    with pytest.raises(ValueError, match="split"):
        TrainConfig().split_dbs("train")


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
        TrainConfig.from_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        UniterModelConfig.from_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        TrainConfig.from_json(bad)
