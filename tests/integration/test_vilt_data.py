"""ViLT data: Karpathy split files, the splits, batches equal to the ViltProcessor's, and the errors
a user sees for a bad file (one line, exit status 2, the file named)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from integrations.vilt import evaluate, finetune
from integrations.vilt.config import ViltData
from integrations.vilt.data import DataFileError, ImageReadError, read_karpathy
from integrations.vilt.plugin import ViltPlugin

from .vilt_builders import MAX_TEXT_LEN, SPLITS


def _plugin(world, **changes) -> ViltPlugin:
    settings = dict(model=world["model"], karpathy_json=world["karpathy"], image_root=world["images"],
                    max_text_len=MAX_TEXT_LEN)
    return ViltPlugin(ViltData(**{**settings, **changes}))


def test_splits_follow_the_karpathy_file(vilt_world):
    plugin = _plugin(vilt_world)
    entries = json.loads(open(vilt_world["karpathy"]).read())["images"]
    for split in ("val", "test"):
        pairs = plugin.eval_pairs(split)
        mine = [e for e in entries if e["split"] == split]
        assert pairs.image_ids == [e["filename"] for e in mine]
        assert pairs.texts == [s["raw"] for e in mine for s in e["sentences"]]
        assert pairs.caption_image == [i for i, e in enumerate(mine) for _ in e["sentences"]]
    train = plugin.train_pairs(image_cache=4)
    assert train.n_images == SPLITS.count("train") and train.n_captions == 2 * SPLITS.count("train")
    assert plugin.eval_pairs("restval") is None


def test_coco_style_entries_join_filepath_and_fall_back_to_tokens(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "restval", "sentences": [{"tokens": ["a", "dog"]}]}]}))
    (entry,) = read_karpathy(path)
    assert entry.path == "val2014/a.jpg" and entry.split == "restval" and entry.captions == ("a dog",)


@pytest.mark.parametrize("content, message", [
    ("[]", "expected a JSON object at the top level, got list"),
    ('{"annotations": []}', "expected an object with an 'images' list"),
    ('{"images": [{"filename": "a.jpg", "sentences": []}]}', "image 0: key 'split' must be a str"),
    ('{"images": [{"filename": "a.jpg", "split": "test", "sentences": [{"raw": ""}]}]}', "image 0, sentence 0"),
    ("{", "not valid JSON"),
])
def test_a_malformed_karpathy_file_names_the_file_and_the_entry(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataFileError, match="bad.json") as err:
        read_karpathy(path)
    assert message in str(err.value)


def test_a_batch_equals_the_processors_own_output(vilt_world):
    """Resizing in the split and rescaling, normalising and padding in the collate gives the very tensors of one
    ViltProcessor call on the original images."""
    plugin = _plugin(vilt_world)
    pairs = plugin.eval_pairs("test")
    batch = plugin.collate([pairs.caption(0), pairs.caption(5)], [pairs.image(0), pairs.image(2)], [0, 1])
    images = [Image.open(pairs.image_path(i)).convert("RGB") for i in (0, 2)]
    ref = plugin.processor(images=images, text=[pairs.texts[0], pairs.texts[5]], padding="max_length",
                           max_length=MAX_TEXT_LEN, truncation=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "pixel_mask"):
        torch.testing.assert_close(batch[key], ref[key], rtol=0, atol=0)
    assert pairs.image(0).dtype == torch.uint8


def _copy_world(world, tmp_path) -> dict:
    shutil.copytree(world["images"], tmp_path / "images")
    return {**world, "images": str(tmp_path / "images")}


def _eval_args(world) -> list[str]:
    return ["--model", world["model"], "--karpathy-json", world["karpathy"], "--image-root", world["images"],
            "--max-text-len", str(MAX_TEXT_LEN), "--no-progress"]


def test_an_unreadable_image_is_a_one_line_error_naming_the_file(vilt_world, tmp_path, capsys):
    world = _copy_world(vilt_world, tmp_path)
    bad = tmp_path / "images" / "1012.png"  # a test image
    bad.write_bytes(b"not a picture")
    assert evaluate.main(_eval_args(world)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot read image {bad}") and not any("Traceback" in e for e in err)


def test_an_unreadable_image_read_by_a_data_worker_is_one_line_too(vilt_world, tmp_path, capsys):
    world = _copy_world(vilt_world, tmp_path)
    for name in [f"{1000 + i}.png" for i, s in enumerate(SPLITS) if s == "train"]:
        (tmp_path / "images" / name).write_bytes(b"broken")
    args = _eval_args(world) + ["--output-dir", str(tmp_path / "run"), "--num-train-steps", "1", "--n-workers", "1",
                                "--negative-size", "2", "--hard-neg-size", "1", "--train-batch-size", "1",
                                "--no-tensorboard", "--quiet"]
    assert finetune.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot read image {tmp_path / 'images'}/") and "Traceback" not in err[-1]


def test_a_missing_image_or_file_is_a_usage_error(vilt_world, tmp_path, capsys):
    world = _copy_world(vilt_world, tmp_path)
    (tmp_path / "images" / "1013.png").unlink()
    assert evaluate.main(_eval_args(world)) == 2
    assert capsys.readouterr().err.strip().endswith(f"error: image file not found: {tmp_path}/images/1013.png "
                                                    f"(split 'test')")
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(_eval_args({**world, "karpathy": str(tmp_path / "nope.json")}))
    assert exit_.value.code == 2 and "Karpathy split file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(_eval_args({**world, "model": str(tmp_path / "no-model")}))
    assert exit_.value.code == 2 and f"error: --model {tmp_path}/no-model: no such directory" in \
        capsys.readouterr().err
    (tmp_path / "not-vilt").mkdir()
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(_eval_args({**world, "model": str(tmp_path / "not-vilt")}))
    assert exit_.value.code == 2 and "error: cannot load a Vilt" in capsys.readouterr().err  # config or processor


def test_image_read_error_keeps_the_original_message_of_a_worker_traceback():
    text = ("Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\nintegrations.vilt.data.ImageReadError: cannot read image a.png: bad\n')
    assert str(ImageReadError(text)) == "cannot read image a.png: bad"
    assert str(ImageReadError("cannot read image b.png: truncated")) == "cannot read image b.png: truncated"
