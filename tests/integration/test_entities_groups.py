"""object_groups: entities present in both modalities, fed to iaisreg.isda."""
from __future__ import annotations

import numpy as np
import pytest

from integrations.entities import object_groups, parse_annotations, parse_caption, parse_sentences

from .builders import GIRL_XML, SHARED_DATA, VOCAB, write
from .test_entities_tokens import CAPTION, EXPECTED_TOKENS

PIECES = {"cement": ["ce", "##ment"], "overlooking": ["over", "##look", "##ing"]}


def tokenize(word):
    return PIECES.get(word, [word])


# 0-based GT boxes of GIRL_XML: girl (100,50,299,349)+(120,150,279,349), hair (150,50,249,149),
# dress = girl's second box, cement (0,300,499,399), water: scene flag, "behind"/"life": nobndbox.
REGIONS = np.array(
    [
        (100, 50, 299, 349),  # 0: the girl (IoU 1); also the dress: 159*199 / (199*299) = 0.53
        (150, 50, 249, 149),  # 1: hair (IoU 1); girl: 9801 / 59501 = 0.16
        (0, 0, 50, 50),  # 2: nothing
        (0, 300, 499, 399),  # 3: cement (IoU 1)
        (0, 250, 499, 399),  # 4: cement 49401 / 74351 = 0.66; girl 19701 / 114151 = 0.17
    ],
    dtype=float,
)


@pytest.fixture
def annotation(tmp_path):
    return parse_annotations(write(tmp_path / "4945942737.xml", GIRL_XML))


def test_groups_with_uniter_offsets(annotation):
    s = parse_caption(CAPTION)
    n_ids = len(EXPECTED_TOKENS)  # 19
    g = object_groups(s, annotation, REGIONS, tokenize, text_offset=1, image_offset=n_ids + 2)
    assert g.entity_ids == ["221796", "221804", "221799"]
    assert g.names == ["A girl", "brown hair", "the edge of a cement area"]
    assert g.text_positions == [[1, 2], [4, 5], [8, 9, 10, 11, 12, 13, 14]]
    assert g.image_positions == [[21], [22], [24, 25]]
    assert g.skipped == {
        "221798": "no box in the image (flagged scene)",  # "overlooking water"
        "221797": "not mentioned in this caption",  # the dress box
    }
    assert len(g) == 3

    text, image = g.masks(n_ids + 2 + len(REGIONS))
    assert text.shape == image.shape == (3, 26) and text.dtype == bool
    assert [np.flatnonzero(r).tolist() for r in text] == g.text_positions
    assert [np.flatnonzero(r).tolist() for r in image] == g.image_positions
    with pytest.raises(ValueError, match="'seq_len' \\(25\\) is too short for position 25"):
        g.masks(25)


def test_threshold_normalised_boxes_and_unmatched_objects(annotation):
    s = parse_caption(CAPTION)
    w, h = annotation.size
    x1, y1, x2, y2 = REGIONS.T
    norm_bb = np.stack([x1 / w, y1 / h, x2 / w, y2 / h, (x2 - x1) / w, (y2 - y1) / h], 1).astype(np.float16)
    g = object_groups(s, annotation, norm_bb, tokenize, normalized=True, iou_threshold=0.7)
    assert g.entity_ids == ["221796", "221804", "221799"]
    assert g.image_positions == [[0], [1], [3]]  # region 4 (IoU 0.66) no longer matches the cement
    # without the hair region, "brown hair" has a box but no region: skipped
    g = object_groups(s, annotation, REGIONS[[0, 3]], tokenize)
    assert g.entity_ids == ["221796", "221799"]
    assert g.skipped["221804"] == "no region with IoU >= 0.5"


@pytest.mark.skipif(not (SHARED_DATA / "Sentences").is_dir(), reason=f"shared sample not found at {SHARED_DATA}")
def test_real_captions_nobox_and_notvisual(annotation):
    sentences = parse_sentences(SHARED_DATA / "Sentences" / "4945942737.txt")
    g = object_groups(sentences[1], annotation, REGIONS, tokenize)  # "A woman in black , seen from behind , ..."
    assert g.entity_ids == ["221796", "221797"]  # the woman, her black (dress) share region 0
    assert g.names == ["A woman", "black"]
    assert g.image_positions == [[0], [0]]
    assert g.skipped["221800"] == "no box in the image (flagged nobndbox)"
    assert g.skipped["221798"] == "no box in the image (flagged scene)"
    assert g.skipped["221804"] == "not mentioned in this caption"


def test_notvisual_is_never_an_object(annotation):
    s = parse_caption("[/EN#221796/people A girl] looks at [/EN#0/notvisual it] .")
    g = object_groups(s, annotation, REGIONS, tokenize)
    assert g.entity_ids == ["221796"] and "0" not in g.skipped


def test_hf_tokenizer_and_txt_db_ids(annotation, tmp_path):
    pytest.importorskip("transformers")
    from .builders import bert_tokenizer

    tok = bert_tokenizer(tmp_path)
    s = parse_caption(CAPTION)
    ids = [VOCAB.index(t) for t in EXPECTED_TOKENS]
    g = object_groups(s, annotation, REGIONS, tok, input_ids=ids)
    assert g.text_positions[2] == [7, 8, 9, 10, 11, 12, 13]
    with pytest.raises(ValueError, match="does not match the caption"):
        object_groups(s, annotation, REGIONS, tok, input_ids=ids[1:])


def test_bad_arguments(annotation):
    s = parse_caption(CAPTION)
    with pytest.raises(TypeError, match="'annotation' must be an Annotation"):
        object_groups(s, {"1": []}, REGIONS, tokenize)
    with pytest.raises(ValueError, match="'text_offset' must be a non-negative int; got -1"):
        object_groups(s, annotation, REGIONS, tokenize, text_offset=-1)


def test_feeds_iaisreg_isda(annotation):
    iaisreg = pytest.importorskip("iaisreg")
    if not hasattr(iaisreg, "isda"):
        pytest.skip("iaisreg.isda is not available")
    s = parse_caption(CAPTION)
    n_text = len(EXPECTED_TOKENS) + 2  # [CLS] caption [SEP]
    g = object_groups(s, annotation, REGIONS, tokenize, text_offset=1, image_offset=n_text)
    n = n_text + len(REGIONS)
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(1, 2, n, n))
    text_mask = np.zeros((1, n), bool)
    text_mask[0, 1 : n_text - 1] = True
    image_mask = np.zeros((1, n), bool)
    image_mask[0, n_text:] = True
    from_lists = iaisreg.isda(scores, g.text_positions, g.image_positions, text_mask=text_mask, image_mask=image_mask)
    masks = g.masks(n)
    from_masks = iaisreg.isda(scores, masks[0], masks[1], text_mask=text_mask, image_mask=image_mask)
    assert np.shape(from_lists) == (1,) and np.isfinite(from_lists).all() and float(from_lists[0]) > 0
    np.testing.assert_allclose(from_lists, from_masks)
