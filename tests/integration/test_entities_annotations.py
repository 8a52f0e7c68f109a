"""Annotations/*.xml, built from the published format description."""
from __future__ import annotations

import pytest

from integrations.entities import FlickrEntitiesError, parse_annotations

from .builders import GIRL_XML, annotation_xml, box_object, flag_object, write


def test_every_construct(tmp_path):
    a = parse_annotations(write(tmp_path / "4945942737.xml", GIRL_XML))
    assert a.filename == "4945942737.jpg"
    assert (a.width, a.height, a.depth) == (500, 400, 3)
    assert a.size == (500, 400)
    # 1-based in the file -> 0-based here; the two-name box is under both ids
    assert a.boxes == {
        "221796": [(100, 50, 299, 349), (120, 150, 279, 349)],
        "221804": [(150, 50, 249, 149)],
        "221797": [(120, 150, 279, 349)],
        "221799": [(0, 300, 499, 399)],
    }
    assert a.scene == ["221798"]
    assert a.nobox == ["221800", "221802"]  # one flag object with two names


def test_one_based_false_keeps_file_numbers(tmp_path):
    a = parse_annotations(write(tmp_path / "a.xml", GIRL_XML), one_based=False)
    assert a.boxes["221804"] == [(151, 51, 250, 150)]


def test_scene_and_nobox_together_and_repeats(tmp_path):
    xml = annotation_xml(
        "1.jpg",
        10,
        10,
        [
            flag_object(["5"], scene=1, nobndbox=1),
            flag_object(["5", "6"], scene=1, nobndbox=0),
            box_object(["6"], (1, 1, 5, 5)),
        ],
    )
    a = parse_annotations(write(tmp_path / "1.xml", xml))
    assert a.scene == ["5", "6"]
    assert a.nobox == ["5"]
    assert a.boxes == {"6": [(0, 0, 4, 4)]}


def test_voc_extras_are_ignored_and_unknown_tags_rejected(tmp_path):
    xml = GIRL_XML.replace("<annotation>\n", "<annotation>\n\t<folder>flickr30k</folder>\n", 1).replace(
        "\t\t<bndbox>", "\t\t<difficult>0</difficult>\n\t\t<bndbox>", 1
    )
    assert parse_annotations(write(tmp_path / "voc.xml", xml)).boxes["221796"][0] == (100, 50, 299, 349)

    bad = GIRL_XML.replace("\t\t<name>221804</name>\n", "\t\t<name>221804</name>\n\t\t<colour>red</colour>\n")
    f = write(tmp_path / "bad.xml", bad)
    with pytest.raises(ValueError, match=r"unknown tag <colour> in <object>") as info:
        parse_annotations(f)
    line = bad.splitlines().index("\t\t<colour>red</colour>") + 1
    assert f"{f}, line {line}:" in str(info.value)
    assert parse_annotations(f, strict=False).boxes["221804"] == [(150, 50, 249, 149)]


def _broken(text: str, old: str, new: str) -> tuple[str, int]:
    """Replace ``old`` by ``new`` and return the text and the 1-based line of the change."""
    assert old in text
    i = text.index(old)
    return text.replace(old, new, 1), text.count("\n", 0, i) + 1


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("<xmin>101</xmin>", "<xmin>1O1</xmin>", "<xmin> must hold an integer; got '1O1'"),
        ("<xmax>300</xmax>", "<xmax>50</xmax>", "inverted box"),
        ("<scene>1</scene>", "<scene>2</scene>", "<scene> must be 0 or 1; got 2"),
        ("<name>221804</name>", "<name>hair</name>", "must hold an entity id"),
        ("<name>221804</name>", "", "<object> has no <name>"),
        ("<ymin>51</ymin>", "", "<bndbox> has no <ymin>"),
        ("<scene>1</scene>\n\t\t<nobndbox>0</nobndbox>", "", "neither <bndbox> nor <nobndbox>/<scene>"),
        ("<width>500</width>", "<width>0</width>", "image size must be positive"),
        ("<width>500</width>", "<width>500</width><width>5</width>", "2 <width> elements"),
        ("<xmin>101</xmin>", "<xmin>101</ymin>", "malformed XML"),
    ],
)
def test_malformed_xml_names_file_and_line(tmp_path, old, new, message):
    text, line = _broken(GIRL_XML, old, new)
    f = write(tmp_path / "bad.xml", text)
    with pytest.raises(FlickrEntitiesError, match=message) as info:
        parse_annotations(f)
    assert str(f) in str(info.value)
    # the error points at the broken element or its parent object, never past it
    assert info.value.line is not None and line - 8 <= info.value.line <= line


def test_structure_errors(tmp_path):
    with pytest.raises(ValueError, match="root element is <voc>"):
        parse_annotations(write(tmp_path / "a.xml", "<voc></voc>"))
    with pytest.raises(ValueError, match="<annotation> has no <size>"):
        parse_annotations(write(tmp_path / "b.xml", "<annotation><filename>x</filename></annotation>"))
    with pytest.raises(ValueError, match="malformed XML"):
        parse_annotations(write(tmp_path / "c.xml", ""))
    missing = tmp_path / "Annotations" / "404.xml"
    with pytest.raises(ValueError, match="does not exist") as info:
        parse_annotations(missing)
    assert isinstance(info.value, FileNotFoundError) and str(missing) in str(info.value)
