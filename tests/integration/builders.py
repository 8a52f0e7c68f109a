"""Fixture builders: Flickr30k Entities XML files, a tiny WordPiece vocab.

The XML follows the published format description (dataset README and
``flickr30k_entities_utils.get_annotations``): ``<annotation>`` with
``<filename>``, ``<size>`` and ``<object>`` elements, each with one or more
``<name>`` entity ids and either a ``<bndbox>`` or ``<nobndbox>``/``<scene>``
flags. Files are written with tab indentation like the published ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
#: the shared Flickr30k Entities sample, ``../shared`` from the repository root
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data" / "flickr30k_entities"


def box_object(names: Sequence[str], box: tuple[int, int, int, int]) -> str:
    """An ``<object>`` with a bounding box (1-based pixel coordinates)."""
    name_lines = "".join(f"\t\t<name>{n}</name>\n" for n in names)
    x1, y1, x2, y2 = box
    return (
        "\t<object>\n"
        f"{name_lines}"
        "\t\t<bndbox>\n"
        f"\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
        f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n"
        "\t\t</bndbox>\n"
        "\t</object>\n"
    )


def flag_object(names: Sequence[str], *, scene: int, nobndbox: int) -> str:
    """An ``<object>`` without a box, carrying the scene / no-box flags."""
    name_lines = "".join(f"\t\t<name>{n}</name>\n" for n in names)
    return f"\t<object>\n{name_lines}\t\t<scene>{scene}</scene>\n\t\t<nobndbox>{nobndbox}</nobndbox>\n\t</object>\n"


def annotation_xml(filename: str, width: int, height: int, objects: Sequence[str], depth: int = 3) -> str:
    """A whole ``Annotations/<id>.xml`` document."""
    return (
        "<annotation>\n"
        f"\t<filename>{filename}</filename>\n"
        "\t<size>\n"
        f"\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>{depth}</depth>\n"
        "\t</size>\n"
        + "".join(objects)
        + "</annotation>\n"
    )


#: Hand-made annotation for image 4945942737 (the boxes are invented; the
#: entity ids are those of the real Sentences file). 1-based coordinates.
GIRL_XML = annotation_xml(
    "4945942737.jpg",
    500,
    400,
    [
        box_object(["221796"], (101, 51, 300, 350)),  # the girl
        box_object(["221804"], (151, 51, 250, 150)),  # brown hair
        box_object(["221796", "221797"], (121, 151, 280, 350)),  # girl's body = her black dress
        box_object(["221799"], (1, 301, 500, 400)),  # cement edge
        flag_object(["221798"], scene=1, nobndbox=0),  # water: the scene
        flag_object(["221800", "221802"], scene=0, nobndbox=1),  # "behind", "life": not boxed
    ],
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


#: A tiny cased WordPiece vocabulary: several words of the first caption of
#: 4945942737 split into more than one piece.
VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",  # 0-4
    "A", "girl", "with", "brown", "hair",  # 5-9
    "sits", "on", "the", "edge", "of",  # 10-14
    "a", "ce", "##ment", "area", "over",  # 15-19
    "##look", "##ing", "water", ".", "dark",  # 20-24
    "-", "##ed", "is", "sit", "##t",  # 25-29
]


def bert_tokenizer(tmp_path: Path):
    """``transformers.BertTokenizerFast`` over :data:`VOCAB` (cased)."""
    from transformers import BertTokenizerFast

    vocab = write(tmp_path / "vocab.txt", "\n".join(VOCAB) + "\n")
    return BertTokenizerFast(vocab=str(vocab), do_lower_case=False)
