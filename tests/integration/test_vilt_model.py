"""The ViLT plug-in's model: the scores are ViLT's own attention, the IAIS masks sit where ViLT puts
words and real patches, patches come in a fixed order, and weights load in both key layouts."""

from __future__ import annotations

import pytest
import torch

from integrations.retrieval.checkpoint import CheckpointError
from integrations.vilt.config import ViltData
from integrations.vilt.model import item_masks, load_weights
from integrations.vilt.plugin import ViltPlugin

from .vilt_builders import MAX_TEXT_LEN


@pytest.fixture(scope="module")
def plugin(vilt_world):
    return ViltPlugin(ViltData(model=vilt_world["model"], karpathy_json=vilt_world["karpathy"],
                               image_root=vilt_world["images"], max_text_len=MAX_TEXT_LEN))


@pytest.fixture(scope="module")
def batch(plugin):
    """Four rows over three images: two of 32 x 48 pixels after the resize (2 x 3 patches) and one of 48 x 32
    (3 x 2), all padded to 48 x 48; the second image is shared by two rows."""
    pairs = plugin.eval_pairs("test")
    rows = [(0, 0), (1, 1), (2, 1), (4, 2)]  # (caption, image)
    images = sorted({i for _, i in rows})
    batch = plugin.collate([pairs.caption(c) for c, _ in rows], [pairs.image(i) for i in images],
                           [images.index(i) for _, i in rows])
    return pairs, rows, batch


def test_collate_passes_each_image_once(batch):
    _, rows, b = batch
    assert b["pixel_values"].shape[0] == 3 and b["image_index"].tolist() == [0, 1, 1, 2]
    assert b["input_ids"].shape == (4, MAX_TEXT_LEN)


def test_scores_are_the_last_layers_attention_before_the_softmax(plugin, batch):
    _, _, b = batch
    model = plugin.build_model().eval()
    rows = torch.tensor([3, 1])
    with torch.no_grad():
        out = model(**b, scores_rows=rows)
        embeds, mask = model.embed_images(b["pixel_values"], b["pixel_mask"])
        ref = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                          token_type_ids=b["token_type_ids"], image_embeds=embeds[b["image_index"]],
                          pixel_mask=mask[b["image_index"]], output_attentions=True)
    assert out.scores.shape == (2, 2, MAX_TEXT_LEN + mask.shape[1], MAX_TEXT_LEN + mask.shape[1])
    full = torch.cat([b["attention_mask"], mask[b["image_index"]]], 1)[rows].bool()
    probs = torch.softmax(out.scores.masked_fill(~full[:, None, None, :], float("-inf")), -1)
    torch.testing.assert_close(probs, ref.attentions[-1][rows], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits, ref.logits.squeeze(-1))


def test_text_items_are_the_word_pieces_and_image_items_the_real_patches(plugin, batch):
    pairs, rows, b = batch
    model = plugin.build_model().eval()
    with torch.no_grad():
        out = model(**b, scores_rows=torch.arange(len(rows)))
    tokenizer = plugin.processor.tokenizer
    for k, (c, i) in enumerate(rows):
        n_words = len(tokenizer.tokenize(pairs.texts[c]))
        h, w = pairs.image(i).shape[1:]
        n_patches = (h // 16) * (w // 16)
        assert out.text_mask[k].nonzero().flatten().tolist() == list(range(1, 1 + n_words))
        # text part, then the image [CLS] at MAX_TEXT_LEN, then the real patches of this image only
        first = MAX_TEXT_LEN + 1
        assert out.image_mask[k].nonzero().flatten().tolist() == list(range(first, first + n_patches))
    assert not (out.text_mask & out.image_mask).any()


def test_item_masks_by_hand():
    text, image = item_masks(torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]), torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert text.int().tolist() == [[0, 1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0]]
    assert image.int().tolist() == [[0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1, 1]]
    with pytest.raises(ValueError, match="attention_mask must be"):
        item_masks(torch.ones(2, 4), torch.ones(3, 3))


def test_real_patches_come_first_row_by_row(plugin, batch):
    """The patch at position 1 + r * C + c of an image is ViLT's patch (r, c) (``visual_embed``'s own index)."""
    _, _, b = batch
    model = plugin.build_model().eval()
    torch.manual_seed(5)
    ordered, mask = model.embed_images(b["pixel_values"], b["pixel_mask"])
    torch.manual_seed(5)
    raw, raw_mask, (index, _) = model.model.vilt.embeddings.visual_embed(
        b["pixel_values"], b["pixel_mask"], max_image_length=-1)
    for u in range(raw.shape[0]):
        rows, cols = (int(v) for v in b["pixel_mask"][u].nonzero().max(0).values // 16 + 1)
        assert int(mask[u, 1:].sum()) == rows * cols and mask[u, 1:1 + rows * cols].all()
        for j in range(index.shape[1]):
            if raw_mask[u, 1 + j]:
                r, c = index[u, j].tolist()
                torch.testing.assert_close(ordered[u, 1 + r * cols + c], raw[u, 1 + j], rtol=0, atol=0)


def test_weights_load_with_and_without_the_wrapper_prefix(plugin, tmp_path):
    source = plugin.build_model()
    with torch.no_grad():
        source.model.rank_output.bias.fill_(3.0)
    torch.save(source.state_dict(), tmp_path / "wrapped.pt")
    torch.save(source.model.state_dict(), tmp_path / "bare.pt")
    for name in ("wrapped.pt", "bare.pt"):
        target = plugin.build_model(checkpoint=str(tmp_path / name))
        assert target.model.rank_output.bias.item() == 3.0
    torch.save({"model.nothing": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not weights of this ViLT model"):
        load_weights(source, str(tmp_path / "other.pt"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_weights(source, str(tmp_path / "missing.pt"))
