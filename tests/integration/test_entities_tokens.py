"""WordPiece positions of phrases, with a tiny hand-written vocabulary."""
from __future__ import annotations

import numpy as np
import pytest

from integrations.entities import parse_caption, phrase_token_positions, tokenize_caption

from .builders import VOCAB, bert_tokenizer

# First caption of Sentences/4945942737.txt
CAPTION = (
    "[/EN#221796/people A girl] with [/EN#221804/bodyparts brown hair] sits on "
    "[/EN#221799/scene the edge of a cement area] [/EN#221798/scene overlooking water] ."
)
# A0 girl1 with2 brown3 hair4 sits5 on6 the7 edge8 of9 a10 ce11 ##ment12 area13
# over14 ##look15 ##ing16 water17 .18
EXPECTED_TOKENS = [
    "A", "girl", "with", "brown", "hair", "sits", "on", "the", "edge", "of", "a",
    "ce", "##ment", "area", "over", "##look", "##ing", "water", ".",
]
EXPECTED_POSITIONS = {
    "221796": [0, 1],
    "221804": [3, 4],
    "221799": [7, 8, 9, 10, 11, 12, 13],
    "221798": [14, 15, 16, 17],
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    pytest.importorskip("transformers")
    return bert_tokenizer(tmp_path_factory.mktemp("vocab"))


def test_hf_tokenizer_positions_and_ids(tokenizer):
    s = parse_caption(CAPTION)
    tc = tokenize_caption(s, tokenizer)
    assert list(tc.tokens) == EXPECTED_TOKENS
    assert list(tc.input_ids) == [VOCAB.index(t) for t in EXPECTED_TOKENS]
    assert tc.word_positions[11] == (11, 12)  # "cement" -> ce ##ment
    assert tc.word_positions[13] == (14, 15, 16)  # "overlooking" -> over ##look ##ing

    positions, ids = phrase_token_positions(s, tokenizer, return_input_ids=True)
    assert positions == EXPECTED_POSITIONS
    assert list(positions) == ["221796", "221804", "221799", "221798"]  # order of first mention
    assert ids == [VOCAB.index(t) for t in EXPECTED_TOKENS]
    # the txt_db's input_ids (numpy, as read from LMDB) verify silently
    assert phrase_token_positions(s, tokenizer, input_ids=np.array(ids)) == EXPECTED_POSITIONS


def test_punctuation_splits_and_unknown_words(tokenizer):
    # "dark-haired" -> dark - hair ##ed (no backtracking past "hair"); "sitting" -> sit ##t ##ing ; "waters" -> [UNK]
    s = parse_caption("[/EN#221796/people A dark-haired girl] is sitting on [/EN#221798/scene the waters edge] .")
    tc = tokenize_caption(s, tokenizer)
    assert list(tc.tokens) == [
        "A", "dark", "-", "hair", "##ed", "girl", "is", "sit", "##t", "##ing", "on", "the", "[UNK]", "edge", ".",
    ]
    assert phrase_token_positions(s, tokenizer) == {"221796": [0, 1, 2, 3, 4, 5], "221798": [11, 12, 13]}


def test_mismatching_input_ids_raise_a_clear_error(tokenizer):
    s = parse_caption(CAPTION)
    ids = [VOCAB.index(t) for t in EXPECTED_TOKENS]
    wrong = ids[:11] + [VOCAB.index("[UNK]")] + ids[13:]  # "cement" as one unknown token
    with pytest.raises(ValueError, match=r"first difference at position 11.*'ce' of word 'cement'") as info:
        phrase_token_positions(s, tokenizer, input_ids=wrong)
    assert "input_ids" in str(info.value) and "(18 ids)" in str(info.value) and "(19 ids)" in str(info.value)
    with pytest.raises(ValueError, match="first difference at position 19: input_ids has 23, the caption gives <end>"):
        phrase_token_positions(s, tokenizer, input_ids=ids + [VOCAB.index(".")])
    with pytest.raises(ValueError, match="first difference at position 18"):
        phrase_token_positions(s, tokenizer, input_ids=ids[:-1])


def test_plain_callable_several_mentions_notvisual_and_empty_words():
    pieces = {"boy": ["bo", "##y"], "ball": ["ba", "##ll"], "~": []}
    s = parse_caption("[/EN#5/people A boy] ~ kicks [/EN#6/other the ball] to [/EN#5/people him] and [/EN#0/notvisual it]")
    tokenize = lambda w: pieces.get(w, [w])  # noqa: E731
    tc = tokenize_caption(s, tokenize)
    assert tc.input_ids is None
    assert tc.tokens == ("A", "bo", "##y", "kicks", "the", "ba", "##ll", "to", "him", "and", "it")
    assert tc.word_positions[2] == ()  # "~" gives no token: dropped, like UNITER's bert_tokenize
    # entity 5 is mentioned twice: union of positions; notvisual "it" is no entity
    assert phrase_token_positions(s, tokenize) == {"5": [0, 1, 2, 8], "6": [4, 5, 6]}
    # a phrase whose words give no token is left out
    assert phrase_token_positions(parse_caption("[/EN#3/other ~] ."), tokenize) == {}
    with pytest.raises(TypeError, match="needs a tokenizer with convert_tokens_to_ids"):
        phrase_token_positions(s, tokenize, input_ids=[1, 2, 3])
    with pytest.raises(TypeError, match="needs a tokenizer with convert_tokens_to_ids"):
        phrase_token_positions(s, tokenize, return_input_ids=True)


def test_bad_tokenize_arguments():
    s = parse_caption("[/EN#1/people A man] .")
    with pytest.raises(TypeError, match="argument 'tokenize' must be a Hugging Face tokenizer or a callable"):
        tokenize_caption(s, 42)
    with pytest.raises(TypeError, match="must return a list of str tokens"):
        tokenize_caption(s, lambda w: w)
    with pytest.raises(TypeError, match="argument 'sentence' must be a Sentence"):
        phrase_token_positions("A man .", str.split)
