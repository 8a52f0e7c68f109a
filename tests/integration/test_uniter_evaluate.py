"""Full-ranking evaluation: score matrix, recalls, CLI, torchrun sharding, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from . import helpers as H

from integrations.retrieval import compute_recalls, evaluate_retrieval, score_matrix
from integrations.uniter.data import ImgDb, MissingRecordError, TxtDb, collate
from integrations.uniter.evaluate import main
from integrations.uniter.model import build_model
from integrations.uniter.plugin import UniterPairs

RECALL_KEYS = ("img_r1", "img_r5", "img_r10", "txt_r1", "txt_r5", "txt_r10", "rsum")


def _open(paths, txt_db=None, config=None):
    """The split of ``paths`` as the engine reads it (``txt_db``: another caption database)."""
    return UniterPairs([(TxtDb(txt_db or paths.txt_db), ImgDb(paths.img_db, **H.SETTING))], model_config=config,
                       image_cache=0)


@pytest.fixture(scope="module")
def model(model_files):
    m, _ = build_model(model_files["config"], model_files["finetuned"])
    return m.eval()


@pytest.mark.parametrize("variant", ["plain", "compressed"])
def test_score_matrix_equals_pairs_scored_one_by_one(dbs, model, variant):
    pairs = _open(dbs[variant])
    txt_db, img_db = pairs.sources[0]
    result = score_matrix(model, pairs, collate, batch_size=8, progress=False)
    assert result.scores.shape == (21, 7) and result.txt_ids == txt_db.ids
    assert result.img_fnames == sorted(img_db.names)
    brute = torch.tensor([[H.score_one_pair(model, txt_db.combine_inputs(txt_db.input_ids(t)).tolist(),
                                            *img_db[fname])
                           for fname in result.img_fnames] for t in result.txt_ids])
    torch.testing.assert_close(result.scores, brute, rtol=1e-5, atol=1e-5)
    assert [result.img_fnames[j] for j in result.gt.tolist()] == [txt_db.txt2img[t] for t in txt_db.ids]


def test_recalls_equal_brute_force(dbs, model):
    pairs = _open(dbs["plain"])
    txt_db = pairs.sources[0][0]
    result = score_matrix(model, pairs, collate, progress=False)
    metrics = evaluate_retrieval(model, pairs, collate, batch_size=5, progress=False)
    brute = H.brute_force_recalls(result.scores, result.txt_ids, result.img_fnames, txt_db.txt2img)
    for key in RECALL_KEYS:
        assert metrics[key] == pytest.approx(brute[key], abs=1e-12), key
    assert 0 < metrics["img_r1"] < 1 and metrics["n_pairs"] == 21 * 7 and metrics["pairs_per_s"] > 0
    assert metrics["r_mean"] == pytest.approx(metrics["rsum"] / 600)


def test_batch_size_and_variant_do_not_change_scores(dbs, model):
    a = score_matrix(model, _open(dbs["plain"]), collate, batch_size=1, progress=False).scores
    b = score_matrix(model, _open(dbs["compressed"]), collate, batch_size=1000, progress=False).scores
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compute_recalls_by_hand_with_ties():
    # 4 captions, 3 images; captions 0, 1 -> image 0, caption 2 -> image 1, caption 3 -> image 2
    scores = torch.tensor([[0.9, 0.9, 0.1],      # image 0: rank 0 (tie, lower index first)
                           [0.1, 0.9, 0.8],      # image 0: rank 2
                           [0.2, 0.5, 0.9],      # image 1: rank 1
                           [0.85, 0.2, 0.85]])   # image 2: rank 1 (tie lost to image 0)
    r = compute_recalls(scores, torch.tensor([0, 0, 1, 2]), ks=(1, 2))
    assert (r["img_r1"], r["img_r2"]) == (0.25, 0.75)
    # columns: image 0 best caption 0 rank 0; image 1 caption 2 rank 2; image 2 caption 3 rank 1
    assert (r["txt_r1"], r["txt_r2"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert r["rsum"] == pytest.approx(100 * (0.25 + 0.75 + 1 / 3 + 2 / 3))


def test_the_original_ir_counting_quirk_is_fixed():
    scores = torch.tensor([[0.9, 0.5, 0.1],    # image 0 at rank 0
                           [0.9, 0.5, 0.1],    # image 1 at rank 1
                           [0.9, 0.1, 0.5]])   # image 2 at rank 1
    gt = torch.tensor([0, 1, 2])

    def original_ir(k):  # the released itm_eval: counts entries of the (row, column) hits below k
        hits = (scores.topk(3, dim=1).indices == gt[:, None]).nonzero()
        return (hits < k).sum().item() / len(gt)

    assert original_ir(1) == 2 / 3 and original_ir(2) == 5 / 3  # row 0 counted twice; IR@2 > 1
    r = compute_recalls(scores, gt, ks=(1, 2))
    assert (r["img_r1"], r["img_r2"]) == (pytest.approx(1 / 3), 1.0)


def test_compute_recalls_rejects_nan_and_bad_shapes():
    with pytest.raises(ValueError, match="NaN"):
        compute_recalls(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="gt"):
        compute_recalls(torch.zeros(3, 2), torch.tensor([0, 1]))


def test_image_missing_from_img_db_names_db_and_image(dbs, model, tmp_path):
    from integrations.uniter.data import write_txt_db
    from integrations.uniter.data.synthetic import BERT_BASE_CASED_META

    path = tmp_path / "t.db"
    write_txt_db(path, {"1": {"input_ids": [120], "img_fname": "absent.npz"}}, BERT_BASE_CASED_META)
    with pytest.raises(MissingRecordError) as err:
        _open(dbs["plain"], txt_db=path)
    assert "'absent.npz'" in str(err.value) and dbs["plain"].img_db in str(err.value)


def test_token_ids_beyond_the_vocabulary_are_reported(dbs, model, tmp_path):
    from integrations.uniter.data import write_txt_db
    from integrations.uniter.data.synthetic import BERT_BASE_CASED_META

    img_db = ImgDb(dbs["plain"].img_db, **H.SETTING)
    path = tmp_path / "t.db"
    write_txt_db(path, {"5": {"input_ids": [28000], "img_fname": img_db.names[0]}}, BERT_BASE_CASED_META)
    with pytest.raises(ValueError, match=r"'5'.*vocab_size"):
        evaluate_retrieval(model, _open(dbs["plain"], txt_db=path, config=model.config), collate, progress=False)


def _train_config(tmp_path, dbs, model_files, variant="plain"):
    cfg = json.loads(open(os.path.join(H.FIXTURES, "train-itm-flickr-base-8gpu-hn.json")).read())
    cfg.update(test_txt_db=dbs[variant].txt_db, test_img_db=dbs[variant].img_db, model_config=model_files["config"],
               inf_minibatch_size=16, compressed_db=variant == "compressed", **H.SETTING)
    path = tmp_path / f"train-{variant}.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_cli_single_process(dbs, model_files, model, tmp_path, capsys):
    config = _train_config(tmp_path, dbs, model_files, "compressed")
    out = tmp_path / "res" / "results.json"
    assert main(["--config", config, "--checkpoint", model_files["finetuned"], "--output", str(out),
                 "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    expected = evaluate_retrieval(model, _open(dbs["compressed"]), collate, progress=False)
    for key in RECALL_KEYS:
        assert report["metrics"][key] == pytest.approx(expected[key]), key
    assert report["n_pairs"] == 147 and report["world_size"] == 1 and report["batch_size"] == 16


def test_cli_requires_databases(model_files, capsys):
    with pytest.raises(SystemExit):
        main(["--checkpoint", model_files["finetuned"], "--model-config", model_files["config"]])
    assert "--txt-db" in capsys.readouterr().err


def test_torchrun_two_processes_equal_one(dbs, model_files, tmp_path):
    config = _train_config(tmp_path, dbs, model_files)
    common = ["-m", "integrations.uniter.evaluate", "--config", config, "--checkpoint", model_files["finetuned"],
              "--no-progress", "--batch-size", "10"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([H.REPO_ROOT, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    runs = {}
    for procs in (1, 2):
        out, scores = tmp_path / f"r{procs}.json", tmp_path / f"s{procs}.pt"
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                    if procs > 1 else [sys.executable])
        proc = subprocess.run(launcher + common + ["--output", str(out), "--save-scores", str(scores)],
                              cwd=H.REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "pairs/s" in proc.stderr
        runs[procs] = (json.loads(out.read_text()), torch.load(scores, weights_only=True))
    (one, s1), (two, s2) = runs[1], runs[2]
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["metrics"] == one["metrics"]
    assert s1["img_fnames"] == s2["img_fnames"] and s1["txt_ids"] == s2["txt_ids"]
    torch.testing.assert_close(s2["scores"], s1["scores"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["fine-tuned", "pre-trained"])
def test_evaluates_the_demo_checkpoints_on_64_d_features(tmp_path, capsys, layout):
    """The built-in demo's model (64-d region features): the width comes from the img_db, not 2048."""
    import numpy as np

    from integrations.retrieval.checkpoint import save_weights
    from integrations.uniter import demo
    from integrations.uniter.config import UniterModelConfig
    from integrations.uniter.data import write_img_db, write_txt_db
    from integrations.uniter.data.synthetic import random_image_record
    from integrations.uniter.model import UniterForRetrieval

    rng = np.random.default_rng(0)
    images = {f"scene_{i}.npz": random_image_record(rng, 4, demo.IMG_DIM) for i in range(4)}
    captions = {str(c): {"input_ids": rng.integers(5, len(demo.VOCAB), 6).tolist(), "img_fname": f"scene_{c // 2}.npz"}
                for c in range(8)}
    write_txt_db(tmp_path / "txt.db", captions, demo.META)
    write_img_db(tmp_path / "img", images, **demo.SETTING)
    (tmp_path / "demo.json").write_text(json.dumps(demo.MODEL_CONFIG))
    (tmp_path / "train.json").write_text(json.dumps({**demo.SETTING, "model_config": str(tmp_path / "demo.json")}))
    torch.manual_seed(0)
    model = UniterForRetrieval(UniterModelConfig.from_dict(demo.MODEL_CONFIG), img_dim=demo.IMG_DIM).eval()
    if layout == "fine-tuned":  # what finetune writes: model_step_<N>_final.pt
        checkpoint = save_weights(model, str(tmp_path), "3_final")
    else:  # what the demo's ITM pre-training writes: the released layout, without rank_output
        checkpoint = str(tmp_path / "pretrained.pt")
        torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("rank_output.")}, checkpoint)
        model.init_rank_output_from_itm()
    assert main(["--config", str(tmp_path / "train.json"), "--txt-db", str(tmp_path / "txt.db"), "--img-db",
                 str(tmp_path / "img"), "--checkpoint", checkpoint, "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    pairs = UniterPairs([(TxtDb(str(tmp_path / "txt.db")), ImgDb(str(tmp_path / "img"), **demo.SETTING))],
                        image_cache=0)
    expected = evaluate_retrieval(model, pairs, collate, progress=False)
    assert report["n_captions"] == 8 and report["n_images"] == 4
    for key in RECALL_KEYS:
        assert report["metrics"][key] == pytest.approx(expected[key]), key
