"""Pieces of the engine: sampling, batches, mining, optimizer, schedule, checkpoints, losses (on UNITER data)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from . import helpers as H

import iaisreg.torch as iais_torch
from integrations.retrieval import checkpoint as ckpt
from integrations.retrieval.mining import collate_pairs, make_group, mine_hard_negatives
from integrations.retrieval.objective import batch_arithmetic, iais_term, rank_loss
from integrations.retrieval.optim import UniterAdamW, WarmupLinear, build_optimizer, build_scheduler, param_groups
from integrations.retrieval.sampling import CandidateStream, HardNegativeSampler, prepare
from integrations.uniter.config import UniterModelConfig
from integrations.uniter.data import ImgDb, TxtDb, collate
from integrations.uniter.model import UniterForRetrieval
from integrations.uniter.plugin import UniterPairs


def _store(dbs, **kwargs) -> UniterPairs:
    return UniterPairs([(TxtDb(dbs.txt_db, max_txt_len=60), ImgDb(dbs.img_db, **H.SETTING))], **kwargs)


def _model(seed: int = 0) -> UniterForRetrieval:
    torch.manual_seed(seed)
    return UniterForRetrieval(UniterModelConfig.from_dict(H.FT_MODEL), img_dim=H.FT_IMG_DIM)


# ------------------------------------------------------------------ sampling


def test_negatives_exclude_the_positive_and_are_distinct(data):
    store = _store(data["multi"])
    sampler = HardNegativeSampler(store, negative_size=8, seed=0)
    for _ in range(30):
        text = sampler.next("text")
        assert len(set(text.captions)) == 1 and len(text.images) == 9
        assert text.images[0] == store.caption_image[text.captions[0]]
        assert text.images[0] not in text.images[1:] and len(set(text.images)) == 9
        image = sampler.next("image")
        assert len(set(image.images)) == 1 and len(image.captions) == 9
        own = set(store.image_captions[image.images[0]])
        assert image.captions[0] in own and not own & set(image.captions[1:])
        assert len(set(image.captions)) == 9


def test_too_few_negatives_warns_and_caps(data):
    store = _store(data["small"])
    sampler = HardNegativeSampler(store, negative_size=399, seed=0)
    with pytest.warns(UserWarning, match="only 4 images"):
        assert len(sampler.next("text").images) == 5


def test_ranks_own_disjoint_shards_covering_every_caption(data):
    store = _store(data["multi"])
    shards = [HardNegativeSampler(store, negative_size=3, seed=0, rank=r, world_size=3).positives for r in range(3)]
    flat = np.concatenate(shards)
    assert sorted(flat.tolist()) == list(range(store.n_captions))
    for r, shard in enumerate(shards):  # whole images per rank
        assert {store.caption_image[c] % 3 for c in shard} == {r}


def test_every_positive_once_per_epoch_then_a_new_order(data):
    store = _store(data["multi"])
    sampler = HardNegativeSampler(store, negative_size=2, seed=5)
    n = len(sampler)
    first = [sampler.next("text").captions[0] for _ in range(n)]
    second = [sampler.next("text").captions[0] for _ in range(n)]
    assert sorted(first) == sorted(second) == list(range(n))
    assert first != second


def test_sampler_state_round_trip_continues_identically(data):
    store = _store(data["multi"])
    a = HardNegativeSampler(store, negative_size=4, seed=1)
    for i in range(25):
        a.next("image" if i % 2 else "text")
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # the state must survive weights_only loading
    buf.seek(0)
    b = HardNegativeSampler(store, negative_size=4, seed=1)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for i in range(40):
        d = ("image", "text")[i % 2]
        assert a.next(d) == b.next(d)
    with pytest.raises(ValueError, match="sampler state"):
        HardNegativeSampler(store, negative_size=4, seed=2).load_state_dict(a.state_dict())


@pytest.mark.parametrize("workers", [0, 2])
def test_candidate_stream_matches_the_sampler_for_any_worker_count(data, workers):
    store = _store(data["multi"])
    kwargs = dict(negative_size=3, seed=4)
    reference = HardNegativeSampler(store, **kwargs)
    for _ in range(3):
        reference.next("image")
    stream = CandidateStream(store, kwargs, reference.state_dict())
    if workers:
        items = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                                 generator=torch.Generator()))
    else:
        items = iter(stream)
    for i in range(9):
        item = next(items)
        expected = reference.next(("image", "text")[i % 2])
        assert item.candidates == expected
        for c in expected.captions:
            assert torch.equal(item.caption(c), store.caption(c))
    del items


# ------------------------------------------------------------------ batches and mining


def test_group_batches_have_a_correct_layout_per_pair(data):
    """A from-image group's captions differ in length; each row must score as the pair alone.

    (The original from-image dataset built every row's gather index with the
    length of the group's last caption.)
    """
    store = _store(data["multi"])
    model = _model().eval()
    sampler = HardNegativeSampler(store, negative_size=6, seed=0)
    for direction in ("image", "text"):
        cand = sampler.next(direction)
        batch = collate_pairs(store, cand.captions, cand.images, collate)
        assert batch["img_feat"].shape[0] == len(set(cand.images))  # each image once (img_index)
        if direction == "image":
            assert len({store.caption(c).numel() for c in cand.captions}) > 1
        with torch.no_grad():
            logits = model(**batch).logits
            for row, (c, i) in enumerate(zip(cand.captions, cand.images)):
                feat, boxes = store.image(i)
                tokens = store.caption(c)
                n = tokens.numel() + feat.shape[0]
                alone = model(tokens[None], torch.arange(tokens.numel())[None], feat[None], boxes[None],
                              torch.ones(1, n, dtype=torch.long)).logits
                torch.testing.assert_close(logits[row], alone[0], rtol=1e-5, atol=1e-5)


def test_mining_keeps_the_positive_and_the_top_scoring_negatives(data):
    store = _store(data["multi"])
    model = _model().train()
    sampler = HardNegativeSampler(store, negative_size=10, seed=0)
    for direction in ("image", "text"):
        prepared = prepare(store, sampler.next(direction))
        rows = mine_hard_negatives(model, prepared, collate, hard_neg_size=4, chunk_size=3, device=torch.device("cpu"))
        assert model.training  # mode restored
        model.eval()
        with torch.no_grad():
            scores = model(**collate_pairs(store, prepared.candidates.captions, prepared.candidates.images, collate)).logits
        model.train()
        expected = (torch.argsort(scores[1:], descending=True, stable=True)[:4] + 1).tolist()
        assert rows == [0] + expected
        same = mine_hard_negatives(model, prepared, collate, hard_neg_size=4, chunk_size=100, device=torch.device("cpu"))
        assert same == rows  # chunking does not change the choice
        group = make_group(prepared, rows, collate, torch.device("cpu"))
        assert group.batch["input_ids"].shape[0] == 5 and group.n_scored == 11
        assert group.captions[0] == prepared.candidates.captions[0]


# ------------------------------------------------------------------ losses


def test_rank_loss_is_the_mean_hinge_on_sigmoid_scores():
    logits = torch.tensor([0.5, 1.0, -2.0, 0.4])
    s = torch.sigmoid(logits)
    expected = torch.clamp(0.2 + s[1:] - s[0], min=0).mean()
    torch.testing.assert_close(rank_loss(logits, 0.2), expected)


def test_iais_term_uses_the_positive_pair_and_its_items(data):
    store = _store(data["multi"])
    model = _model()
    sampler = HardNegativeSampler(store, negative_size=3, seed=0)
    cand = sampler.next("image")
    batch = collate_pairs(store, cand.captions, cand.images, collate)
    out = model(**batch, scores_rows=torch.tensor([0]))
    value = iais_term(out, mode="singular", anchor="V", variant="official")
    n = out.scores.shape[-1]
    tl, nb = batch["txt_lens"][:1], batch["num_bbs"][:1]
    pos = torch.arange(n)
    t, v = (pos >= 1) & (pos <= tl - 2), (pos >= tl) & (pos < tl + nb)  # word pieces; the regions after them
    assert torch.equal(out.text_mask, t[None]) and torch.equal(out.image_mask, v[None])
    direct = iais_torch.iais(out.scores, text_mask=t[None], image_mask=v[None], mode="singular", anchor="V")
    torch.testing.assert_close(value, direct)
    value.backward()  # gradients reach the last layer's query/key
    assert model.uniter.encoder.layer[-1].attention.self.query.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("tbs, gpus, world, expected", [(8, 8, 8, (8, 1.0)), (8, 8, 2, (32, 0.25)),
                                                         (8, 8, 1, (64, 0.125)), (8, 2, 2, (8, 1.0))])
def test_batch_arithmetic_matches_the_original_effective_batch(tbs, gpus, world, expected):
    assert batch_arithmetic(tbs, gpus, world) == expected


def test_batch_arithmetic_rejects_uneven_splits():
    with pytest.raises(ValueError, match="cannot be split evenly"):
        batch_arithmetic(3, 1, 2)


# ------------------------------------------------------------------ optimizer, schedule


def test_no_weight_decay_on_biases_and_layernorm_weights():
    model = _model()
    decay, plain = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in plain["params"]}
    assert decay["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all(not n.endswith("bias") for n in decayed)
    assert "uniter.img_embeddings.img_layer_norm.weight" in exempt  # missed by the original name match
    assert "uniter.encoder.layer.0.attention.output.LayerNorm.weight" in exempt
    assert "uniter.encoder.layer.0.attention.self.query.weight" in decayed
    assert "uniter.embeddings.word_embeddings.weight" in decayed
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not frozen & (decayed | exempt)
    opt = build_optimizer(model, learning_rate=5e-5, betas=[0.9, 0.98])
    assert opt.defaults["eps"] == 1e-6 and opt.defaults["betas"] == (0.9, 0.98)


def test_uniter_groups_decay_what_the_original_names_say():
    model = _model()
    decay, plain = param_groups(model, 0.01, impl="uniter")
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in plain["params"]}
    # the original matched 'bias', 'LayerNorm.bias', 'LayerNorm.weight' in the name
    assert {"uniter.img_embeddings.img_layer_norm.weight", "uniter.img_embeddings.pos_layer_norm.weight"} <= decayed
    assert "uniter.encoder.layer.0.attention.output.LayerNorm.weight" in exempt
    assert "uniter.img_embeddings.img_layer_norm.bias" in exempt
    assert all("bias" in n or "LayerNorm.weight" in n for n in exempt)
    assert isinstance(build_optimizer(model, impl="uniter"), UniterAdamW)
    assert isinstance(build_optimizer(model, optim="adam", impl="uniter"), torch.optim.Adam)


def _uniter_adamw_by_hand(params, grads, lrs, *, betas, eps, weight_decay):
    """The update rule of UNITER's AdamW, transcribed step by step on plain tensors."""
    b1, b2 = betas
    p = [x.clone() for x in params]
    m = [torch.zeros_like(x) for x in params]
    v = [torch.zeros_like(x) for x in params]
    for t, (lr, step_grads) in enumerate(zip(lrs, grads), start=1):
        for i, g in enumerate(step_grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            step_size = lr * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
            p[i] = p[i] - step_size * m[i] / (v[i].sqrt() + eps)
            p[i] = p[i] - lr * weight_decay[i] * p[i]  # decoupled decay, after the update
    return p


def test_uniter_adamw_equals_the_transcribed_update_rule_and_resumes():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]
    grads = [[torch.randn(x.shape, generator=g) * 10 ** -k for x in params] for k in range(6)]  # tiny to large
    lrs = [1e-2, 5e-3, 2e-2, 1e-2, 1e-3, 3e-2]
    expected = _uniter_adamw_by_hand(params, grads, lrs, betas=(0.9, 0.98), eps=1e-6, weight_decay=[0.01, 0.0])
    weights = [torch.nn.Parameter(x.clone()) for x in params]
    opt = UniterAdamW([{"params": [weights[0]], "weight_decay": 0.01}, {"params": [weights[1]], "weight_decay": 0.0}],
                      lr=1.0, betas=(0.9, 0.98), eps=1e-6)
    for t, (lr, step_grads) in enumerate(zip(lrs, grads)):
        if t == 3:  # resume mid-way from the state dict, as a checkpoint does
            state = opt.state_dict()
            opt = UniterAdamW([{"params": [weights[0]], "weight_decay": 0.01},
                               {"params": [weights[1]], "weight_decay": 0.0}], lr=1.0, betas=(0.9, 0.98))
            opt.load_state_dict(state)
        for group in opt.param_groups:
            group["lr"] = lr
        for w, grad in zip(weights, step_grads):
            w.grad = grad.clone()
        opt.step()
    for w, e in zip(weights, expected):
        torch.testing.assert_close(w.detach(), e, rtol=1e-6, atol=1e-8)


def test_uniter_adamw_first_step_has_the_effective_epsilon_of_the_original():
    """eps is added to sqrt(v) before the bias correction: eps / sqrt(1 - beta2) = 7.07e-6 at step 1."""
    grad = 1e-6 / (1 - 0.98) ** 0.5  # the effective epsilon itself: the first update is lr / 2
    updates = {}
    for name, cls in (("uniter", UniterAdamW), ("torch", torch.optim.AdamW)):
        w = torch.nn.Parameter(torch.zeros(1))
        opt = cls([w], lr=1.0, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
        w.grad = torch.full((1,), grad)
        opt.step()
        updates[name] = -float(w.detach())
    assert updates["uniter"] == pytest.approx(0.5, rel=1e-5)
    assert updates["torch"] == pytest.approx(grad / (grad + 1e-6), rel=1e-5)  # about 0.876


def test_warmup_then_linear_decay_as_get_lr_sched():
    model = _model()
    opt = build_optimizer(model, learning_rate=1.0)
    sched = build_scheduler(opt, warmup_steps=4, total_steps=10, learning_rate=1.0)
    lrs = []
    for _ in range(11):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    # update u (1-based) uses u/4 during the warm-up, then (10-u)/6, floored at 1e-8
    expected = [u / 4 if u < 4 else max((10 - u) / 6, 1e-8) for u in range(1, 12)]
    np.testing.assert_allclose(lrs, expected)
    assert WarmupLinear(0, 5, 1.0)(0) == pytest.approx(4 / 5)


# ------------------------------------------------------------------ checkpoints


def test_atomic_save_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "train_step_0000001.pt")
    ckpt.save_atomic({"format": ckpt.FORMAT, "step": 1, "x": torch.arange(3)}, path)

    def broken(obj, handle):
        handle.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_serialize", broken)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_atomic({"format": ckpt.FORMAT, "step": 2}, path)
    assert os.listdir(tmp_path) == ["train_step_0000001.pt"]  # no temporary file either
    assert ckpt.load_training_checkpoint(path)["step"] == 1


def test_temp_files_and_foreign_files_are_handled(tmp_path):
    (tmp_path / ".train_step_0000003.pt.abc.tmp").write_bytes(b"junk")
    (tmp_path / "train_step_0000003.pt.partial").write_bytes(b"junk")
    torch.save({"a": torch.zeros(1)}, tmp_path / "train_step_0000002.pt")
    assert ckpt.remove_temp_files(str(tmp_path)) == [".train_step_0000003.pt.abc.tmp"]
    assert [s for s, _ in ckpt.find_checkpoints(str(tmp_path))] == [2]
    with pytest.raises(ckpt.CheckpointError, match="not a training checkpoint"):
        ckpt.load_training_checkpoint(str(tmp_path / "train_step_0000002.pt"))
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load_training_checkpoint(str(tmp_path / "nope.pt"))


def test_prune_keeps_the_newest(tmp_path):
    for step in (1, 5, 10, 20):
        ckpt.save_atomic({"format": ckpt.FORMAT, "step": step}, ckpt.checkpoint_path(str(tmp_path), step))
    ckpt.prune_checkpoints(str(tmp_path), 2)
    assert [s for s, _ in ckpt.find_checkpoints(str(tmp_path))] == [10, 20]
    assert ckpt.latest_checkpoint(str(tmp_path)).endswith("train_step_0000020.pt")


def test_rng_state_round_trip_through_weights_only_load():
    import random

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state = ckpt.rng_state()
    buf = io.BytesIO()
    torch.save(state, buf)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    buf.seek(0)
    ckpt.set_rng_state(torch.load(buf, weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
