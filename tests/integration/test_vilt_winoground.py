"""``python -m integrations.vilt.winoground``: the paper's text, image and group scores, checked by hand on
a two-example set scored pair by pair with plain ``ViltForImageAndTextRetrieval``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from integrations.vilt import winoground
from integrations.vilt.data import DataFileError

from .vilt_builders import MAX_TEXT_LEN, hf_pair_logits


def test_scores_by_hand():
    s = torch.tensor([
        [[3.0, 1.0], [2.0, 4.0]],  # text: 3 > 2 and 4 > 1; image: 3 > 1 and 4 > 2 -> group
        [[3.0, 4.0], [2.0, 5.0]],  # text: 3 > 2 and 5 > 4; image: 3 < 4 -> text only
        [[3.0, 1.0], [4.0, 5.0]],  # text: 3 < 4; image: 3 > 1 and 5 > 4 -> image only
        [[1.0, 1.0], [1.0, 1.0]],  # ties count as wrong
    ])
    assert winoground.winoground_scores(s) == {"text": 0.5, "image": 0.5, "group": 0.25}
    with pytest.raises(ValueError, match=r"scores must be \(n, 2, 2\)"):
        winoground.winoground_scores(torch.zeros(3, 2))


def _args(world, *extra) -> list[str]:
    return ["--model", world["model"], "--max-text-len", str(MAX_TEXT_LEN), "--data", world["winoground"],
            "--no-progress", *extra]


def test_command_scores_two_examples_as_computed_by_hand(vilt_world, tmp_path):
    out = tmp_path / "wino.json"
    assert winoground.main(_args(vilt_world, "--output", str(out), "--batch-size", "4")) == 0
    result = json.loads(out.read_text())
    root = vilt_world["winoground"]
    examples = [json.loads(line) for line in open(f"{root}/examples.jsonl")]
    text = image = group = 0
    for ex in examples:
        pairs = [(f"{root}/images/{ex[f'image_{i}']}.png", ex[f"caption_{c}"]) for c in range(2) for i in range(2)]
        c0i0, c0i1, c1i0, c1i1 = hf_pair_logits(vilt_world["model"], pairs)
        got = [v for row in result["scores"][str(ex["id"])] for v in row]
        assert got == pytest.approx([c0i0, c0i1, c1i0, c1i1], abs=1e-5)
        t = c0i0 > c1i0 and c1i1 > c0i1
        i = c0i0 > c0i1 and c1i1 > c1i0
        text, image, group = text + t, image + i, group + (t and i)
    assert (result["text"], result["image"], result["group"]) == (text / 2, image / 2, group / 2)
    assert result["n_examples"] == 2 and result["by_tag"]["Object"]["n"] == 2


def test_the_released_layout_under_data_and_its_errors(vilt_world, tmp_path, capsys):
    shutil.copytree(vilt_world["winoground"], tmp_path / "winoground" / "data")
    assert winoground.main(_args({**vilt_world, "winoground": str(tmp_path / "winoground")})) == 0
    assert json.loads(capsys.readouterr().out)["n_examples"] == 2
    shutil.rmtree(tmp_path / "winoground" / "data" / "images")
    (tmp_path / "winoground" / "data" / "images.zip").write_bytes(b"")
    assert winoground.main(_args({**vilt_world, "winoground": str(tmp_path / "winoground")})) == 2
    assert "no images/ folder next to" in capsys.readouterr().err
    bad = tmp_path / "examples.jsonl"
    bad.write_text('{"caption_0": "a", "caption_1": "b", "image_0": "x"}\n')
    with pytest.raises(DataFileError, match="examples.jsonl, line 1"):
        winoground.read_examples(str(bad))
    with pytest.raises(SystemExit) as exit_:
        winoground.main(_args(vilt_world)[:-3] + ["--no-progress"])
    assert exit_.value.code == 2 and "missing --data" in capsys.readouterr().err
