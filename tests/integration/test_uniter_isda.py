"""ISDa end to end: a tiny generated model, a generated Flickr30k Entities
set (Sentences + Annotations) and databases in the original formats, through
``python -m integrations.uniter.isda`` and ``...visualize``."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from integrations.uniter import isda as isda_cmd
from integrations.uniter import visualize
from integrations.retrieval.isda import pair_scores
from integrations.uniter.data import ImgDb, TxtDb, collate, write_img_db, write_txt_db

from . import helpers as H
from .builders import annotation_xml, box_object, flag_object, write

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "A", "man", "in", "a", "red", "shirt", "holds", "dog",
         "small", "ball", "on", "the", "grass", ".", "wo", "##man", "throws", "blue", "frisbee", "park", "near",
         "tree", "child", "with"]
W, HGT = 500, 400
# (image id, captions, {entity id: (x1, y1, x2, y2) 1-based pixels})
IMAGES = [
    ("1001", ["[/EN#1/people A man] in [/EN#2/clothing a red shirt] holds [/EN#3/animals a dog] .",
              "[/EN#1/people A man] holds [/EN#3/animals a small dog] on [/EN#4/scene the grass] ."],
     {"1": (51, 41, 250, 380), "2": (81, 101, 220, 240), "3": (261, 201, 420, 360)}),
    ("1002", ["[/EN#5/people A woman] throws [/EN#6/other a blue frisbee] in [/EN#7/scene the park] .",
              "[/EN#5/people A woman] near [/EN#8/other a tree] throws [/EN#6/other a frisbee] ."],
     {"5": (101, 51, 300, 390), "6": (321, 61, 400, 120), "8": (401, 11, 499, 390)}),
    ("1003", ["[/EN#9/people A child] with [/EN#10/other a ball] .",
              "[/EN#0/notvisual A child] on [/EN#11/scene the grass] ."],
     {"9": (11, 11, 200, 300), "10": (221, 251, 300, 330)}),
]


def _tokenizer(vocab_path: Path):
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab=str(vocab_path), do_lower_case=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("isda")
    vocab = write(root / "vocab.txt", "\n".join(VOCAB) + "\n")
    tok = _tokenizer(vocab)
    from integrations.entities import parse_caption, tokenize_caption

    rng = np.random.default_rng(0)
    examples, images = {}, {}
    ents = root / "flickr30k_entities"
    for img_id, captions, boxes in IMAGES:
        write(ents / "Sentences" / f"{img_id}.txt", "\n".join(captions) + "\n")
        objects = [box_object([e], b) for e, b in boxes.items()] + [flag_object(["4", "7", "11"], scene=1, nobndbox=0)]
        write(ents / "Annotations" / f"{img_id}.xml", annotation_xml(f"{img_id}.jpg", W, HGT, objects))
        fname = f"flickr30k_{img_id}.npz"
        # regions: each annotated box (slightly jittered, IoU > 0.5) plus random distractors
        rows = [((x1 - 1 + 3) / W, (y1 - 1 + 2) / HGT, (x2 - 1 - 2) / W, (y2 - 1 - 3) / HGT) for x1, y1, x2, y2 in boxes.values()]
        for _ in range(4):
            x, y = rng.uniform(0, 0.5, 2)
            rows.append((x, y, x + 0.1, y + 0.1))
        bb = np.array(rows)
        norm_bb = np.concatenate([bb, bb[:, 2:3] - bb[:, 0:1], bb[:, 3:4] - bb[:, 1:2]], axis=1)
        n = len(rows)
        images[fname] = {"features": rng.random((n, 2048), dtype=np.float32) * 4, "norm_bb": norm_bb,
                         "conf": np.linspace(0.9, 0.3, n).reshape(-1, 1), "soft_labels": np.zeros((n, 1601))}
        for c, line in enumerate(captions):
            ids = tokenize_caption(parse_caption(line), tok).input_ids
            examples[f"{img_id}_{c}"] = {"input_ids": list(ids), "img_fname": fname}
    meta = {"CLS": 2, "SEP": 3, "MASK": 4, "v_range": [5, len(VOCAB)]}
    write_txt_db(root / "txt_db" / "test.db", examples, meta)
    setting = {"conf_th": 0.2, "max_bb": 8, "min_bb": 2}
    write_img_db(root / "img_db" / "flickr", images, **setting, compressed=False)
    model = H.random_model(seed=0)
    model_cfg = root / "uniter-tiny.json"
    model_cfg.write_text(json.dumps(H.TINY))
    ckpt_a = root / "a.pt"
    torch.save(H.to_original_format(model.state_dict()), ckpt_a)
    ckpt_b = root / "b.pt"
    torch.save(H.to_original_format(H.random_model(seed=1).state_dict()), ckpt_b)
    train_cfg = {
        "test_txt_db": str(root / "txt_db" / "test.db"), "test_img_db": str(root / "img_db" / "flickr"),
        "model_config": str(model_cfg), "inf_minibatch_size": 4, **setting, "num_bb": 36,
    }
    (root / "train.json").write_text(json.dumps(train_cfg))
    return {"root": root, "vocab": vocab, "entities": ents, "config": root / "train.json", "a": ckpt_a, "b": ckpt_b,
            "model_cfg": model_cfg, "setting": setting}


def test_isda_matches_brute_force(world):
    from integrations.uniter.config import UniterModelConfig
    from integrations.uniter.model import UniterForRetrieval, load_checkpoint

    model = UniterForRetrieval(UniterModelConfig.from_json(world["model_cfg"]))
    load_checkpoint(model, world["a"])
    model.eval()
    txt_db = TxtDb(world["root"] / "txt_db" / "test.db")
    img_db = ImgDb(world["root"] / "img_db" / "flickr", **world["setting"])
    tok = isda_cmd.load_tokenizer(str(world["vocab"]))
    pairs = list(isda_cmd.annotated_pairs(txt_db, img_db, str(world["entities"]), tok))
    # caption 1003_1 has no object in both modalities (notvisual + scene only)
    assert [p.txt_id for p in pairs] == ["1001_0", "1001_1", "1002_0", "1002_1", "1003_0"]
    assert pairs[0].groups.names == ["A man", "a red shirt", "a dog"]
    assert pairs[1].groups.entity_ids == ["1", "3"]  # the grass is a scene, not boxed
    res = isda_cmd.isda_over_split(model, txt_db, img_db, str(world["entities"]), tok, progress=False, batch_size=2)
    assert res["n_captions"] == 5 and res["skipped"] == {"no object present in both modalities": 1}
    values = []
    for p in pairs:
        r = pair_scores(model, collate, [p], torch.device("cpu"))
        s = r.scores[0].double()
        t, v = r.text_mask[0], r.image_mask[0]
        n = s.shape[-1]
        pt = torch.softmax(s.masked_fill(~t, -1e9), -1).mean(0).numpy()
        pv = torch.softmax(s.masked_fill(~v, -1e9), -1).mean(0).numpy()
        assert n == len(p.caption) + p.image.features.shape[0]
        values.append(H.brute_force_isda(pt, pv, p.groups.text_positions, p.groups.image_positions))
    assert res["isda"] == pytest.approx(np.mean(values), rel=1e-4)
    assert res["isda"] > 0
    for key in ("iais_singular_V", "iais_singular_L", "iais_distributed_V", "iais_distributed_L"):
        assert np.isfinite(res[key])


def test_isda_command_end_to_end(world, capsys, tmp_path):
    out = tmp_path / "isda.json"
    rc = isda_cmd.main(["--config", str(world["config"]), "--checkpoint", str(world["a"]), "--entities",
                        str(world["entities"]), "--vocab", str(world["vocab"]), "--output", str(out), "--no-progress"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["n_captions"] == 5 and result["isda"] > 0 and np.isfinite(result["isda"])
    assert "ISDa" in capsys.readouterr().err


def test_isda_command_errors(world, capsys):
    with pytest.raises(SystemExit) as exc:
        isda_cmd.main(["--config", str(world["config"]), "--checkpoint", str(world["a"]), "--entities",
                       str(world["entities"]), "--vocab", str(world["vocab"]), "--iou", "1.5"])
    assert exc.value.code == 2 and "--iou" in capsys.readouterr().err
    # a missing file is a one-line error with exit status 2, not a traceback
    assert isda_cmd.main(["--config", str(world["config"]), "--checkpoint", str(world["a"]), "--entities",
                          str(world["entities"]), "--vocab", str(world["root"] / "nope.txt")]) == 2
    assert "error: vocabulary file not found" in capsys.readouterr().err
    assert isda_cmd.main(["--config", str(world["config"]), "--checkpoint", str(world["a"]), "--entities",
                          str(world["root"]), "--vocab", str(world["vocab"]), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error: no Sentences/ folder" in err and "Traceback" not in err


def test_a_malformed_entities_file_is_one_line_naming_it(world, tmp_path, capsys):
    ents = tmp_path / "entities"
    shutil.copytree(world["entities"], ents)
    (ents / "Sentences" / "1002.txt").write_text("[/EN#1/people A man in [/EN#2/clothing a shirt\n")
    common = ["--config", str(world["config"]), "--checkpoint", str(world["a"]), "--entities", str(ents),
              "--vocab", str(world["vocab"])]
    assert isda_cmd.main(common + ["--no-progress"]) == 2
    assert visualize.main(common + ["--image", "1002", "--output", str(tmp_path / "fig7.png")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 2 and "Traceback" not in err  # one line from each command
    assert all(f"{ents / 'Sentences' / '1002.txt'}, line 1: nested phrase" in line for line in lines), lines


def test_visualize_two_checkpoints(world, tmp_path, capsys):
    png = tmp_path / "fig7.png"
    rc = visualize.main(["--config", str(world["config"]), "--checkpoint", str(world["a"]), "--checkpoint",
                         str(world["b"]), "--label", "without IAIS", "--label", "with IAIS", "--entities",
                         str(world["entities"]), "--vocab", str(world["vocab"]), "--image", "1001", "--output", str(png)])
    assert rc == 0 and png.is_file() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "3 objects" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        visualize.main(["--config", str(world["config"]), "--checkpoint", str(world["a"]), "--label", "x", "--label",
                        "y", "--entities", str(world["entities"]), "--vocab", str(world["vocab"])])
