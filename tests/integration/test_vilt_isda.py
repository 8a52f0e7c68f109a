"""``python -m integrations.vilt.isda``: objects mapped to the patches whose centre lies in their boxes,
ISDa equal to a loop computation on ViLT's own attention probabilities, and the command's errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from integrations.retrieval.objective import SetupError
from integrations.vilt import isda as isda_cmd
from integrations.vilt.isda import patch_grid, patch_positions

from . import helpers as H
from .vilt_builders import MAX_TEXT_LEN, SPLITS, scene


def test_patch_rule_by_hand():
    # a 64 x 40 image resized to 48 x 32 (2 x 3 patches of 16): patch centres at x = 8, 24, 40 and y = 8, 24 of
    # the resized image, i.e. x = 10.7, 32, 53.3 and y = 10, 30 of the original
    assert patch_positions([(2, 4, 29, 35)], (64, 40), (32, 48), 16) == [0, 3]  # x in [2, 30]: first column
    assert patch_positions([(34, 3, 61, 36)], (64, 40), (32, 48), 16) == [2, 5]  # x in [34, 62]: last column
    assert patch_positions([(31, 0, 40, 15)], (64, 40), (32, 48), 16, offset=17) == [18]  # x = 32, y = 10
    assert patch_positions([(0, 0, 5, 5), (50, 25, 63, 39)], (64, 40), (32, 48), 16) == [5]
    assert patch_positions([], (64, 40), (32, 48), 16) == []
    with pytest.raises(SetupError, match="not a multiple of the patch size 16"):
        patch_grid(40, 48, 16)


def _args(world, *extra) -> list[str]:
    return ["--model", world["model"], "--karpathy-json", world["karpathy"], "--image-root", world["images"],
            "--max-text-len", str(MAX_TEXT_LEN), "--entities", world["entities"], "--no-progress", *extra]


def _patches_in_box(box, size, grid_size) -> set[tuple[int, int]]:
    """Patches (r, c) of the resized image whose centre, taken back to original pixels, lies in the box."""
    (width, height), (h, w) = size, grid_size
    x1, y1, x2, y2 = box
    return {(r, c) for r in range(h // 16) for c in range(w // 16)
            if x1 <= (c + 0.5) * 16 * width / w <= x2 + 1 and y1 <= (r + 0.5) * 16 * height / h <= y2 + 1}


def _vilt_attention(model_dir, image_path, text):
    """ViLT's own last-layer attention of one pair, and the (row, column) of the patch at each image position."""
    from PIL import Image
    from transformers import ViltForImageAndTextRetrieval, ViltProcessor

    processor = ViltProcessor.from_pretrained(model_dir)
    model = ViltForImageAndTextRetrieval.from_pretrained(model_dir).eval()
    embeddings, seen = model.vilt.embeddings, {}
    visual_embed = embeddings.visual_embed

    def recording(*args, **kwargs):
        out = visual_embed(*args, **kwargs)
        seen["index"] = out[2][0][0]
        return out

    embeddings.visual_embed = recording
    inputs = processor(images=Image.open(image_path).convert("RGB"), text=text, padding="max_length",
                       max_length=MAX_TEXT_LEN, return_tensors="pt")
    with torch.no_grad():
        attention = model(**inputs, output_attentions=True).attentions[-1][0].double()
    return attention, [tuple(rc) for rc in seen["index"].tolist()], inputs["pixel_values"].shape[2:]


def _reference(world) -> list[float]:
    """ISDa of every annotated test caption with loops, on ViLT's attention probabilities renormalised per
    modality and averaged over heads; objects from the drawn boxes: words 1-3 and 6-8 of each caption."""
    values = []
    for index, split in enumerate(SPLITS):
        if split != "test" or index == len(SPLITS) - 1:
            continue
        spec = scene(index)
        path = f"{world['images']}/{1000 + index}.png"
        entries = json.loads(open(world["karpathy"]).read())["images"][index]["sentences"]
        for k, sentence in enumerate(entries):
            attention, order, grid = _vilt_attention(world["model"], path, sentence["raw"])
            boxes = spec["boxes"] if k == 0 else spec["boxes"][::-1]  # the second caption names object 2 first
            image_groups = [[MAX_TEXT_LEN + 1 + j for j, rc in enumerate(order)
                             if rc in _patches_in_box(box, spec["size"], tuple(grid))] for box in boxes]
            n = attention.shape[-1]
            text = np.zeros(n, bool)
            text[1:1 + len(sentence["raw"].split())] = True
            image = np.arange(n) > MAX_TEXT_LEN
            p = attention.numpy()
            pt = (p * text / (p * text).sum(-1, keepdims=True)).mean(0)
            pv = (p * image / (p * image).sum(-1, keepdims=True)).mean(0)
            values.append(H.brute_force_isda(pt, pv, [[1, 2, 3], [6, 7, 8]], image_groups))
    return values


def test_isda_equals_a_loop_computation_on_vilts_own_attention(vilt_world, tmp_path):
    out = tmp_path / "isda.json"
    assert isda_cmd.main(_args(vilt_world, "--output", str(out), "--batch-size", "3")) == 0
    result = json.loads(out.read_text())
    values = _reference(vilt_world)
    assert result["n_captions"] == len(values) == 8 and result["n_objects"] == 16
    assert result["skipped"] == {"no Sentences/Annotations file for the image": 2}
    assert result["isda"] == pytest.approx(np.mean(values), rel=1e-4)
    assert all(np.isfinite(result[f"iais_{m}_{a}"]) for m in ("singular", "distributed") for a in ("V", "L"))
    limited = tmp_path / "limited.json"
    assert isda_cmd.main(_args(vilt_world, "--output", str(limited), "--limit", "3")) == 0
    assert json.loads(limited.read_text())["isda"] == pytest.approx(np.mean(values[:3]), rel=1e-4)


def test_isda_command_errors(vilt_world, tmp_path, capsys):
    args = _args(vilt_world)
    with pytest.raises(SystemExit) as exit_:
        isda_cmd.main(args[:args.index("--entities")] + ["--no-progress"])
    assert exit_.value.code == 2 and "missing --entities" in capsys.readouterr().err
    assert isda_cmd.main(_args({**vilt_world, "entities": str(tmp_path)})) == 2
    err = capsys.readouterr().err
    assert "error: no Sentences/ folder" in err and "Traceback" not in err
    assert isda_cmd.main(_args(vilt_world, "--split", "train")) == 2  # no Entities file for any training image
    assert "has an object present in both modalities" in capsys.readouterr().err
    ents = tmp_path / "malformed"
    shutil.copytree(vilt_world["entities"], ents)
    bad = sorted((ents / "Sentences").iterdir())[0]
    bad.write_text("[/EN#1/other a red circle left of a blue square\n")
    assert isda_cmd.main(_args({**vilt_world, "entities": str(ents)})) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and f"{bad}, line 1: phrase" in lines[0] and "Traceback" not in err
