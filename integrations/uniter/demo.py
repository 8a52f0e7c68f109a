"""The built-in demo: a synthetic *relational* retrieval set, two tiny UNITERs, one table.

``python -m integrations.uniter.finetune`` with no argument (or
``python -m integrations.uniter.demo``) runs it on the CPU in a few minutes:

1. generates once (cached under ``$IAISREG_CACHE/demo`` or
   ``~/.cache/iaisreg/demo``, with a version stamp) a small image-text set in
   the original UNITER LMDB formats, written with ``data.writer``:

   - a scene holds two objects, each with a shape, a colour and a size, and
     one spatial relation between them (left of / right of / above / below);
   - an image is a handful of regions: one per object, whose 64-d feature
     encodes shape + colour + size (plus noise) and whose box (``norm_bb``)
     encodes its position and size, and 2-3 background regions;
   - a caption is a sequence of word-piece ids of a 21-word vocabulary
     (``vocab.txt``, ``meta.json``) describing the scene, e.g.
     "a small red cube is left of a large blue ball";
   - scenes come in families of four images: a base scene, the same with the
     two colours swapped, with the relation reversed, and with the two sizes
     swapped, so that the nearest wrong captions of an image differ from its
     own only in an attribute binding or the relation;
   - ``annotations/<split>_objects.json`` records, per caption, which token
     positions and which region indices belong to each object (for ISDa);

2. pre-trains a tiny UNITER (hidden 64, 2 layers, 4 heads) from random weights on
   image-text matching (UNITER's ITM task: matching vs random pairs, about 20 s,
   cached too), because hard-negative fine-tuning started from random weights
   collapses (see :func:`pretrain_itm`); the checkpoint has the released layout
   (``itm_output``, no ``rank_output``);
3. fine-tunes it with the hard-negative recipe twice, with the same seed and
   data: without IAIS and with ``--iais singular``;
4. prints R@1/5/10 both ways and RSUM on the test split, and the mean ISDa
   (paper Eq. 9, lower = linguistic and visual self-attention agree more at the
   object level) of each model's last layer on the test positives, for the
   starting checkpoint and both fine-tuned models;
5. draws, next to ``demo_summary.json``, the object-level attention of one
   test pair without and with IAIS (``object_attention.png``, paper Fig. 7)
   and the training curves of both runs (``training_curves.png``: margin
   loss, IAIS term, lambda_t, validation RSUM), and prints their paths.

``--quiet`` prints the results only (the table, what it shows, the output
paths); progress goes to stderr as :mod:`integrations.retrieval.progress`
says (a bar on a terminal, plain lines in a file or a pipe).

It is a small sanity demo of the machinery, not a reproduction of the
paper: with a model this small, trained for about a minute, the RSUM
difference between the two runs is not larger than its spread over seeds
(ISDa, which IAIS optimizes, drops consistently). It takes 1.5 to 5
minutes on 2 CPU cores the first time, depending on the CPU; less once the
data and the pre-trained checkpoint are cached.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from typing import Sequence

import numpy as np
import torch

from ..retrieval import evaluate_retrieval, train
from ..retrieval.checkpoint import save_atomic
from ..retrieval.isda import ObjectPair, isda_over_pairs, object_attention
from ..retrieval.logs import read_run_log
from ..retrieval.mining import collate_pairs
from ..retrieval.optim import build_optimizer
from ..retrieval.plotting import draw_object_attention, draw_training_curves
from .config import UniterData, UniterModelConfig, read_train_config
from .data import TxtDb, collate, write_img_db, write_txt_db
from .model import UniterForRetrieval
from .plugin import UniterPairs, UniterPlugin

__all__ = ["main", "build_demo_data", "ensure_demo_data", "pretrain_itm", "ensure_pretrained",
           "demo_cache_dir", "mean_isda", "format_summary", "demo_config", "VOCAB", "DEMO_VERSION"]

#: bump when the generated data change
DEMO_VERSION = 1

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SHAPES = ["cube", "ball", "cone", "ring", "star", "cup"]
COLOURS = ["red", "green", "blue", "yellow", "purple"]
SIZES = ["small", "large"]
RELATION_WORDS = {"left": ["left", "of"], "right": ["right", "of"], "above": ["above"], "below": ["below"]}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
FILLERS = ["a", "the", "is"]
VOCAB = SPECIALS + FILLERS + ["left", "right", "of", "above", "below"] + SIZES + COLOURS + SHAPES
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
META = {"CLS": WORD_ID["[CLS]"], "SEP": WORD_ID["[SEP]"], "MASK": WORD_ID["[MASK]"],
        "v_range": [len(SPECIALS), len(VOCAB)], "vocab": "vocab.txt"}
IMG_DIM = 64
SETTING = {"conf_th": 0.2, "max_bb": 10, "min_bb": 2}
SPLITS = {"train": 110, "val": 10, "test": 40}  # families of 4 images, 3 captions each
#: the tiny UNITER (initializer_range 0.1: with BERT's 0.02 a model this small learns nothing for
#: thousands of steps, its [CLS] output barely depending on the input)
MODEL_CONFIG = {"vocab_size": 32, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 256, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 32, "type_vocab_size": 2,
                "initializer_range": 0.1}
#: the image-text matching "pre-training" of the demo (see :func:`pretrain_itm`)
PRETRAIN = {"steps": 1500, "batch_size": 32, "learning_rate": 3e-4, "seed": 0}


def demo_cache_dir() -> str:
    """``$IAISREG_CACHE/demo`` or ``~/.cache/iaisreg/demo``."""
    base = os.environ.get("IAISREG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "iaisreg")
    return os.path.join(base, "demo")


# ------------------------------------------------------------------ the scenes


def _caption(scene: dict, template: int) -> tuple[list[str], list[int]]:
    """Words of one caption and, per word, the object it describes (-1: none)."""
    a, b, rel = scene["objects"][0], scene["objects"][1], scene["relation"]

    def phrase(obj: dict, k: int, article: str, with_size: bool) -> tuple[list[str], list[int]]:
        words = [article] + ([obj["size"]] if with_size else []) + [obj["colour"], obj["shape"]]
        return words, [-1] + [k] * (len(words) - 1)

    if template == 0:    # a small red cube is left of a large blue ball
        parts = [phrase(a, 0, "a", True), (["is"] + RELATION_WORDS[rel], [-1] * (1 + len(RELATION_WORDS[rel]))),
                 phrase(b, 1, "a", True)]
    elif template == 1:  # a large blue ball is right of a small red cube
        inv = INVERSE[rel]
        parts = [phrase(b, 1, "a", True), (["is"] + RELATION_WORDS[inv], [-1] * (1 + len(RELATION_WORDS[inv]))),
                 phrase(a, 0, "a", True)]
    else:                # the red cube is left of the blue ball
        parts = [phrase(a, 0, "the", False), (["is"] + RELATION_WORDS[rel], [-1] * (1 + len(RELATION_WORDS[rel]))),
                 phrase(b, 1, "the", False)]
    words = [w for p in parts for w in p[0]]
    owner = [o for p in parts for o in p[1]]
    return words, owner


def _family(rng: np.random.Generator) -> list[dict]:
    """A base scene and its colour-swapped, relation-reversed and size-swapped variants."""
    sa, sb = rng.choice(len(SHAPES), 2, replace=False)
    ca, cb = rng.choice(len(COLOURS), 2, replace=False)
    size_a = int(rng.integers(2))
    rel = ["left", "right", "above", "below"][int(rng.integers(4))]
    a = {"shape": SHAPES[sa], "colour": COLOURS[ca], "size": SIZES[size_a]}
    b = {"shape": SHAPES[sb], "colour": COLOURS[cb], "size": SIZES[1 - size_a]}
    base = {"objects": [a, b], "relation": rel}
    colour_swap = {"objects": [dict(a, colour=b["colour"]), dict(b, colour=a["colour"])], "relation": rel}
    reversed_ = {"objects": [dict(a), dict(b)], "relation": INVERSE[rel]}
    size_swap = {"objects": [dict(a, size=b["size"]), dict(b, size=a["size"])], "relation": rel}
    return [base, colour_swap, reversed_, size_swap]


def _image_record(scene: dict, rng: np.random.Generator, embed: dict) -> tuple[dict, list[list[int]]]:
    """img_db record of a scene, and the region indices of each object."""
    rel = scene["relation"]
    centres = []
    near, far = rng.uniform(0.18, 0.32), rng.uniform(0.68, 0.82)
    for k in range(2):
        first = (k == 0) == (rel in ("left", "above"))  # object k is the left/upper one
        along = near if first else far
        across = rng.uniform(0.3, 0.7)
        centres.append((along, across) if rel in ("left", "right") else (across, along))
    boxes, feats, confs, owner = [], [], [], []
    for k, obj in enumerate(scene["objects"]):
        side = rng.uniform(0.12, 0.18) if obj["size"] == "small" else rng.uniform(0.28, 0.36)
        w, h = side * rng.uniform(0.85, 1.15), side * rng.uniform(0.85, 1.15)
        cx, cy = centres[k]
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, w, h])
        feats.append(embed["shape"][obj["shape"]] + embed["colour"][obj["colour"]] + embed["size"][obj["size"]]
                     + rng.normal(0, 0.5, IMG_DIM))
        confs.append(rng.uniform(0.7, 1.0))
        owner.append(k)
    for _ in range(int(rng.integers(2, 4))):  # background clutter
        w, h = rng.uniform(0.05, 0.5, 2)
        x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        boxes.append([x, y, x + w, y + h, w, h])
        feats.append(embed["background"] + rng.normal(0, 1.0, IMG_DIM))
        confs.append(rng.uniform(0.3, 0.65))
        owner.append(-1)
    order = np.argsort(-np.asarray(confs), kind="stable")
    record = {
        "features": np.asarray(feats, dtype=np.float32)[order],
        "norm_bb": np.clip(np.asarray(boxes, dtype=np.float32), 0, 1)[order],
        "conf": np.asarray(confs, dtype=np.float32)[order].reshape(-1, 1),
        "soft_labels": np.full((len(confs), 8), 1 / 8, dtype=np.float32)[order],
    }
    regions = [[int(i) for i, j in enumerate(order) if owner[j] == k] for k in range(2)]
    return record, regions


def build_demo_data(root: str, *, seed: int = 0) -> dict:
    """Write the demo databases under ``root`` (which must not exist); returns the paths."""

    rng = np.random.default_rng(seed)
    scale = 1.0
    embed = {
        "shape": {s: rng.normal(0, scale, IMG_DIM) for s in SHAPES},
        "colour": {c: rng.normal(0, scale, IMG_DIM) for c in COLOURS},
        "size": {s: rng.normal(0, scale, IMG_DIM) for s in SIZES},
        "background": rng.normal(0, scale, IMG_DIM),
    }
    tmp = root + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "annotations"))
    images: dict[str, dict] = {}
    for split, n_families in SPLITS.items():
        examples: dict[str, dict] = {}
        objects: dict[str, dict] = {}
        for f in range(n_families):
            for v, scene in enumerate(_family(rng)):
                fname = f"scene_{split}_{f:04d}_{v}.npz"
                record, regions = _image_record(scene, rng, embed)
                images[fname] = record
                for t in range(3):
                    words, owner = _caption(scene, t)
                    txt_id = f"{split}_{f:04d}_{v}_{t}"
                    examples[txt_id] = {"input_ids": [WORD_ID[w] for w in words], "img_fname": fname,
                                        "toked_caption": words}
                    objects[txt_id] = {
                        "img_fname": fname, "family": f"{split}_{f:04d}", "relation": scene["relation"],
                        "objects": [{"name": f"{o['size']} {o['colour']} {o['shape']}",
                                     "tokens": [i for i, w in enumerate(owner) if w == k],
                                     "regions": regions[k]} for k, o in enumerate(scene["objects"])],
                    }
        txt_dir = os.path.join(tmp, "txt_db", f"itm_scenes_{split}.db")
        write_txt_db(txt_dir, examples, META)
        with open(os.path.join(txt_dir, "vocab.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(VOCAB) + "\n")
        with open(os.path.join(tmp, "annotations", f"{split}_objects.json"), "w", encoding="utf-8") as handle:
            json.dump({"about": "per caption: objects with their token positions (in input_ids, no [CLS]) and "
                                "region indices (rows of the img_db record); relation: of object 0 to object 1",
                       "captions": objects}, handle)
    write_img_db(os.path.join(tmp, "img_db", "scenes"), images, **SETTING)
    with open(os.path.join(tmp, "uniter-demo.json"), "w", encoding="utf-8") as handle:
        json.dump(MODEL_CONFIG, handle, indent=2)
    with open(os.path.join(tmp, "stamp.json"), "w", encoding="utf-8") as handle:
        json.dump({"version": DEMO_VERSION, "seed": seed, "splits": SPLITS, "img_dim": IMG_DIM}, handle)
    os.replace(tmp, root)  # all or nothing
    return demo_paths(root)


def demo_paths(root: str) -> dict:
    return {
        "root": root,
        "model_config": os.path.join(root, "uniter-demo.json"),
        "img_db": os.path.join(root, "img_db", "scenes"),
        **{f"{s}_txt_db": os.path.join(root, "txt_db", f"itm_scenes_{s}.db") for s in SPLITS},
        **{f"{s}_objects": os.path.join(root, "annotations", f"{s}_objects.json") for s in SPLITS},
    }


def ensure_demo_data(cache: str, *, seed: int = 0, log=print) -> dict:
    """The cached demo data, generated on first use (or when the version changed)."""
    root = os.path.join(cache, f"data-v{DEMO_VERSION}-seed{seed}")
    stamp = os.path.join(root, "stamp.json")
    try:
        with open(stamp, encoding="utf-8") as handle:
            if json.load(handle).get("version") == DEMO_VERSION:
                return demo_paths(root)
    except (OSError, ValueError):
        pass
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(cache, exist_ok=True)
    t0 = time.perf_counter()
    paths = build_demo_data(root, seed=seed)
    log(f"generated the synthetic relational set in {time.perf_counter() - t0:.1f} s: {root}")
    return paths


# ------------------------------------------------------------- pre-training


def pretrain_itm(paths: dict, out_path: str, *, steps: int, batch_size: int, learning_rate: float,
                 seed: int, log=print) -> str:
    """UNITER's image-text matching (ITM) task from scratch, saved as a pre-training checkpoint.

    Hard-negative fine-tuning assumes a model that already tells matching
    pairs from random ones: started from random weights, the hardest of the
    sampled negatives outscore the positive, the margin loss drives every
    sigmoid score to 0 and the gradient vanishes (all scores equal, loss =
    margin). UNITER's pre-training includes ITM, a 2-way classification
    (``itm_output``) of matching vs random pairs; this runs a small version of
    it (half the pairs matching, the other half a random image, no dropout)
    and saves the weights in the released layout: ``itm_output`` present,
    ``rank_output`` absent, so that fine-tuning initialises ``rank_output``
    from row 1 of ``itm_output`` exactly as with a real UNITER checkpoint.
    """

    t0 = time.perf_counter()
    pairs = _open_pairs(paths, "train", image_cache=1024)
    torch.manual_seed(seed)
    cfg = UniterModelConfig.from_dict(dict(MODEL_CONFIG, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model = UniterForRetrieval(cfg, img_dim=IMG_DIM).train()
    model.itm_output.requires_grad_(True)
    optimizer = build_optimizer(model, learning_rate=learning_rate)
    rng = np.random.default_rng(seed)
    try:
        for _ in range(steps):
            caps = rng.integers(0, pairs.n_captions, batch_size)
            imgs = np.array([pairs.caption_image[c] for c in caps])
            swap = rng.random(batch_size) < 0.5
            imgs[swap] = rng.integers(0, pairs.n_images, int(swap.sum()))
            target = torch.tensor([int(pairs.caption_image[c] == i) for c, i in zip(caps, imgs)])
            pooled, _ = model.encode(**collate_pairs(pairs, caps.tolist(), imgs.tolist(), collate))
            loss = torch.nn.functional.cross_entropy(model.itm_output(pooled), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        pairs.close()
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("rank_output.")}
    save_atomic(state, out_path)
    log(f"pre-trained the tiny UNITER on image-text matching ({steps} steps of {batch_size} pairs) in "
        f"{time.perf_counter() - t0:.0f} s: {out_path}")
    return out_path


def _open_pairs(paths: dict, split: str, **kwargs):
    """The demo's ``split`` as the engine reads it."""

    return UniterPairs.open([paths[f"{split}_txt_db"]], [paths["img_db"]], UniterData(**SETTING), **kwargs)


def ensure_pretrained(paths: dict, *, log=print) -> str:
    """The cached ITM pre-training checkpoint of the demo model (made on first use)."""
    stamp = json.dumps({"version": DEMO_VERSION, "model": MODEL_CONFIG, "pretrain": PRETRAIN}, sort_keys=True)
    digest = hashlib.sha1(stamp.encode()).hexdigest()[:10]
    out = os.path.join(paths["root"], "pretrained", f"uniter-demo-itm-{digest}.pt")
    if not os.path.isfile(out):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            pretrain_itm(paths, out, **PRETRAIN, log=log)
        finally:
            torch.set_num_threads(threads)
    return out


# ------------------------------------------------------------------- ISDa


def object_pairs(txt_db_path: str, img_db_path: str, objects_path: str, *, limit: int | None = None) -> list:
    """The positive pairs of a split (the first ``limit``) as :class:`ObjectPair` items, with the object names
    and the caption words: ``[(pair, names, words)]``."""
    with open(objects_path, encoding="utf-8") as handle:
        objects = json.load(handle)["captions"]
    pairs = _open_pairs({"test_txt_db": txt_db_path, "img_db": img_db_path}, "test", image_cache=0)
    try:
        out = []
        for c in range(pairs.n_captions if limit is None else min(limit, pairs.n_captions)):
            tokens, image = pairs.caption(c), pairs.image(pairs.caption_image[c])
            entry = objects[pairs.caption_ids[c]]["objects"]
            pair = ObjectPair(tokens, image, [[1 + i for i in o["tokens"]] for o in entry],
                              [[len(tokens) + r for r in o["regions"]] for o in entry])
            words = [VOCAB[int(i)] for i in tokens[1:-1]]  # without [CLS] and [SEP]
            out.append((pair, [o["name"] for o in entry], words))
        return out
    finally:
        pairs.close()


def mean_isda(model, txt_db_path: str, img_db_path: str, objects_path: str, *, batch_size: int = 64) -> float:
    """Mean ISDa (paper Eq. 9) of ``model``'s last layer over the positive pairs of a split."""
    annotated = [pair for pair, _, _ in object_pairs(txt_db_path, img_db_path, objects_path)]
    device = next(model.parameters()).device
    return isda_over_pairs(model, collate, annotated, batch_size=batch_size, device=device)["isda"]


# -------------------------------------------------------------------- the demo


def demo_config(paths: dict, pretrained: str, output_dir: str, *, steps: int = 600, seed: int = 42) -> dict:
    """The fine-tuning recipe of the demo, as an original training config.

    Differences from the Flickr30k config: 31 random -> 7 hard negatives
    (instead of 399 -> 31), 2 accumulated micro-steps (instead of 8), learning
    rate 3e-4 (a tiny model), no dropout, 600 steps with 60 of warm-up, validation every 60 steps.
    """
    return {
        "compressed_db": False, "max_txt_len": 60, **SETTING, "num_bb": 10,
        "train_batch_size": 2, "negative_size": 31, "hard_neg_size": 7, "inf_minibatch_size": 32,
        "margin": 0.2, "learning_rate": 3e-4, "valid_steps": max(1, steps // 10), "num_train_steps": steps,
        "optim": "adamw", "betas": [0.9, 0.98], "dropout": 0.0, "weight_decay": 0.01, "grad_norm": 2.0,
        "warmup_steps": max(1, steps // 10), "seed": seed, "full_val": True, "fp16": False, "n_workers": 0,
        "pin_mem": False, "train_txt_dbs": [paths["train_txt_db"]], "train_img_dbs": [paths["img_db"]],
        "val_txt_db": paths["val_txt_db"], "val_img_db": paths["img_db"], "test_txt_db": paths["test_txt_db"],
        "test_img_db": paths["img_db"], "model_config": paths["model_config"], "checkpoint": pretrained,
        "output_dir": output_dir,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m integrations.uniter.demo",
        description="Built-in synthetic demo: hard-negative fine-tuning of a tiny UNITER on a generated relational "
                    "image-text set, with and without IAIS, on the CPU.")
    p.add_argument("--steps", type=int, default=600, help="fine-tuning steps per model")
    p.add_argument("--seed", type=int, default=42, help="training seed (same for both runs)")
    p.add_argument("--iais", choices=("singular", "distributed"), default="singular", help="IAIS mode of run 2")
    p.add_argument("--cache-dir", help="where the data and runs go (default $IAISREG_CACHE/demo or "
                                       "~/.cache/iaisreg/demo)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: a model this small gains nothing from more, and loses a lot when "
                        "other processes share the cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.add_argument("--quiet", action="store_true", help="print the results only (the table, what it shows, the "
                                                         "output paths)")
    return p


def _evaluate_checkpoint(path: str, plugin, paths: dict) -> dict:

    model = plugin.build_model(checkpoint=path)
    pairs = plugin.eval_pairs("test")
    try:
        metrics = evaluate_retrieval(model, pairs, plugin.collate, progress=False)
    finally:
        pairs.close()
    return {"test": metrics, "isda": mean_isda(model, paths["test_txt_db"], paths["img_db"], paths["test_objects"])}


def format_summary(results: dict, labels: dict, *, seed: int, steps: int) -> str:
    """The side-by-side table of the demo."""
    keys = list(results)
    first = results[keys[0]]["test"]
    width = max(16, *(len(labels[k]) + 2 for k in keys))
    head = f"  {'':24s}" + "".join(f"{labels[k]:>{width}s}" for k in keys)
    lines = [f"test split: {first['n_captions']} captions x {first['n_images']} images, full ranking "
             f"(training seed {seed}, {steps} fine-tuning steps per model)", head]
    for name, key in (("text -> image R@1", "img_r1"), ("text -> image R@5", "img_r5"),
                      ("text -> image R@10", "img_r10"), ("image -> text R@1", "txt_r1"),
                      ("image -> text R@5", "txt_r5"), ("image -> text R@10", "txt_r10")):
        lines.append(f"  {name:24s}" + "".join(f"{100 * results[k]['test'][key]:{width}.2f}" for k in keys))
    lines.append(f"  {'RSUM':24s}" + "".join(f"{results[k]['test']['rsum']:{width}.2f}" for k in keys))
    lines.append(f"  {'mean ISDa (lower=better)':24s}" + "".join(f"{results[k]['isda']:{width}.4f}" for k in keys))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    args = _parser().parse_args(argv)
    t_start = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    say = _quiet if args.quiet else _say
    try:
        cache = args.cache_dir or demo_cache_dir()
        say("iaisreg demo: hard-negative fine-tuning of a tiny UNITER, with and without IAIS, on a synthetic "
            "relational image-text set (CPU, a few minutes)")
        paths = ensure_demo_data(cache, log=say)
        pretrained = ensure_pretrained(paths, log=say)
        runs_dir = os.path.join(cache, "runs")
        results, plugin = _train_both(args, paths, pretrained, runs_dir, say)
        pictures = _draw(args, paths, plugin, results, runs_dir)
        _say("")
        _say(format_summary(results, _labels(args), seed=args.seed, steps=args.steps))
        _explain(results["none"], results[args.iais])
        _say("")
        _say(f"Object-level attention of one test pair, without and with IAIS (paper Fig. 7): {pictures['attention']}")
        _say(f"Training curves of both runs (margin loss, IAIS term, lambda_t, validation RSUM): {pictures['curves']}")
        _say(f"Outputs (checkpoints, JSONL and TensorBoard logs, settings): {runs_dir}")
        say(f"total wall time: {time.perf_counter() - t_start:.0f} s")
        with open(os.path.join(runs_dir, "demo_summary.json"), "w", encoding="utf-8") as handle:
            json.dump({"seed": args.seed, "steps": args.steps, "results": results, "pictures": pictures}, handle,
                      indent=2)
    finally:
        torch.set_num_threads(threads_before)
    return 0


def _say(message: str) -> None:
    print(message, flush=True)


def _quiet(message: str) -> None:
    """What ``--quiet`` leaves out."""


def _labels(args: argparse.Namespace) -> dict:
    return {"start": "ITM start", "none": "no IAIS", args.iais: f"IAIS {args.iais}"}


def _train_both(args: argparse.Namespace, paths: dict, pretrained: str, runs_dir: str, say) -> tuple[dict, object]:
    """Evaluate the starting checkpoint, then fine-tune and evaluate without and with IAIS; the results and the
    plug-in."""

    config = demo_config(paths, pretrained, runs_dir, steps=args.steps, seed=args.seed)
    os.makedirs(runs_dir, exist_ok=True)
    with open(os.path.join(runs_dir, "train-itm-demo-hn.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)  # the run's settings, in the original config format
    opts, data = read_train_config(config)
    plugin = UniterPlugin(data)
    mcfg = plugin.model_config
    sizes = {s: _n_captions(paths[f"{s}_txt_db"]) for s in SPLITS}
    say(f"data: {sizes['train']} / {sizes['val']} / {sizes['test']} captions (train / val / test), 3 per image; "
        f"scenes in families of 4 that differ only in a colour binding, a size binding or the relation")
    say(f"model: UNITER with hidden {mcfg.hidden_size}, {mcfg.num_hidden_layers} layers, {mcfg.num_attention_heads} "
        f"heads; fine-tuning: {args.steps} steps x {opts.train_batch_size} micro-steps x 2 directions, "
        f"{opts.negative_size} random -> {opts.hard_neg_size} hard negatives per group")
    labels = _labels(args)
    results = {"start": _evaluate_checkpoint(pretrained, plugin, paths)}
    for mode in ("none", args.iais):
        out_dir = os.path.join(runs_dir, mode)
        run_opts = dataclasses.replace(opts, output_dir=out_dir, iais=mode, overwrite=True, save_steps=0,
                                       keep_checkpoints=1, progress=not (args.no_progress or args.quiet),
                                       quiet=args.quiet, final_eval=False, run_name=labels[mode])
        t0 = time.perf_counter()
        result = train(run_opts, plugin)
        results[mode] = _evaluate_checkpoint(result.model_path, plugin, paths)
        results[mode].update(seconds=time.perf_counter() - t0, out_dir=out_dir, model_path=result.model_path,
                             final_rank_loss=result.history[-1]["rank_loss"],
                             final_iais_loss=result.history[-1]["iais_loss"])
    return results, plugin


def _draw(args: argparse.Namespace, paths: dict, plugin, results: dict, runs_dir: str) -> dict:
    """The two pictures of the demo (see the module docstring); their paths."""
    labels = _labels(args)
    modes = ("none", args.iais)
    curves = draw_training_curves({labels[m]: read_run_log(results[m]["out_dir"]) for m in modes},
                                  path=os.path.join(runs_dir, "training_curves.png"))
    (pair, names, words), = object_pairs(paths["test_txt_db"], paths["img_db"], paths["test_objects"], limit=1)
    text, image, titles = [], [], []
    for mode in modes:
        t, v, value = object_attention(plugin.build_model(checkpoint=results[mode]["model_path"]), plugin.collate,
                                       pair, torch.device("cpu"))
        text.append(t)
        image.append(v)
        titles.append(f"{labels[mode]} (ISDa {value:.3f})")
    attention = draw_object_attention(np.stack(text), np.stack(image), names, titles=titles,
                                      suptitle=f'test pair: "{" ".join(words)}"',
                                      path=os.path.join(runs_dir, "object_attention.png"))
    return {"attention": str(attention), "curves": str(curves)}


def _n_captions(path: str) -> int:
    db = TxtDb(path)
    db.close()
    return len(db)


def _explain(a: dict, b: dict) -> None:
    """What the two runs do and do not show (``a`` without IAIS, ``b`` with)."""
    diff = b["test"]["rsum"] - a["test"]["rsum"]
    _say("")
    _say("What this shows: the whole recipe running end to end on data in the original UNITER formats")
    _say("(hard-negative mining in both directions, the margin loss, IAIS on the positive pair's last-layer")
    _say("attention scores weighted by lambda_t, full-ranking evaluation, ISDa from per-object annotations).")
    if b["isda"] < a["isda"]:
        _say(f"IAIS lowers the model's ISDa ({b['isda']:.4f} vs {a['isda']:.4f}): it aligns the intra-modal "
             f"attention it acts on.")
    else:
        _say(f"This time IAIS did not lower the model's ISDa ({b['isda']:.4f} vs {a['isda']:.4f}).")
    _say(f"The RSUM difference ({diff:+.2f}) is one seed of a 2-layer model on generated scenes; it changes")
    _say("sign and size across seeds (try --seed; docs/finetune.md lists the runs we made): read it as")
    _say("noise-level. This is a small synthetic sanity demo, not the paper's experiment, and no evidence")
    _say("for or against its Flickr30k/COCO gains.")


if __name__ == "__main__":
    sys.exit(main())
