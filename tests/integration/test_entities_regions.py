"""IoU matching of detector regions to ground-truth boxes, hand-computed."""
from __future__ import annotations

import numpy as np
import pytest

from integrations.entities import box_iou, match_regions, norm_bb_to_xyxy, parse_annotations

from .builders import GIRL_XML, write

GT = {
    "A": [(0, 0, 10, 10)],
    "B": [(20, 20, 30, 30), (100, 100, 110, 110)],  # two boxes
    "C": [],  # e.g. a scene entity: no box
}
REGIONS = np.array(
    [
        (0, 0, 10, 10),  # 0: A exactly                      IoU(A) = 1
        (5, 0, 15, 10),  # 1: half of A  inter 50, union 150 IoU(A) = 1/3
        (0, 0, 10, 5),  # 2: top half   inter 50, union 100 IoU(A) = 0.5 (kept: >=)
        (20, 20, 30, 30),  # 3: B's first box                 IoU(B) = 1
        (2, 2, 8, 8),  # 4: inside A   inter 36, union 100 IoU(A) = 0.36
        (3, 3, 3, 3),  # 5: degenerate (zero area)           IoU = 0
        (100, 100, 110, 105),  # 6: half of B's second box      IoU(B) = 0.5
    ],
    dtype=float,
)


def test_box_iou_by_hand():
    iou = box_iou(GT["A"] + GT["B"], REGIONS)
    expected = np.array(
        [
            [1, 1 / 3, 0.5, 0, 0.36, 0, 0],
            [0, 0, 0, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0.5],
        ]
    )
    np.testing.assert_allclose(iou, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "threshold, expected",
    [
        (0.5, {"A": [0, 2], "B": [3, 6]}),
        (0.3, {"A": [0, 1, 2, 4], "B": [3, 6]}),
        (0.34, {"A": [0, 2, 4], "B": [3, 6]}),
        (1.0, {"A": [0], "B": [3]}),
    ],
)
def test_threshold(threshold, expected):
    assert match_regions(GT, REGIONS, iou_threshold=threshold) == expected


def test_default_threshold_is_half_and_order_follows_gt():
    result = match_regions({"B": GT["B"], "A": GT["A"], "D": [(500, 500, 600, 600)]}, REGIONS)
    assert result == {"B": [3, 6], "A": [0, 2], "D": []}
    assert list(result) == ["B", "A", "D"]


def test_normalised_boxes_and_uniter_norm_bb():
    w, h = 160, 320
    x1, y1, x2, y2 = REGIONS.T
    norm_bb = np.stack([x1 / w, y1 / h, x2 / w, y2 / h, (x2 - x1) / w, (y2 - y1) / h], axis=1).astype(np.float16)
    # float16 (as stored in the img_db) keeps about 3 significant digits
    np.testing.assert_allclose(norm_bb_to_xyxy(norm_bb, (w, h)), REGIONS, rtol=0, atol=0.05)
    assert norm_bb_to_xyxy(norm_bb, (w, h)).dtype == np.float64
    assert match_regions(GT, norm_bb, image_size=(w, h)) == {"A": [0, 2], "B": [3, 6]}
    assert match_regions(GT, norm_bb[:, :4], image_size=(w, h)) == {"A": [0, 2], "B": [3, 6]}
    # (W, H) swapped scales x by H: nothing lines up any more
    assert match_regions(GT, norm_bb, image_size=(h, w)) == {"A": [], "B": []}


def test_annotation_input(tmp_path):
    a = parse_annotations(write(tmp_path / "a.xml", GIRL_XML))
    regions = [(150, 50, 249, 149), (0, 300, 499, 399), (0, 0, 20, 20)]
    assert match_regions(a, regions) == {"221796": [], "221804": [0], "221797": [], "221799": [1]}


def test_edge_cases():
    assert match_regions(GT, np.zeros((0, 4))) == {"A": [], "B": []}
    assert match_regions({}, REGIONS) == {}
    assert match_regions({"C": []}, REGIONS) == {}
    assert box_iou(np.zeros((0, 4)), REGIONS).shape == (0, 7)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(region_boxes_xyxy=np.zeros((3, 5))), ValueError, r"'region_boxes_xyxy' must have shape \(n, 4\); got shape \(3, 5\)"),
        (dict(region_boxes_xyxy=[(5, 0, 0, 5)]), ValueError, "x2 >= x1"),
        (dict(region_boxes_xyxy=[(0, 0, np.nan, 5)]), ValueError, "finite"),
        (dict(iou_threshold=0.0), ValueError, r"'iou_threshold' must be in \(0, 1\]; got 0.0"),
        (dict(iou_threshold=1.5), ValueError, "iou_threshold"),
        (dict(image_size=(0, 10)), ValueError, "'image_size' must be positive"),
        (dict(image_size=100), ValueError, r"'image_size' must be \(width, height\)"),
        (dict(gt_boxes=[(0, 0, 1, 1)]), TypeError, "'gt_boxes' must be a mapping"),
        (dict(gt_boxes={"A": [(0, 0, 1)]}), ValueError, "'gt_boxes' must have shape"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    args = dict(gt_boxes=GT, region_boxes_xyxy=REGIONS)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        match_regions(**args)
