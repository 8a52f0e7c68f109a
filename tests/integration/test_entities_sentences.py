"""Sentences/*.txt: the two real files, every construct, and bad input."""
from __future__ import annotations

import doctest

import pytest

from integrations import entities
from integrations.entities import (
    FlickrEntitiesError,
    Phrase,
    parse_caption,
    parse_sentences,
)

from .builders import SHARED_DATA, write

SENTENCES = SHARED_DATA / "Sentences"
needs_shared = pytest.mark.skipif(
    not SENTENCES.is_dir(), reason=f"shared Flickr30k Entities sample not found at {SENTENCES.resolve()}"
)

# What a person reads in the files: (first word index, phrase, entity id, types)
# per caption, in caption order. Written by hand from the raw lines.
EXPECTED_4945942737 = [
    (
        "A girl with brown hair sits on the edge of a cement area overlooking water .",
        [
            (0, "A girl", "221796", ["people"]),
            (3, "brown hair", "221804", ["bodyparts"]),
            (7, "the edge of a cement area", "221799", ["scene"]),
            (13, "overlooking water", "221798", ["scene"]),
        ],
    ),
    (
        "A woman in black , seen from behind , sits next to a body of water .",
        [
            (0, "A woman", "221796", ["people"]),
            (3, "black", "221797", ["clothing"]),
            (7, "behind", "221800", ["other"]),
            (12, "a body of water", "221798", ["scene"]),
        ],
    ),
    (
        "A girl sitting outside on concrete near water in a black dress .",
        [
            (0, "A girl", "221796", ["people"]),
            (5, "concrete", "221799", ["other"]),
            (7, "water", "221798", ["scene"]),
            (9, "a black dress", "221797", ["clothing"]),
        ],
    ),
    (
        "A small girl sits on a ledge by the water contemplating life .",
        [
            (0, "A small girl", "221796", ["people"]),
            (5, "a ledge", "221799", ["other"]),
            (8, "the water", "221798", ["scene"]),
            (11, "life", "221802", ["other"]),
        ],
    ),
    (
        "A dark-haired girl is sitting on the waters edge .",
        [
            (0, "A dark-haired girl", "221796", ["people"]),
            (6, "the waters edge", "221798", ["scene"]),
        ],
    ),
]

EXPECTED_6338542128 = [
    (
        "On a sunny , dry day , wearing full football gear , a Texas A&M football player tries to reach "
        "an Iowa State football player , for the football during the game .",
        [
            (1, "a sunny , dry day", "253080", ["scene"]),
            (8, "full football gear", "253081", ["other"]),
            (12, "a Texas A&M football player", "253069", ["people"]),
            (20, "an Iowa State football player", "253070", ["people"]),
            (27, "the football", "253072", ["other"]),
            (30, "the game", "253078", ["other"]),
        ],
    ),
    (
        "An offensive player running with a football while a football player tries to stop him during "
        "a football game .",
        [
            (0, "An offensive player", "253070", ["people"]),
            (5, "a football", "253077", ["other"]),
            (8, "a football player", "253069", ["people"]),
            (14, "him", "0", ["notvisual"]),
            (16, "a football game", "253071", ["other"]),
        ],
    ),
    (
        "A football player from Iowa State blocks a player from Texas A&M from taking the football from him .",
        [
            (0, "A football player", "253069", ["people"]),
            (4, "Iowa State blocks", "253074", ["scene"]),
            (7, "a player", "253069", ["people"]),
            (10, "Texas A&M", "253075", ["other"]),
            (14, "the football", "253072", ["other"]),
            (17, "him", "0", ["notvisual"]),
        ],
    ),
    (
        "The Iowa State football player blocks a Texas A&M defenseman while running with the ball .",
        [
            (0, "The Iowa State football player blocks", "253070", ["scene"]),
            (6, "a Texas A&M defenseman", "253068", ["people"]),
            (13, "the ball", "253072", ["other"]),
        ],
    ),
    (
        "# 8 for Iowa State stiff arms a Texas AM player attempting to tackle him .",
        [
            (0, "# 8", "253073", ["other"]),
            (3, "Iowa State stiff arms", "253083", ["bodyparts"]),
            (7, "a Texas AM player", "253069", ["people"]),
            (14, "him", "0", ["notvisual"]),
        ],
    ),
]


def _as_plain(sentences):
    return [
        (s.text, [(p.first_word_index, p.text, p.entity_id, list(p.types)) for p in s.phrases]) for s in sentences
    ]


@needs_shared
@pytest.mark.parametrize(
    "image_id, expected",
    [("4945942737", EXPECTED_4945942737), ("6338542128", EXPECTED_6338542128)],
)
def test_real_files_parse_into_what_a_person_reads(image_id, expected):
    sentences = parse_sentences(SENTENCES / f"{image_id}.txt")
    assert _as_plain(sentences) == expected
    assert [s.line for s in sentences] == [1, 2, 3, 4, 5]
    for s in sentences:
        assert s.words == tuple(s.text.split())
        for p in s.phrases:  # each phrase points at its own words of the caption
            assert s.words[p.first_word_index : p.first_word_index + len(p.words)] == p.words


@needs_shared
def test_real_file_entity_ids_and_notvisual():
    sentences = parse_sentences(SENTENCES / "6338542128.txt")
    # "a Texas A&M football player" and "a player" are one chain, mentioned twice in caption 3
    assert sentences[2].entity_ids == ["253069", "253074", "253075", "253072"]
    notvisual = [p for s in sentences for p in s.phrases if not p.is_visual]
    assert [(p.text, p.types) for p in notvisual] == [("him", ("notvisual",))] * 3
    assert all(p.entity_id == "0" for p in notvisual)
    assert "0" not in {e for s in sentences for e in s.entity_ids}


def test_multi_type_phrase_and_punctuation():
    s = parse_caption("[/EN#123/people/other Two men] , [/EN#7/clothing/bodyparts/other hats] and [/EN#0/notvisual it] !")
    assert s.words == ("Two", "men", ",", "hats", "and", "it", "!")
    assert s.phrases == (
        Phrase(0, ("Two", "men"), "123", ("people", "other")),
        Phrase(3, ("hats",), "7", ("clothing", "bodyparts", "other")),
        Phrase(5, ("it",), "0", ("notvisual",)),
    )
    assert s.entity_ids == ["123", "7"]


def test_phrase_with_punctuation_and_symbols_inside():
    s = parse_caption("[/EN#1/other # 8 , the A&M player] waves .")
    assert s.phrases[0].words == ("#", "8", ",", "the", "A&M", "player")
    assert s.text == "# 8 , the A&M player waves ."


def test_closing_bracket_written_apart_and_extra_spaces():
    s = parse_caption("  [/EN#4/animals a   dog ]  runs\t. ")
    assert s.phrases == (Phrase(0, ("a", "dog"), "4", ("animals",)),)
    assert s.text == "a dog runs ."


def test_blank_lines_are_skipped_and_lines_kept(tmp_path):
    f = write(tmp_path / "1.txt", "[/EN#1/people A man] .\n\n[/EN#2/animals A dog] barks .\n")
    sentences = parse_sentences(f)
    assert [s.line for s in sentences] == [1, 3]
    assert sentences[1].phrases[0].entity_id == "2"


def test_windows_line_endings_and_byte_order_mark(tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes("\ufeff[/EN#1/people A man] .\r\n[/EN#2/animals A dog] .\r\n".encode("utf-8"))
    assert [(s.line, s.text, s.phrases[0].entity_id) for s in parse_sentences(f)] == [
        (1, "A man .", "1"),
        (2, "A dog .", "2"),
    ]


def test_allowed_types_can_be_relaxed():
    with pytest.raises(ValueError, match="unknown phrase type 'robots'"):
        parse_caption("[/EN#1/robots A robot] .")
    s = parse_caption("[/EN#1/robots A robot] .", allowed_types=None)
    assert s.phrases[0].types == ("robots",)


@pytest.mark.parametrize(
    "line, message",
    [
        ("[/EN#1/people A man .", "never closed"),
        ("[/EN#1/people A [/EN#2/people man] ]", "nested phrase"),
        ("A man] walks .", "stray ']'"),
        ("[/EN#1/people] walks .", "empty phrase"),
        ("[/EN#1/people ] walks .", "empty phrase"),
        ("[/EN#x/people A man] .", "malformed entity id"),
        ("[/EN#1 A man] .", "empty or missing type"),
        ("[/EN#1//people A man] .", "empty or missing type"),
        ("[EN#1/people A man] .", "malformed phrase tag"),
        ("[/EN#1/peeple A man] .", "unknown phrase type 'peeple'"),
        ("[/EN#1/people A m]an] .", "stray ']'"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    f = write(tmp_path / "bad.txt", "[/EN#9/people A woman] sits .\n" + line + "\n")
    with pytest.raises(FlickrEntitiesError, match=message) as info:
        parse_sentences(f)
    assert isinstance(info.value, ValueError)
    assert f"{f}, line 2" in str(info.value)
    assert info.value.path == str(f) and info.value.line == 2


def test_missing_and_empty_files(tmp_path):
    missing = tmp_path / "Sentences" / "404.txt"
    with pytest.raises(ValueError, match="does not exist") as info:
        parse_sentences(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ValueError, match="is a directory"):
        parse_sentences(tmp_path)
    with pytest.raises(ValueError, match="no captions"):
        parse_sentences(write(tmp_path / "empty.txt", "\n \n"))
    with pytest.raises(ValueError, match="not valid UTF-8"):
        (tmp_path / "latin1.txt").write_bytes("[/EN#1/people A caf\xe9 owner] .".encode("latin-1"))
        parse_sentences(tmp_path / "latin1.txt")


def test_module_doctests():
    result = doctest.testmod(entities, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
