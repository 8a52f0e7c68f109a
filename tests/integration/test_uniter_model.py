"""UNITER model: original checkpoints, last-layer scores, SDPA equivalence, autocast."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from . import helpers as H

from integrations.retrieval.checkpoint import CheckpointError
from integrations.uniter.data import collate_pairs
from integrations.uniter.model import (UniterForRetrieval, build_model, convert_state_dict, load_checkpoint,
                                       read_checkpoint)


def _batch(seed=0, lens=((5, 7), (3, 2), (9, 4), (4, 8))):
    g = torch.Generator().manual_seed(seed)
    samples = []
    for tl, nbb in lens:
        ids = torch.cat([torch.tensor([101]), torch.randint(106, H.TINY["vocab_size"], (tl - 2,), generator=g),
                         torch.tensor([102])])
        boxes = torch.rand(nbb, 6, generator=g)
        samples.append((ids, torch.rand(nbb, 2048, generator=g) * 4,
                        torch.cat([boxes, boxes[:, 4:5] * boxes[:, 5:6]], 1)))
    return samples, collate_pairs(samples)


def _logits(model, batch, **kw):
    with torch.no_grad():
        return model(**batch, **kw).logits


# ------------------------------------------------------------------ checkpoints


def test_original_checkpoint_loads_with_original_names(model_files):
    model = UniterForRetrieval(H.tiny_config())
    report = load_checkpoint(model, model_files["finetuned"])
    assert report.missing == [] and report.unexpected == []
    assert report.renamed and all(k.endswith(("gamma", "beta")) for k in report.renamed)
    assert {k.split(".")[0] for k in report.ignored} == {"cls", "feat_regress", "region_classifier"}
    assert not report.rank_output_from_itm
    source = model_files["model"]
    # the fine-tuned rank_output is kept, not re-initialised from itm_output
    torch.testing.assert_close(model.rank_output.weight, source.rank_output.weight.half().float())
    assert not torch.equal(model.rank_output.weight, model.itm_output.weight[1:])
    # our names are the original names: a plain state dict round-trips
    assert set(model.state_dict()) == {k for k in source.state_dict()}


def test_fp16_checkpoint_scores_equal_fp32_model_with_rounded_weights(model_files):
    model, _ = build_model(model_files["config"], model_files["finetuned"])
    model.eval()
    _, batch = _batch()
    reference = H.fp16_rounded(model_files["model"])
    torch.testing.assert_close(_logits(model, batch), _logits(reference, batch), rtol=1e-5, atol=1e-6)
    # and close to the unrounded float32 weights, at float16 weight precision
    torch.testing.assert_close(_logits(model, batch), _logits(model_files["model"], batch), rtol=0, atol=0.05)


def test_safetensors_checkpoint(model_files):
    a, _ = build_model(model_files["config"], model_files["finetuned"])
    b, _ = build_model(model_files["config"], model_files["safetensors"])
    _, batch = _batch()
    torch.testing.assert_close(_logits(a.eval(), batch), _logits(b.eval(), batch), rtol=0, atol=0)


def test_pretrained_checkpoint_initialises_rank_output_from_itm_row_1(model_files):
    model = UniterForRetrieval(H.tiny_config())
    report = load_checkpoint(model, model_files["pretrained"])
    assert report.rank_output_from_itm and report.missing == []
    torch.testing.assert_close(model.rank_output.weight, model.itm_output.weight[1:], rtol=0, atol=0)
    torch.testing.assert_close(model.rank_output.bias, model.itm_output.bias[1:], rtol=0, atol=0)


def test_missing_encoder_key_is_an_error(model_files, tmp_path):
    state = read_checkpoint(model_files["finetuned"])
    del state["uniter.encoder.layer.1.attention.self.key.weight"]
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"broken\.pt.*uniter\.encoder\.layer\.1\.attention\.self\.key\.weight"):
        load_checkpoint(UniterForRetrieval(H.tiny_config()), path)


def test_optional_keys_and_prefixes(model_files, caplog):
    state = read_checkpoint(model_files["finetuned"])
    del state["uniter.img_embeddings.mask_embedding.weight"]  # unused by retrieval
    state["uniter.embeddings.position_ids"] = torch.arange(64)  # a stray buffer
    state = {f"module.{k}": v for k, v in state.items()}      # saved from a DDP wrapper
    report = load_checkpoint(UniterForRetrieval(H.tiny_config()), state)
    assert report.missing == ["uniter.img_embeddings.mask_embedding.weight"]
    assert report.unexpected == ["uniter.embeddings.position_ids"]
    assert "mask_embedding" in caplog.text and "position_ids" in caplog.text


def test_shape_mismatch_and_bad_files(model_files, tmp_path):
    cfg = dataclasses.replace(H.tiny_config(), intermediate_size=48)
    with pytest.raises(ValueError, match=r"intermediate\.dense\.weight.*\(64, 32\)"):
        load_checkpoint(UniterForRetrieval(cfg), model_files["finetuned"])
    torch.save({"model": {"a": torch.zeros(1)}, "step": 3}, tmp_path / "wrapped.pt")
    with pytest.raises(CheckpointError, match="wrapped.pt: expected a state dict"):
        read_checkpoint(tmp_path / "wrapped.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")
    raw = open(model_files["finetuned"], "rb").read()
    for name, content in (("empty.pt", b""), ("cut.pt", raw[: len(raw) // 2]), ("cut.safetensors", b"\x10\x00")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=f"cannot read checkpoint .*{name}"):
            read_checkpoint(tmp_path / name)


def test_convert_state_dict_renames_only_layernorm_leaves():
    state = {"uniter.x.LayerNorm.gamma": torch.ones(1), "uniter.x.LayerNorm.beta": torch.zeros(1),
             "uniter.betamax.weight": torch.ones(1), "cls.seq_relationship.weight": torch.ones(1)}
    out, report = convert_state_dict(state)
    assert set(out) == {"uniter.x.LayerNorm.weight", "uniter.x.LayerNorm.bias", "uniter.betamax.weight"}
    assert report.ignored == ["cls.seq_relationship.weight"]


# ------------------------------------------------------------------ last-layer scores


def _last_layer_input(model, batch):
    captured = {}

    def grab(module, args):
        captured["h"] = args[0].detach().clone()

    hook = model.uniter.encoder.layer[-1].register_forward_pre_hook(grab)
    with torch.no_grad():
        out = model(**batch, scores_rows=torch.tensor([2, 0]))
    hook.remove()
    return captured["h"], out


def test_scores_equal_brute_force_and_outputs_equal_sdpa_path():
    model = H.random_model(seed=1)
    _, batch = _batch(seed=1)
    hidden, out = _last_layer_input(model, batch)
    attn = model.uniter.encoder.layer[-1].attention.self
    b, n, _ = hidden.shape
    heads, d = H.TINY["num_attention_heads"], H.TINY["hidden_size"] // H.TINY["num_attention_heads"]
    with torch.no_grad():
        q = attn.query(hidden).view(b, n, heads, d).permute(0, 2, 1, 3)
        k = attn.key(hidden).view(b, n, heads, d).permute(0, 2, 1, 3)
        brute = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d)
    assert out.scores.shape == (2, heads, n, n)
    torch.testing.assert_close(out.scores, brute[[2, 0]], rtol=1e-5, atol=1e-5)
    # the logits do not depend on which rows were asked for
    torch.testing.assert_close(out.logits, _logits(model, batch), rtol=1e-5, atol=1e-6)
    assert _logits(model, batch, scores_rows=None).shape == (4,)
    assert model(**batch).scores is None

    # layer output: explicit-scores rows equal the SDPA rows
    layer = model.uniter.encoder.layer[-1]
    key_mask = batch["attn_masks"].bool()[:, None, None, :]
    with torch.no_grad():
        sdpa, none = layer(hidden, key_mask)
        explicit, scores = layer(hidden, key_mask, torch.arange(b))
    assert none is None
    torch.testing.assert_close(explicit, sdpa, rtol=1e-5, atol=1e-5)
    # the explicit rows really use the scores: softmax over real keys only, @ V
    with torch.no_grad():
        v = attn.value(hidden).view(b, n, heads, d).permute(0, 2, 1, 3)
        probs = scores.masked_fill(~key_mask, float("-inf")).softmax(-1)
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(b, n, -1)
        ref = layer.output(layer.intermediate(layer.attention.output(ctx, hidden)),
                           layer.attention.output(ctx, hidden))
    torch.testing.assert_close(explicit, ref, rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_scores_and_match_sdpa_path():
    cfg = dataclasses.replace(H.tiny_config(), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = UniterForRetrieval(cfg).train()
    _, batch = _batch(seed=2)

    def grads(**kw):
        model.zero_grad()
        out = model(**batch, **kw)
        loss = out.logits.sum() + (out.scores.square().mean() if out.scores is not None else 0)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, out

    g_sdpa, _ = grads()
    # every trainable parameter gets a gradient (DDP needs no find_unused_parameters)
    assert set(g_sdpa) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not model.itm_output.weight.requires_grad
    assert not model.uniter.img_embeddings.mask_embedding.weight.requires_grad

    model.zero_grad()
    out = model(**batch, scores_rows=torch.tensor([1, 3]))
    out.logits.sum().backward()
    g_rows = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    for name in g_sdpa:
        torch.testing.assert_close(g_rows[name], g_sdpa[name], rtol=1e-4, atol=1e-6)

    g_scores, out = grads(scores_rows=torch.tensor([1, 3]))
    last_q = "uniter.encoder.layer.1.attention.self.query.weight"
    assert not torch.allclose(g_scores[last_q], g_sdpa[last_q])  # the scores loss reached Q


def test_padding_does_not_change_scores():
    model = H.random_model(seed=2)
    samples, batch = _batch(seed=3)
    together = _logits(model, batch)
    alone = torch.tensor([H.score_one_pair(model, ids.tolist(), f, b) for ids, f, b in samples])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    assert together.std() > 0.05  # the pairs really get different scores


def test_img_index_equals_repeated_images():
    """Rows sharing images: embedding each image once gives the repeated-image result."""
    model = H.random_model(seed=5)
    samples, _ = _batch(seed=5)
    images = [samples[0][1:], samples[2][1:]]              # two distinct images
    rows = [0, 0, 1, 0, 1]                                  # five captions paired with them
    captions = [samples[i % 4][0] for i in range(5)]
    repeated = collate_pairs([(captions[b], *images[i]) for b, i in enumerate(rows)])
    shared = dict(repeated)
    nbb = max(f.shape[0] for f, _ in images)
    shared["img_feat"] = torch.stack([torch.cat([f, f.new_zeros(nbb - len(f), 2048)]) for f, _ in images])
    shared["img_pos_feat"] = torch.stack([torch.cat([p, p.new_zeros(nbb - len(p), 7)]) for _, p in images])
    with torch.no_grad():
        a = model(**repeated, scores_rows=torch.tensor([3]))
        b = model(**shared, img_index=torch.tensor(rows), scores_rows=torch.tensor([3]))
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.scores, a.scores, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="img_index"):
        model(**shared, img_index=torch.tensor(rows[:4]))


def test_autocast_bf16_on_cpu():
    model = H.random_model(seed=3)
    _, batch = _batch(seed=4)
    ref = _logits(model, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = model(**batch, scores_rows=torch.tensor([0]))
    assert out.scores.dtype == torch.bfloat16 and torch.isfinite(out.scores).all()
    torch.testing.assert_close(out.logits.float(), ref, rtol=0, atol=0.15)


def test_text_path_matches_hugging_face_bert():
    """Below ``uniter.``, embeddings/encoder/pooler are BertModel, name for name."""
    transformers = pytest.importorskip("transformers")
    model = H.random_model(seed=4)
    hf_cfg = transformers.BertConfig(
        vocab_size=H.TINY["vocab_size"], hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, hidden_act="gelu", max_position_embeddings=64, type_vocab_size=2,
        layer_norm_eps=1e-12, attn_implementation="eager")
    bert = transformers.BertModel(hf_cfg).eval()
    ours = {k[len("uniter."):]: v for k, v in model.state_dict().items()
            if k.startswith(("uniter.embeddings.", "uniter.encoder.", "uniter.pooler."))}
    missing, unexpected = bert.load_state_dict(ours, strict=False)
    assert unexpected == [] and all("position_ids" in k or "token_type_ids" in k for k in missing)
    ids = torch.tensor([[101, 150, 160, 170, 102, 0, 0], [101, 180, 190, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = model.uniter.embeddings(input_ids=ids, position_ids=torch.arange(7).unsqueeze(0))
        hidden, _ = model.uniter.encoder(hidden, mask.bool()[:, None, None, :])
        pooled = model.uniter.pooler(hidden)
        hf = bert(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(hidden[mask.bool()], hf.last_hidden_state[mask.bool()], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pooled, hf.pooler_output, rtol=1e-4, atol=1e-5)


def test_argument_errors():
    model = UniterForRetrieval(H.tiny_config())
    _, batch = _batch()
    with pytest.raises(ValueError, match="scores_rows"):
        model(**batch, scores_rows=torch.tensor([0.0]))
    with pytest.raises(ValueError, match="img_feat"):
        model(**{**batch, "img_feat": batch["img_feat"][..., :100]})
    with pytest.raises(ValueError, match="gather_index"):
        model(**{**batch, "gather_index": batch["gather_index"][:, :-1]})
    with pytest.raises(ValueError, match="position_ids"):
        model(**{**batch, "position_ids": batch["position_ids"][:, :-1]})
    with pytest.raises(TypeError, match="config"):
        UniterForRetrieval(H.TINY)
