"""``--baseline-layout original``: the authors' no-IAIS from-image batches, replayed and compared.

The reference below rebuilds, with plain Python lists, the index tensors of
the authors' from-image group as their code builds them (written from the
description in ``docs/finetune.md``, not from our collate):

- mining: every candidate caption padded to the set's longest ``max_tl``, the
  one image's ``nbb`` regions after it, row ``i``'s mask on ``[0, tl_i + nbb)``
  and a gather index whose row ``i`` maps positions ``[tl_i, tl_i + nbb)`` to
  ``[t, t + nbb)`` of the concatenation, ``t`` being the loop variable left over
  from the caption loop (the set's last caption's length);
- training: the kept rows of those masks and texts, no gather index.

Our batches come from the engine (chunked mining, then the training group)
through the UNITER plug-in's collate.
"""

from __future__ import annotations

import pytest
import torch

from integrations.retrieval import SetupError
from integrations.retrieval.mining import make_group, mine_hard_negatives
from integrations.retrieval.protocol import GroupInfo
from integrations.retrieval.sampling import CandidateSet, Prepared
from integrations.uniter.config import UniterData
from integrations.uniter.data import collate
from integrations.uniter.plugin import UniterPlugin

from . import helpers as H

CPU = torch.device("cpu")
#: the issue's example: 400 captions, 30 boxes, longest 38 tokens, last 7, positive 17
EXAMPLE = dict(n=400, nbb=30, longest=38, last=7, positive=17)


# ------------------------------------------------------------------ the original index logic, replayed


def replay_gather_index(txt_lens, num_bbs, max_len, out_size):
    """Row i: 0..out_size-1, except positions tl_i..tl_i+nbb_i-1, which point at max_len..max_len+nbb_i-1."""
    rows = []
    for tl, nbb in zip(txt_lens, num_bbs):
        row = list(range(out_size))
        for k in range(nbb):
            row[tl + k] = max_len + k
        rows.append(row)
    return rows


def replay_from_image(txt_lens, nbb):
    """``(max_tl, masks, gather rows)`` of the authors' no-IAIS from-image mining batch."""
    max_tl = max(txt_lens)
    out_size = max_tl + nbb
    masks = [[1 if p < tl + nbb else 0 for p in range(out_size)] for tl in txt_lens]
    tl = None
    for tl in txt_lens:  # the caption loop; ``tl`` outlives it
        pass
    return max_tl, masks, replay_gather_index(txt_lens, [nbb] * len(txt_lens), tl, out_size)


def reads(mask_row, source_row, tl, max_tl):
    """What each attended position of a row reads: ("text", i), ("pad", i) or ("region", k)."""
    out = []
    for p, on in enumerate(mask_row):
        if on:
            i = source_row[p]
            out.append(("text", i) if i < tl else ("pad", i) if i < max_tl else ("region", i - max_tl))
    return out


def batch_reads(batch, row):
    """The same, read off one of our batches (gather index if any, else the plain concatenation)."""
    n = batch["attn_masks"].shape[1]
    source = batch["gather_index"][row].tolist() if "gather_index" in batch else list(range(n))
    return reads(batch["attn_masks"][row].tolist(), source, int(batch["txt_lens"][row]), batch["input_ids"].shape[1])


def kinds(read):
    return {k: sum(1 for kind, _ in read if kind == k) for k in ("text", "pad", "region")}


# ------------------------------------------------------------------ a fixed candidate set through the engine


def example_lengths(n, longest, last, positive, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(5, longest, (n,), generator=g).tolist()
    lens[0], lens[n // 2], lens[-1] = positive, longest, last
    return lens


def candidate_set(lens, nbb, seed=0):
    """A from-image candidate set (caption c = row c, one image) with these caption lengths."""
    g = torch.Generator().manual_seed(seed)
    captions = {c: torch.cat([torch.tensor([101]), torch.randint(106, H.TINY["vocab_size"], (tl - 2,), generator=g),
                              torch.tensor([102])]) for c, tl in enumerate(lens)}
    image = (torch.rand(nbb, 2048, generator=g), torch.rand(nbb, 7, generator=g))
    return Prepared(CandidateSet("image", list(range(len(lens))), [0] * len(lens)), captions, {0: image})


def whole_set_batch(prepared, rows, masks, gather):
    """The authors' batch of ``rows`` built from the replayed tensors (image repeated, as their model does)."""
    max_tl = len(masks[0]) - prepared.images[0][0].shape[0]
    ids = torch.zeros(len(rows), max_tl, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, :len(prepared.captions[r])] = prepared.captions[r]
    feat, boxes = prepared.images[0]
    out = {"input_ids": ids, "position_ids": torch.arange(max_tl)[None],
           "img_feat": feat.expand(len(rows), -1, -1), "img_pos_feat": boxes.expand(len(rows), -1, -1),
           "attn_masks": torch.tensor([masks[r] for r in rows])}
    if gather is not None:
        out["gather_index"] = torch.tensor([gather[r] for r in rows])
    return out


class Recorder:
    """A collate that records the plug-in's batches and the group information they came with."""

    def __init__(self, plugin):
        self.plugin, self.seen = plugin, []

    def __call__(self, captions, images, image_index, *, group=None):
        batch = self.plugin.collate(captions, images, image_index, group=group)
        self.seen.append((group, batch))
        return batch


def original_plugin():
    return UniterPlugin(UniterData(baseline_layout="original"), H.tiny_config())


@pytest.fixture(scope="module")
def example():
    lens = example_lengths(EXAMPLE["n"], EXAMPLE["longest"], EXAMPLE["last"], EXAMPLE["positive"])
    prepared = candidate_set(lens, EXAMPLE["nbb"])
    model = H.random_model(seed=0)
    recorder = Recorder(original_plugin())
    rows = mine_hard_negatives(model, prepared, recorder, hard_neg_size=31, chunk_size=128, device=CPU)
    mined = list(recorder.seen)
    recorder.seen.clear()
    group = make_group(prepared, rows, recorder, CPU)
    return {"lens": lens, "prepared": prepared, "model": model, "rows": rows, "mined": mined,
            "trained": recorder.seen, "group": group}


# ------------------------------------------------------------------ tests


def test_the_issue_example_replayed_mining_and_training_of_the_positive():
    lens = example_lengths(EXAMPLE["n"], EXAMPLE["longest"], EXAMPLE["last"], EXAMPLE["positive"])
    max_tl, masks, gather = replay_from_image(lens, EXAMPLE["nbb"])
    mining = reads(masks[0], gather[0], lens[0], max_tl)
    assert kinds(mining) == {"text": 17 + 10, "pad": 20, "region": 0}  # all 30 region slots read text or padding
    training = reads(masks[0], list(range(len(masks[0]))), lens[0], max_tl)
    assert kinds(training) == {"text": 17, "pad": 21, "region": 9}  # 21 padding positions, 9 of 30 regions


def test_mining_batches_read_what_the_original_whole_set_batch_reads(example):
    lens, prepared, model = example["lens"], example["prepared"], example["model"]
    max_tl, masks, gather = replay_from_image(lens, EXAMPLE["nbb"])
    assert [len(g.rows) for g, _ in example["mined"]] == [128, 128, 128, 16]  # mined in chunks
    reference = model(**whole_set_batch(prepared, range(len(lens)), masks, gather)).logits.detach()
    for group, batch in example["mined"]:
        assert group.phase == "mining" and group.direction == "image" and len(group.captions) == len(lens)
        assert batch["input_ids"].shape[1] == max_tl and "gather_index" in batch
        for b, r in enumerate(group.rows):
            assert batch_reads(batch, b) == reads(masks[r], gather[r], lens[r], max_tl), r
        with torch.no_grad():
            torch.testing.assert_close(model(**batch).logits, reference[list(group.rows)], rtol=1e-5, atol=1e-5)
    assert kinds(batch_reads(example["mined"][0][1], 0))["region"] == 0  # the positive reads no region
    expected = (torch.sort(reference[1:], descending=True, stable=True).indices[:31] + 1).tolist()
    assert example["rows"] == [0] + expected  # the same hard negatives as the whole-set scores


def test_training_batch_reads_what_the_original_hard_batch_reads(example):
    lens, prepared, model, rows = example["lens"], example["prepared"], example["model"], example["rows"]
    max_tl, masks, _ = replay_from_image(lens, EXAMPLE["nbb"])
    (group, batch), = example["trained"]
    assert group.phase == "training" and list(group.rows) == rows and "gather_index" not in batch
    plain = list(range(max_tl + EXAMPLE["nbb"]))
    for b, r in enumerate(rows):
        assert batch_reads(batch, b) == reads(masks[r], plain, lens[r], max_tl), r
    assert kinds(batch_reads(batch, 0)) == {"text": 17, "pad": 21, "region": 9}
    assert torch.equal(example["group"].batch["attn_masks"], batch["attn_masks"])
    with torch.no_grad():
        ours = model(**batch).logits
        theirs = model(**whole_set_batch(prepared, rows, masks, None)).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("last", [3, 9])
def test_small_groups_at_every_chunk_size_match_the_replay(last):
    """Lengths where the last caption is the shortest and the longest; chunks of 1, 2 and the whole set."""
    lens = [6, 4, 9, 5, last]
    prepared = candidate_set(lens, 4, seed=1)
    max_tl, masks, gather = replay_from_image(lens, 4)
    for chunk in (1, 2, len(lens)):
        recorder = Recorder(original_plugin())
        mine_hard_negatives(H.random_model(), prepared, recorder, hard_neg_size=2, chunk_size=chunk, device=CPU)
        for group, batch in recorder.seen:
            assert [batch_reads(batch, b) for b in range(len(group.rows))] == \
                   [reads(masks[r], gather[r], lens[r], max_tl) for r in group.rows]
    if last == max_tl:  # the leaked length is the longest: mining reads every row's own regions
        assert all(kinds(reads(masks[r], gather[r], lens[r], max_tl))["region"] == 4 for r in range(5))


def test_the_clean_default_and_from_text_groups_are_unchanged(example):
    prepared = example["prepared"]
    caps = [prepared.captions[r] for r in (0, 5, 9)]
    image = [prepared.images[0]]
    clean = UniterPlugin(UniterData(), H.tiny_config())
    for plugin, direction in ((clean, "image"), (original_plugin(), "text")):
        for phase in ("mining", "training"):
            info = GroupInfo(direction, phase, list(prepared.captions.values()), [0, 5, 9])
            got, want = plugin.collate(caps, image, [0, 0, 0], group=info), collate(caps, image, [0, 0, 0])
            assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_a_short_run_of_the_papers_baseline_recipe(data, tmp_path):
    """The whole loop with the original layout and UNITER's optimizer (from-image groups of varied lengths)."""
    import json

    from integrations.uniter import finetune

    rc, result = finetune.run(H.train_args(data, tmp_path, steps=3, iais="none", baseline_layout="original",
                                           optim_impl="uniter", negative_size=8, hard_neg_size=3,
                                           no_final_eval=True))
    assert rc == 0 and result.finished
    trace = H.read_trace(tmp_path)
    assert all(0 <= r["rank_loss"] <= 1.2 and r["iais_loss"] == 0 and r["grad_norm"] > 0 for r in trace)
    hps = json.loads((tmp_path / "log" / "hps.json").read_text())
    assert hps["plugin"]["data"]["baseline_layout"] == "original" and hps["options"]["optim_impl"] == "uniter"


def test_takes_group_reads_the_signature_of_any_callable():
    from integrations.retrieval.protocol import takes_group

    class Unhashable:
        __hash__ = None

        def __call__(self, captions, images, image_index, *, group=None):
            return {}

    assert takes_group(Unhashable()) and takes_group(original_plugin().collate) and takes_group(lambda *a, **k: 0)
    assert not takes_group(collate) and not takes_group(lambda captions, images, image_index: 0)


def test_original_layout_with_iais_is_refused(data, tmp_path, capsys):
    from integrations.retrieval import TrainOptions
    from integrations.uniter import finetune

    with pytest.raises(SetupError, match="--baseline-layout original .* --iais singular"):
        original_plugin().check_options(TrainOptions(iais="singular"))
    original_plugin().check_options(TrainOptions(iais="none"))
    rc, _ = finetune.run(H.train_args(data, tmp_path / "run", steps=1, baseline_layout="original"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: --baseline-layout original") and len(err) == 1
    assert not (tmp_path / "run").exists()  # refused before anything was written
