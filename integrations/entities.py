"""Flickr30k Entities reader: phrases, boxes, and object groups for ISDa.

Flickr30k Entities (Plummer et al., IJCV 2017) annotates every caption of
Flickr30k with coreference chains ("entities") and every image with the boxes
of those entities. This module reads the two published file kinds and turns
them into the per-object text and region positions that
``iaisreg.isda(scores, text_groups, image_groups)`` needs (Ren et al.,
ACL 2021, Sec. 2.2-2.3).

File formats (see the dataset's README):

* ``Sentences/<image id>.txt``: one caption per line (five per image). An
  annotated phrase is written ``[/EN#<entity id>/<type>[/<type>...] w1 w2 ...]``;
  phrases are not nested. Entity id ``0`` marks a ``notvisual`` phrase; such
  phrases were never boxed and are *not* one entity (each is a singleton).
* ``Annotations/<image id>.xml``: PASCAL-VOC-like XML with ``<filename>``,
  ``<size>`` (``width``, ``height``, ``depth``) and ``<object>`` elements. An
  object has one or more ``<name>`` children (entity ids; one box can belong
  to several entities) and either a ``<bndbox>`` (``xmin ymin xmax ymax``,
  1-based pixels) or the flags ``<nobndbox>0|1</nobndbox>`` and
  ``<scene>0|1</scene>``.

Pipeline (all positions are 0-based)::

    sentences = parse_sentences("Sentences/4945942737.txt")
    annotation = parse_annotations("Annotations/4945942737.xml")
    groups = object_groups(sentences[0], annotation, norm_bb, tokenizer,
                           normalized=True, input_ids=txt_db_input_ids,
                           text_offset=1, image_offset=len(input_ids) + 2)
    value = iaisreg.isda(scores, groups.text_positions, groups.image_positions)

Only ``numpy`` and the standard library are imported; a Hugging Face
tokenizer is used through duck typing.
"""
from __future__ import annotations

import os
import re
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence, Union

import numpy as np

__all__ = [
    "ENTITY_TYPES",
    "NOTVISUAL_ID",
    "FlickrEntitiesError",
    "check_entities_dir",
    "FlickrEntitiesFileNotFoundError",
    "Phrase",
    "Sentence",
    "Annotation",
    "TokenizedCaption",
    "ObjectGroups",
    "parse_caption",
    "parse_sentences",
    "parse_annotations",
    "read_image_entities",
    "tokenize_caption",
    "phrase_token_positions",
    "box_iou",
    "norm_bb_to_xyxy",
    "match_regions",
    "object_groups",
]

PathLike = Union[str, "os.PathLike[str]"]
Box = tuple[int, int, int, int]

#: The coarse phrase types of Flickr30k Entities (Plummer et al., Sec. 3).
ENTITY_TYPES: frozenset[str] = frozenset(
    {"people", "clothing", "bodyparts", "animals", "vehicles", "instruments", "scene", "other", "notvisual"}
)
#: Entity id of ``notvisual`` phrases; every such phrase is its own singleton.
NOTVISUAL_ID = "0"

_TAG_RE = re.compile(r"^\[/EN#(?P<id>[^/\s\]]*)(?P<types>(?:/[^/\s\]]*)*)$")


# --------------------------------------------------------------------------- errors


class FlickrEntitiesError(ValueError):
    """A Flickr30k Entities file is missing or malformed.

    ``path`` and ``line`` (1-based, or ``None`` when unknown) say where.
    """

    def __init__(self, message: str, *, path: PathLike | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{os.fspath(path)}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.path = None if path is None else os.fspath(path)
        self.line = line


class FlickrEntitiesFileNotFoundError(FlickrEntitiesError, FileNotFoundError):
    """The file does not exist (a ``ValueError`` and a ``FileNotFoundError``)."""


def check_entities_dir(path: PathLike) -> None:
    """:class:`FlickrEntitiesFileNotFoundError` unless ``path`` holds a ``Sentences/`` folder (the dataset's
    root, next to ``Annotations/``)."""
    if not os.path.isdir(os.path.join(path, "Sentences")):
        raise FlickrEntitiesFileNotFoundError(f"no Sentences/ folder in the Flickr30k Entities directory {path}")


def _existing_file(path: PathLike, *, func: str) -> Path:
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise FlickrEntitiesFileNotFoundError(f"{func}: file {what}", path=p)
    return p


def _read_text(path: PathLike, *, func: str) -> str:
    p = _existing_file(path, func=func)
    try:
        return p.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as e:
        raise FlickrEntitiesError(f"{func}: file is not valid UTF-8 ({e})", path=p) from None


# --------------------------------------------------------------------------- sentences


@dataclass(frozen=True)
class Phrase:
    """One annotated phrase of a caption.

    ``first_word_index`` indexes :attr:`Sentence.words`; ``words`` are the
    phrase's words; ``entity_id`` is the coreference-chain id as a string
    (``"0"`` for ``notvisual``); ``types`` the coarse types, in file order.
    """

    first_word_index: int
    words: tuple[str, ...]
    entity_id: str
    types: tuple[str, ...]

    @property
    def text(self) -> str:
        """The phrase as plain text (its words joined by single spaces)."""
        return " ".join(self.words)

    @property
    def word_indices(self) -> range:
        """Indices of the phrase's words in :attr:`Sentence.words`."""
        return range(self.first_word_index, self.first_word_index + len(self.words))

    @property
    def is_visual(self) -> bool:
        """False for ``notvisual`` phrases (entity id ``"0"``)."""
        return self.entity_id != NOTVISUAL_ID


@dataclass(frozen=True)
class Sentence:
    """One caption: plain ``text``, its whitespace ``words`` and its ``phrases``.

    ``line`` is the 1-based line of the caption in its file (``None`` when
    parsed from a string).
    """

    text: str
    words: tuple[str, ...]
    phrases: tuple[Phrase, ...]
    line: int | None = None

    @property
    def entity_ids(self) -> list[str]:
        """Visual entity ids in order of first mention (``"0"`` excluded)."""
        seen: dict[str, None] = {}
        for ph in self.phrases:
            if ph.is_visual:
                seen.setdefault(ph.entity_id, None)
        return list(seen)


def parse_caption(
    line: str,
    *,
    allowed_types: Collection[str] | None = ENTITY_TYPES,
    path: PathLike | None = None,
    line_number: int | None = None,
) -> Sentence:
    """Parse one annotated caption line.

    Words are the whitespace-separated tokens with the phrase markup removed
    (punctuation stays a word of its own as written in the file). Phrase
    types are checked against ``allowed_types`` (default: the nine
    Flickr30k Entities types; ``None`` accepts any non-empty name).

    Raises :class:`FlickrEntitiesError` (a ``ValueError``) naming ``path`` and
    ``line_number`` on nested or unclosed brackets, a stray ``]``, an empty
    phrase, a malformed ``[/EN#id/type`` tag or an unknown type.

    >>> s = parse_caption("[/EN#7/people/other A man] in [/EN#0/notvisual it] .")
    >>> s.text, [(p.first_word_index, p.text, p.entity_id, p.types) for p in s.phrases]
    ('A man in it .', [(0, 'A man', '7', ('people', 'other')), (3, 'it', '0', ('notvisual',))])
    """

    def fail(msg: str) -> FlickrEntitiesError:
        return FlickrEntitiesError(f"{msg}; caption: {line.strip()!r}", path=path, line=line_number)

    words, phrases = _words_and_phrases(line.split(), allowed_types, fail)
    if not words:
        raise fail("caption has no words")
    return Sentence(" ".join(words), tuple(words), tuple(phrases), line_number)


def _words_and_phrases(
    tokens: Iterable[str], allowed_types: Collection[str] | None, fail: Callable[[str], FlickrEntitiesError]
) -> tuple[list[str], list[Phrase]]:
    """The words of a caption's whitespace tokens, markup removed, and its phrases.

    ``fail`` builds the error for nested, unclosed or empty phrases and stray
    ``']'`` (see :func:`_parse_tag` for the checks of a tag).
    """
    words: list[str] = []
    phrases: list[Phrase] = []
    open_tag: tuple[str, tuple[str, ...], int, str] | None = None  # id, types, first word, tag text
    current: list[str] = []
    for token in tokens:
        if token.startswith("["):
            if open_tag is not None:
                raise fail(f"nested phrase: {token!r} opens a phrase inside {open_tag[3]!r}")
            entity_id, types = _parse_tag(token, allowed_types, fail)
            open_tag, current = (entity_id, types, len(words), token), []
        elif open_tag is None:
            if "]" in token:
                raise fail(f"stray ']' in {token!r} outside a phrase")
            words.append(token)
        else:
            word, closes = _phrase_word(token, fail)
            if word:
                current.append(word)
                words.append(word)
            if closes:
                if not current:
                    raise fail(f"empty phrase {open_tag[3]!r}; a phrase needs at least one word")
                entity_id, types, first, _ = open_tag
                phrases.append(Phrase(first, tuple(current), entity_id, types))
                open_tag, current = None, []
    if open_tag is not None:
        raise fail(f"phrase {open_tag[3]!r} is never closed with ']'")
    return words, phrases


def _parse_tag(
    token: str, allowed_types: Collection[str] | None, fail: Callable[[str], FlickrEntitiesError]
) -> tuple[str, tuple[str, ...]]:
    """``(entity id, types)`` of a token that opens a phrase, e.g. ``'[/EN#7/people/other'``.

    ``fail`` builds the error for a malformed tag (pattern, entity id or an
    empty type), an unknown type, or a tag that also closes the phrase
    (``'[/EN#7/people]'``: an empty phrase).
    """
    closes = token.endswith("]")
    tag = token[:-1] if closes else token
    m = _TAG_RE.match(tag)
    if m is None:
        raise fail(f"malformed phrase tag {token!r}; expected '[/EN#<entity id>/<type>[/<type>...]'")
    entity_id = m.group("id")
    types = tuple(m.group("types").split("/")[1:])
    if not entity_id.isdigit():
        raise fail(f"malformed entity id {entity_id!r} in {token!r}; expected a non-negative integer")
    if not types or any(not t for t in types):
        raise fail(f"phrase tag {token!r} has an empty or missing type; expected '/EN#<id>/<type>'")
    if allowed_types is not None:
        unknown = [t for t in types if t not in allowed_types]
        if unknown:
            raise fail(f"unknown phrase type {unknown[0]!r} in {token!r}; expected one of {sorted(allowed_types)}")
    if closes:
        raise fail(f"empty phrase {token!r}; a phrase needs at least one word")
    return entity_id, types


def _phrase_word(token: str, fail: Callable[[str], FlickrEntitiesError]) -> tuple[str, bool]:
    """``(word, closes)`` for a token inside a phrase.

    ``word`` is the token without a final ``']'`` (``''`` for a lone ``']'``);
    ``closes`` says whether that ``']'`` ends the phrase. Any other ``']'`` is
    a stray one, reported through ``fail``.
    """
    closes = token.endswith("]")
    word = token[:-1] if closes else token
    if "]" in word:
        raise fail(f"stray ']' in {token!r}")
    return word, closes


def parse_sentences(path: PathLike, *, allowed_types: Collection[str] | None = ENTITY_TYPES) -> list[Sentence]:
    """Read ``Sentences/<image id>.txt``: one :class:`Sentence` per non-blank line.

    Blank lines are skipped; :attr:`Sentence.line` keeps each caption's
    1-based line number, so errors and results can be traced back to the
    file. See :func:`parse_caption` for the checks.

    Raises :class:`FlickrEntitiesFileNotFoundError` (a ``ValueError`` and a
    ``FileNotFoundError``) for a missing file and :class:`FlickrEntitiesError`
    (a ``ValueError``) naming the file and line for malformed content.
    """
    text = _read_text(path, func="parse_sentences")
    sentences = [
        parse_caption(raw, allowed_types=allowed_types, path=path, line_number=i)
        for i, raw in enumerate(text.splitlines(), start=1)
        if raw.strip()
    ]
    if not sentences:
        raise FlickrEntitiesError("parse_sentences: file has no captions", path=path)
    return sentences


# --------------------------------------------------------------------------- annotations


@dataclass(frozen=True)
class Annotation:
    """Contents of ``Annotations/<image id>.xml``.

    ``boxes`` maps entity id -> list of ``(x1, y1, x2, y2)`` pixel boxes (a box
    with several ``<name>`` children is listed under each of them); ``scene``
    and ``nobox`` list the entity ids flagged ``<scene>1`` / ``<nobndbox>1``,
    in file order without repeats.
    """

    filename: str | None
    width: int
    height: int
    depth: int | None
    boxes: dict[str, list[Box]]
    scene: list[str]
    nobox: list[str]

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return (self.width, self.height)


@dataclass
class _Node:
    tag: str
    line: int
    text: str = ""
    children: list["_Node"] = field(default_factory=list)

    def find_all(self, tag: str) -> list["_Node"]:
        return [c for c in self.children if c.tag == tag]


def _parse_xml(data: bytes, path: PathLike) -> _Node:
    """Parse XML into a small tree that remembers each element's line."""
    parser = xml.parsers.expat.ParserCreate()
    stack: list[_Node] = []
    root: list[_Node] = []

    def start(tag: str, attrs: dict) -> None:
        node = _Node(tag, parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise FlickrEntitiesError(
            f"parse_annotations: malformed XML ({xml.parsers.expat.ErrorString(e.code)}, column {e.offset})",
            path=path,
            line=e.lineno,
        ) from None
    return root[0]


# Tags of the PASCAL VOC layout that carry nothing we use; accepted and ignored.
_IGNORED_TOP = frozenset({"folder", "source", "owner", "segmented"})
_IGNORED_OBJECT = frozenset({"pose", "truncated", "difficult", "occluded"})


@dataclass(frozen=True)
class _AnnotationReader:
    """Checked access to the elements of one annotation file.

    Every error it raises is a :class:`FlickrEntitiesError` prefixed with
    ``func`` and naming ``path`` and the offending element's line.
    """

    path: Path
    strict: bool
    func: str

    def fail(self, msg: str, node: _Node) -> FlickrEntitiesError:
        return FlickrEntitiesError(f"{self.func}: {msg}", path=self.path, line=node.line)

    def one(self, parent: _Node, tag: str, *, required: bool = True) -> _Node | None:
        """The single ``<tag>`` child of ``parent``; ``None`` when absent and not ``required``."""
        found = parent.find_all(tag)
        if len(found) > 1:
            raise self.fail(f"<{parent.tag}> has {len(found)} <{tag}> elements; expected one", found[1])
        if not found:
            if required:
                raise self.fail(f"<{parent.tag}> has no <{tag}> element", parent)
            return None
        return found[0]

    def integer(self, node: _Node) -> int:
        text = node.text.strip()
        try:
            return int(text)
        except ValueError:
            raise self.fail(f"<{node.tag}> must hold an integer; got {text!r}", node) from None

    def flag(self, node: _Node | None) -> bool:
        """A ``0``/``1`` flag element as a bool; an absent one is ``False``."""
        if node is None:
            return False
        value = self.integer(node)
        if value not in (0, 1):
            raise self.fail(f"<{node.tag}> must be 0 or 1; got {value}", node)
        return value == 1

    def check_known(self, node: _Node, known: Iterable[str], ignored: Collection[str]) -> None:
        """With ``strict``, reject a child of ``node`` that is neither ``known`` nor ``ignored``."""
        known = set(known)
        for child in node.children:
            if child.tag not in known and child.tag not in ignored and self.strict:
                raise self.fail(
                    f"unknown tag <{child.tag}> in <{node.tag}>; expected one of {sorted(known)} "
                    "(pass strict=False to ignore unknown tags)",
                    child,
                )


def _read_size(reader: _AnnotationReader, root: _Node) -> tuple[int, int, int | None]:
    """``(width, height, depth)`` from ``<size>``; ``depth`` is ``None`` when absent."""
    size = reader.one(root, "size")
    reader.check_known(size, ("width", "height", "depth"), ())
    width, height = reader.integer(reader.one(size, "width")), reader.integer(reader.one(size, "height"))
    depth_node = reader.one(size, "depth", required=False)
    depth = reader.integer(depth_node) if depth_node is not None else None
    if width <= 0 or height <= 0:
        raise reader.fail(f"image size must be positive; got width={width}, height={height}", size)
    return width, height, depth


def _read_names(reader: _AnnotationReader, obj: _Node) -> list[str]:
    """The entity ids of an ``<object>``, one per ``<name>``, in file order."""
    names = []
    for name_node in obj.find_all("name"):
        name = name_node.text.strip()
        if not name.isdigit():
            raise reader.fail(f"<name> must hold an entity id (a non-negative integer); got {name!r}", name_node)
        names.append(name)
    if not names:
        raise reader.fail("<object> has no <name> (entity id)", obj)
    return names


def _read_box(reader: _AnnotationReader, bndbox: _Node, one_based: bool) -> Box:
    """``(x1, y1, x2, y2)`` from ``<bndbox>``, 1 subtracted from each when ``one_based``."""
    reader.check_known(bndbox, ("xmin", "ymin", "xmax", "ymax"), ())
    x1, y1, x2, y2 = (reader.integer(reader.one(bndbox, t)) for t in ("xmin", "ymin", "xmax", "ymax"))
    if x2 < x1 or y2 < y1:
        raise reader.fail(f"inverted box: xmin={x1}, ymin={y1}, xmax={x2}, ymax={y2}", bndbox)
    off = 1 if one_based else 0
    return (x1 - off, y1 - off, x2 - off, y2 - off)


def _read_object(reader: _AnnotationReader, obj: _Node, one_based: bool) -> tuple[list[str], Box | None, bool, bool]:
    """One ``<object>``: ``(entity ids, box or None, nobndbox flag, scene flag)``."""
    reader.check_known(obj, ("name", "bndbox", "nobndbox", "scene"), _IGNORED_OBJECT)
    names = _read_names(reader, obj)
    bndbox = reader.one(obj, "bndbox", required=False)
    nobndbox_node = reader.one(obj, "nobndbox", required=False)
    scene_node = reader.one(obj, "scene", required=False)
    is_nobox, is_scene = reader.flag(nobndbox_node), reader.flag(scene_node)
    box = None
    if bndbox is not None:
        if is_nobox:
            raise reader.fail("<object> has a <bndbox> and <nobndbox>1</nobndbox>", obj)
        box = _read_box(reader, bndbox, one_based)
    elif nobndbox_node is None and scene_node is None:
        raise reader.fail("<object> has neither <bndbox> nor <nobndbox>/<scene> flags", obj)
    return names, box, is_nobox, is_scene


def parse_annotations(path: PathLike, *, one_based: bool = True, strict: bool = True) -> Annotation:
    """Read ``Annotations/<image id>.xml`` into an :class:`Annotation`.

    Box coordinates in the files are 1-based pixel indices (PASCAL VOC);
    with ``one_based=True`` (default) 1 is subtracted from each, as the
    dataset's own ``flickr30k_entities_utils.get_annotations`` does, giving
    0-based ``(x1, y1, x2, y2)``. ``one_based=False`` keeps the numbers as
    written.

    Every ``<name>`` of an object is honoured (the official Python reader
    keeps only the first). An object without ``<bndbox>`` must carry
    ``<nobndbox>`` and/or ``<scene>`` flags (0 or 1).

    With ``strict=True`` an unknown tag (other than the unused PASCAL VOC
    tags ``folder``, ``source``, ``owner``, ``segmented``, ``pose``,
    ``truncated``, ``difficult``, ``occluded``) is an error; ``strict=False``
    ignores it.

    Raises :class:`FlickrEntitiesFileNotFoundError` for a missing file and
    :class:`FlickrEntitiesError` (a ``ValueError``) naming the file and line
    for malformed XML, missing or repeated tags, non-integer values, flags
    other than 0/1 and inverted boxes.
    """
    func = "parse_annotations"
    p = _existing_file(path, func=func)
    root = _parse_xml(p.read_bytes(), p)
    reader = _AnnotationReader(p, strict, func)
    if root.tag != "annotation":
        raise reader.fail(f"root element is <{root.tag}>; expected <annotation>", root)
    reader.check_known(root, ("filename", "size", "object"), _IGNORED_TOP)
    fn_node = reader.one(root, "filename", required=False)
    filename = fn_node.text.strip() if fn_node is not None else None
    width, height, depth = _read_size(reader, root)

    boxes: dict[str, list[Box]] = {}
    scene: dict[str, None] = {}  # dicts keep file order without repeats
    nobox: dict[str, None] = {}
    for obj in root.find_all("object"):
        names, box, is_nobox, is_scene = _read_object(reader, obj, one_based)
        for name in names:
            if box is not None:
                boxes.setdefault(name, []).append(box)
            if is_nobox:
                nobox.setdefault(name, None)
            if is_scene:
                scene.setdefault(name, None)
    return Annotation(filename, width, height, depth, boxes, list(scene), list(nobox))


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenizedCaption:
    """A caption tokenised word by word, as UNITER builds its txt_db.

    ``tokens``: the WordPiece tokens; ``input_ids``: their ids (``None`` when
    the tokenizer was a plain callable); ``word_positions[i]``: positions in
    ``tokens`` of ``sentence.words[i]`` (empty when the word yields no
    token: UNITER drops such words). No ``[CLS]``/``[SEP]``.
    """

    tokens: tuple[str, ...]
    input_ids: tuple[int, ...] | None
    word_positions: tuple[tuple[int, ...], ...]


Tokenizer = Union[Callable[[str], Sequence[str]], Any]


def read_image_entities(entities: PathLike, image_id: str) -> tuple[list[Sentence], Annotation] | None:
    """The sentences and the annotation of one image from a Flickr30k Entities
    directory (``Sentences/<id>.txt``, ``Annotations/<id>.xml``); None when
    either file is absent. A malformed file raises :class:`FlickrEntitiesError`."""
    sentences = os.path.join(entities, "Sentences", f"{image_id}.txt")
    annotation = os.path.join(entities, "Annotations", f"{image_id}.xml")
    if not (os.path.isfile(sentences) and os.path.isfile(annotation)):
        return None
    return parse_sentences(sentences), parse_annotations(annotation)


def _is_hf_tokenizer(tokenize: Any) -> bool:
    return hasattr(tokenize, "tokenize") and hasattr(tokenize, "convert_tokens_to_ids")


def tokenize_caption(sentence: Sentence | Sequence[str], tokenize: Tokenizer) -> TokenizedCaption:
    """Tokenise ``sentence`` word by word (UNITER's ``bert_tokenize``).

    ``tokenize`` is a Hugging Face tokenizer (anything with ``tokenize`` and
    ``convert_tokens_to_ids``; ids are then filled in) or a callable
    ``word -> list[str]`` (``input_ids`` is then ``None``).

    >>> tc = tokenize_caption(["a", "dog"], lambda w: [w] if w == "a" else ["do", "##g"])
    >>> tc.tokens, tc.word_positions
    (('a', 'do', '##g'), ((0,), (1, 2)))
    """
    words = sentence.words if isinstance(sentence, Sentence) else tuple(sentence)
    hf = _is_hf_tokenizer(tokenize)
    if not hf and not callable(tokenize):
        raise TypeError(
            "tokenize_caption: argument 'tokenize' must be a Hugging Face tokenizer or a callable "
            f"word -> list[str]; got {type(tokenize).__name__}"
        )
    split = tokenize.tokenize if hf else tokenize
    tokens: list[str] = []
    word_positions: list[tuple[int, ...]] = []
    for word in words:
        pieces = split(word)
        if isinstance(pieces, str) or not all(isinstance(t, str) for t in pieces):
            raise TypeError(
                f"tokenize_caption: argument 'tokenize' must return a list of str tokens; got {pieces!r} for {word!r}"
            )
        start = len(tokens)
        tokens.extend(pieces)
        word_positions.append(tuple(range(start, len(tokens))))
    input_ids = None
    if hf:
        input_ids = tuple(int(i) for i in tokenize.convert_tokens_to_ids(tokens))
    return TokenizedCaption(tuple(tokens), input_ids, tuple(word_positions))


def _check_input_ids(sentence: Sentence, tok: TokenizedCaption, expected: Any, *, func: str) -> None:
    if tok.input_ids is None:
        raise TypeError(
            f"{func}: checking 'input_ids' needs a tokenizer with convert_tokens_to_ids "
            "(e.g. transformers.BertTokenizerFast); got a plain callable"
        )
    try:
        expected = [int(i) for i in expected]
    except (TypeError, ValueError):
        raise TypeError(f"{func}: argument 'input_ids' must be a sequence of ints; got {type(expected).__name__}") from None
    got = list(tok.input_ids)
    if got == expected:
        return
    first = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    where = ""
    if first < len(got):
        word_of = {p: w for w, ps in zip(sentence.words, tok.word_positions) for p in ps}
        where = f" (our token {tok.tokens[first]!r} of word {word_of[first]!r})"
    exp_at = expected[first] if first < len(expected) else "<end>"
    got_at = got[first] if first < len(got) else "<end>"
    raise ValueError(
        f"{func}: argument 'input_ids' ({len(expected)} ids) does not match the caption tokenised word by word "
        f"({len(got)} ids); first difference at position {first}: input_ids has {exp_at}, the caption gives "
        f"{got_at}{where}. Was the txt_db built from another caption text or tokenizer? caption: {sentence.text!r}"
    )


def phrase_token_positions(
    sentence: Sentence,
    tokenize: Tokenizer,
    *,
    input_ids: Sequence[int] | None = None,
    return_input_ids: bool = False,
) -> dict[str, list[int]] | tuple[dict[str, list[int]], list[int]]:
    """Map each visual entity of ``sentence`` to its WordPiece positions.

    The caption is tokenised word by word (:func:`tokenize_caption`); the
    positions index the resulting ``input_ids`` **without** ``[CLS]`` /
    ``[SEP]`` (UNITER's txt_db layout): add 1 for the ``[CLS]`` in front.
    An entity mentioned by several phrases gets the union of their
    positions, sorted. Keys are in order of first mention; ``notvisual``
    phrases (entity ``"0"``, each its own singleton) are left out, as are
    entities whose words yield no token.

    ``input_ids`` (e.g. from a txt_db example) is compared with the ids the
    tokenizer gives; a mismatch raises ``ValueError`` showing the first
    differing position. ``return_input_ids=True`` returns
    ``(positions, input_ids)``. Both need a Hugging Face tokenizer.

    >>> s = parse_caption("[/EN#5/people A boy] runs to [/EN#5/people him]")
    >>> phrase_token_positions(s, lambda w: [w[:2], "##" + w[2:]] if len(w) > 2 else [w])
    {'5': [0, 1, 2, 6, 7]}
    """
    func = "phrase_token_positions"
    if not isinstance(sentence, Sentence):
        raise TypeError(f"{func}: argument 'sentence' must be a Sentence; got {type(sentence).__name__}")
    tok = tokenize_caption(sentence, tokenize)
    if input_ids is not None:
        _check_input_ids(sentence, tok, input_ids, func=func)
    positions: dict[str, set[int]] = {}
    for ph in sentence.phrases:
        if not ph.is_visual:
            continue
        pos = [p for w in ph.word_indices for p in tok.word_positions[w]]
        if pos:
            positions.setdefault(ph.entity_id, set()).update(pos)
    result = {k: sorted(v) for k, v in positions.items()}
    if return_input_ids:
        if tok.input_ids is None:
            raise TypeError(
                f"{func}: return_input_ids=True needs a tokenizer with convert_tokens_to_ids; got a plain callable"
            )
        return result, list(tok.input_ids)
    return result


# --------------------------------------------------------------------------- regions


def _as_boxes(x: Any, name: str, *, func: str, columns: Collection[int] = (4,)) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] not in columns:
        cols = " or ".join(f"(n, {c})" for c in columns)
        raise ValueError(f"{func}: argument {name!r} must have shape {cols}; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{func}: argument {name!r} must hold finite numbers")
    if arr.shape[0] and ((arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any()):
        raise ValueError(f"{func}: argument {name!r} must hold boxes (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")
    return arr


def _check_image_size(image_size: Any, *, func: str) -> tuple[float, float]:
    try:
        w, h = image_size
        w, h = float(w), float(h)
    except (TypeError, ValueError):
        raise ValueError(f"{func}: argument 'image_size' must be (width, height); got {image_size!r}") from None
    if not (w > 0 and h > 0):
        raise ValueError(f"{func}: argument 'image_size' must be positive; got {image_size!r}")
    return w, h


def box_iou(boxes_a: Any, boxes_b: Any) -> np.ndarray:
    """Intersection over union of every pair: ``(A, 4), (B, 4) -> (A, B)``.

    Boxes are ``(x1, y1, x2, y2)`` on a continuous axis (area
    ``(x2 - x1) * (y2 - y1)``); pairs whose union is empty get IoU 0.

    >>> box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2], [5, 5, 6, 6]]).round(4).tolist()
    [[0.3333, 0.0]]
    """
    a = _as_boxes(boxes_a, "boxes_a", func="box_iou")
    b = _as_boxes(boxes_b, "boxes_b", func="box_iou")
    return _iou(a, b)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def norm_bb_to_xyxy(norm_bb: Any, image_size: tuple[float, float]) -> np.ndarray:
    """Pixel boxes from UNITER's normalised boxes: ``(R, 6) or (R, 4) -> (R, 4)``.

    UNITER's img_db stores ``norm_bb = [x1/W, y1/H, x2/W, y2/H, w/W, h/H]``
    (float16); the first four columns times ``(W, H, W, H)`` give the pixel
    ``(x1, y1, x2, y2)`` as float64. ``image_size`` is ``(W, H)``, e.g.
    :attr:`Annotation.size`.

    >>> norm_bb_to_xyxy([[0.5, 0.25, 1.0, 0.5, 0.5, 0.25]], (200, 100)).tolist()
    [[100.0, 25.0, 200.0, 50.0]]
    """
    func = "norm_bb_to_xyxy"
    w, h = _check_image_size(image_size, func=func)
    nb = _as_boxes(norm_bb, "norm_bb", func=func, columns=(4, 6))
    return nb[:, :4] * np.array([w, h, w, h])


def match_regions(
    gt_boxes: Mapping[str, Sequence[Sequence[float]]] | Annotation,
    region_boxes_xyxy: Any,
    iou_threshold: float = 0.5,
    *,
    image_size: tuple[float, float] | None = None,
) -> dict[str, list[int]]:
    """Assign detector regions to entities by IoU: region ``r`` belongs to
    entity ``e`` when ``IoU(r, b) >= iou_threshold`` for any box ``b`` of ``e``.

    ``gt_boxes``: entity id -> list of ``(x1, y1, x2, y2)`` pixel boxes (or an
    :class:`Annotation`, whose ``boxes`` are used). ``region_boxes_xyxy``:
    ``(R, 4)`` pixel boxes; when ``image_size=(W, H)`` is given they are
    taken as normalised ``(R, 4)`` or UNITER ``norm_bb`` ``(R, 6)`` and scaled
    by :func:`norm_bb_to_xyxy`. One IoU matrix is computed for all boxes at
    once.

    Returns entity id -> sorted region indices (0-based rows of
    ``region_boxes_xyxy``), for every entity with at least one box, in the
    order of ``gt_boxes``; an entity no region overlaps enough gets ``[]``.

    >>> match_regions({"1": [(0, 0, 10, 10)]}, [[0, 0, 10, 9], [0, 0, 4, 4], [1, 1, 10, 10]])
    {'1': [0, 2]}
    """
    func = "match_regions"
    if isinstance(gt_boxes, Annotation):
        gt_boxes = gt_boxes.boxes
    if not isinstance(gt_boxes, Mapping):
        raise TypeError(
            f"{func}: argument 'gt_boxes' must be a mapping entity id -> list of boxes or an Annotation; "
            f"got {type(gt_boxes).__name__}"
        )
    t = float(iou_threshold)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"{func}: argument 'iou_threshold' must be in (0, 1]; got {iou_threshold!r}")
    if image_size is None:
        regions = _as_boxes(region_boxes_xyxy, "region_boxes_xyxy", func=func)
    else:
        w, h = _check_image_size(image_size, func=func)
        nb = _as_boxes(region_boxes_xyxy, "region_boxes_xyxy", func=func, columns=(4, 6))
        regions = nb[:, :4] * np.array([w, h, w, h])

    boxed = [(str(k), list(v)) for k, v in gt_boxes.items() if len(v)]
    if not boxed:
        return {}
    if regions.shape[0] == 0:
        return {k: [] for k, _ in boxed}
    gt = _as_boxes([b for _, v in boxed for b in v], "gt_boxes", func=func)  # (G, 4)
    hit = _iou(gt, regions) >= t  # (G, R)
    starts = np.cumsum([0] + [len(v) for _, v in boxed[:-1]])  # first row of each entity
    per_entity = np.logical_or.reduceat(hit, starts, axis=0)  # (E, R)
    return {k: np.flatnonzero(row).tolist() for (k, _), row in zip(boxed, per_entity)}


# --------------------------------------------------------------------------- object groups


@dataclass(frozen=True)
class ObjectGroups:
    """Per-object positions for ISDa, one entry per kept entity.

    ``entity_ids[k]``, ``names[k]`` (text of the entity's first phrase in the
    caption, for plot labels), ``text_positions[k]`` (token positions,
    ``text_offset`` added) and ``image_positions[k]`` (region positions,
    ``image_offset`` added). ``skipped`` maps each visual entity of the
    caption, and each boxed entity of the image, that was left out to the
    reason.
    """

    entity_ids: list[str]
    names: list[str]
    text_positions: list[list[int]]
    image_positions: list[list[int]]
    skipped: dict[str, str]

    def __len__(self) -> int:
        return len(self.entity_ids)

    def masks(self, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Membership masks ``(K, seq_len)`` (bool) for text and image groups."""
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
            raise ValueError(f"ObjectGroups.masks: argument 'seq_len' must be a non-negative int; got {seq_len!r}")
        k = len(self)
        text = np.zeros((k, seq_len), dtype=bool)
        image = np.zeros((k, seq_len), dtype=bool)
        for i, (tp, ip) in enumerate(zip(self.text_positions, self.image_positions)):
            top = max(tp + ip)
            if top >= seq_len:
                raise ValueError(
                    f"ObjectGroups.masks: argument 'seq_len' ({seq_len}) is too short for position {top} "
                    f"of object {self.entity_ids[i]!r}"
                )
            text[i, tp] = True
            image[i, ip] = True
        return text, image


def object_groups(
    sentence: Sentence,
    annotation: Annotation,
    region_boxes: Any,
    tokenize: Tokenizer,
    *,
    iou_threshold: float = 0.5,
    normalized: bool = False,
    input_ids: Sequence[int] | None = None,
    text_offset: int = 0,
    image_offset: int = 0,
) -> ObjectGroups:
    """Objects present in both modalities, with their text and region positions.

    Combines :func:`phrase_token_positions` (caption side) and
    :func:`match_regions` (image side). An object is a visual entity of the
    caption (``notvisual`` phrases are never objects). It is **kept only
    when it has at least one token and at least one matched region**;
    objects missing in either modality are skipped and listed in
    :attr:`ObjectGroups.skipped` with the reason (no box in the image: only
    a scene/nobndbox flag or absent; no region with IoU >= threshold;
    no token; mentioned only in other captions of the image). Kept objects are
    ordered by first mention in the caption, so the result is
    deterministic.

    ``region_boxes``: the ``R`` regions the model sees, ``(R, 4)`` pixel
    ``xyxy``, or with ``normalized=True`` UNITER ``norm_bb`` ``(R, 6)`` /
    normalised ``(R, 4)`` scaled by ``annotation.size``. ``input_ids``: the
    txt_db ids to check the tokenisation against. ``text_offset`` /
    ``image_offset`` are added to token / region positions to index the joint
    sequence; for UNITER's ``[CLS] text [SEP] regions`` without padding use
    ``text_offset=1``, ``image_offset=len(input_ids) + 2``.

    Regions can belong to several objects (overlapping boxes) and an
    object's positions need not be contiguous.
    """
    func = "object_groups"
    if not isinstance(annotation, Annotation):
        raise TypeError(f"{func}: argument 'annotation' must be an Annotation; got {type(annotation).__name__}")
    for name, value in (("text_offset", text_offset), ("image_offset", image_offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{func}: argument {name!r} must be a non-negative int; got {value!r}")
    text_pos = phrase_token_positions(sentence, tokenize, input_ids=input_ids)
    regions = match_regions(
        annotation.boxes, region_boxes, iou_threshold, image_size=annotation.size if normalized else None
    )
    names: dict[str, str] = {}
    for ph in sentence.phrases:
        if ph.is_visual:
            names.setdefault(ph.entity_id, ph.text)

    kept: list[str] = []
    skipped: dict[str, str] = {}
    for eid in names:
        if eid not in text_pos:
            skipped[eid] = "no token in the caption"
        elif eid not in regions:
            flags = [f for f, ids in (("scene", annotation.scene), ("nobndbox", annotation.nobox)) if eid in ids]
            skipped[eid] = "no box in the image (" + ("flagged " + "/".join(flags) if flags else "not annotated") + ")"
        elif not regions[eid]:
            skipped[eid] = f"no region with IoU >= {iou_threshold}"
        else:
            kept.append(eid)
    for eid in annotation.boxes:
        if eid not in names:
            skipped[eid] = "not mentioned in this caption"
    return ObjectGroups(
        entity_ids=kept,
        names=[names[e] for e in kept],
        text_positions=[[p + text_offset for p in text_pos[e]] for e in kept],
        image_positions=[[r + image_offset for r in regions[e]] for e in kept],
        skipped=skipped,
    )
