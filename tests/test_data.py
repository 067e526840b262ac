"""Tests of minillama/data.py: the story generator, splits, statistics and the text loader."""

from __future__ import annotations

import random
import re

import pytest

from minillama.data import (
    END_OF_TEXT,
    Story,
    corpus_stats,
    corpus_text,
    generate_corpus,
    generate_stories,
    generate_story,
    load_text_corpus,
    split_stories,
)


@pytest.fixture(scope="module")
def stories() -> list[Story]:
    return generate_stories(2000, seed=123)


def test_same_seed_same_stories_other_seed_other_stories():
    assert generate_stories(30, seed=1) == generate_stories(30, seed=1)
    assert generate_stories(30, seed=1) != generate_stories(30, seed=2)
    # generate_corpus draws the same sequence: its stories are a prefix of generate_stories
    corpus = generate_corpus(20_000, seed=1)
    assert corpus == generate_stories(len(corpus), seed=1)


def test_generate_corpus_reaches_the_requested_size():
    corpus = generate_corpus(50_000, seed=0)
    size = len(corpus_text(corpus).encode("utf-8"))
    assert 50_000 - 1 <= size < 50_000 + 3000  # overshoot by at most one story
    assert generate_corpus(0) == []
    with pytest.raises(ValueError, match="n_bytes"):
        generate_corpus(-1)
    with pytest.raises(ValueError, match="n must be"):
        generate_stories(-5)


def test_every_attribute_appears_in_its_story(stories):
    for s in stories:
        for key, value in s.attributes().items():
            assert value in s.text, f"{key}={value!r} missing from: {s.text}"
    assert set(stories[0].attributes()) == {"name", "animal", "place", "object", "mood"}


def test_stories_are_well_formed(stories):
    for s in stories:
        t = s.text
        assert "{" not in t and "}" not in t, t  # every slot was filled
        assert "  " not in t and "\n" not in t and t == t.strip()
        assert t.count('"') % 2 == 0, t  # quotes are balanced
        assert t[-1] in '.!?"', t
        # a sentence starts upper case, unless it is a dialogue tag ("Hi?" asked Tom.)
        for first in re.findall(r'(?:^|[.!?] )(\S)', t):
            assert first.isupper() or first.isdigit() or first == '"', t
        assert not re.search(r" [,.!?]", t), t
        assert not re.search(r"\ba [aeiou]", t.lower().replace("a one", "")), t


def test_stories_vary(stories):
    texts = [s.text for s in stories]
    assert len(set(texts)) == len(texts)
    sentences = [x for t in texts for x in re.split(r"(?<=[.!?]) ", t)]
    assert len(set(sentences)) > 0.3 * len(sentences)
    for key in ("name", "animal", "place", "object", "mood"):
        values = {s.attributes()[key] for s in stories}
        assert len(values) >= 8, key


def test_splits_are_disjoint_deterministic_and_near_the_asked_sizes(stories):
    dup = stories[:50]  # duplicates must not leak across splits
    splits = split_stories(stories + dup, val=0.05, test=0.05)
    train, val, test = ({s.text for s in part} for part in (splits.train, splits.val, splits.test))
    assert not (train & val or train & test or val & test)
    assert len(train) + len(val) + len(test) == len(stories)
    # binomial(2000, 0.05): sd 9.7 stories; allow 5 sd
    assert abs(len(val) - 100) < 50 and abs(len(test) - 100) < 50
    assert split_stories(list(reversed(stories))).val == list(reversed(splits.val))
    assert split_stories(["a", "b", "a"], val=0, test=0).train == ["a", "b"]
    with pytest.raises(ValueError, match="val"):
        split_stories(stories, val=0.6, test=0.5)


def test_corpus_stats_by_hand():
    stats = corpus_stats(["The cat sat. The cat ran!", "A dog sat."], top=2)
    assert (stats.stories, stats.words, stats.distinct_words, stats.sentences) == (2, 9, 6, 3)
    assert stats.distinct_openings == 3
    assert stats.bytes == len("The cat sat. The cat ran!") + len("A dog sat.")
    assert stats.top_ngrams[1] == [("the", 2), ("cat", 2)]
    assert stats.top_ngrams[2][0] == ("the cat", 2)
    assert stats.top_ngrams[3][0] == ("the cat sat", 1)


def test_text_corpus_round_trip_by_lines(tmp_path, stories):
    path = tmp_path / "stories.txt"
    path.write_text(corpus_text(stories[:100]), encoding="utf-8")
    assert load_text_corpus(path) == [s.text for s in stories[:100]]


@pytest.mark.parametrize("content, split, expected", [
    ("one\ntwo\n\nthree\n", "line", ["one", "two", "three"]),
    ("Para one\nline two.\n\n\nPara two.\n  \nThree.", "auto",
     ["Para one\nline two.", "Para two.", "Three."]),
    (f"Story one.\nMore.\n{END_OF_TEXT}\nStory two.\n{END_OF_TEXT}\n", "auto",
     ["Story one.\nMore.", "Story two."]),
    ("\ufeffwith BOM\r\nand CRLF\r\n", "auto", ["with BOM", "and CRLF"]),
    ("a\n\nb", "line", ["a", "b"]),
    ("a\nb", "paragraph", ["a\nb"]),
])
def test_load_text_corpus_formats(tmp_path, content, split, expected):
    path = tmp_path / "c.txt"
    path.write_bytes(content.encode("utf-8"))
    assert load_text_corpus(path, split=split) == expected


def test_load_text_corpus_bad_input(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"ok\n\xff\xfe bad")
    with pytest.raises(ValueError, match="not UTF-8.*offset 3"):
        load_text_corpus(path)
    path.write_text(" \n\n \n")
    with pytest.raises(ValueError, match="no stories"):
        load_text_corpus(path)
    with pytest.raises(ValueError, match="split must be"):
        load_text_corpus(path, split="words")
    with pytest.raises(FileNotFoundError):
        load_text_corpus(tmp_path / "missing.txt")


def test_generate_story_uses_only_the_given_rng():
    a, b = random.Random(9), random.Random(9)
    random.seed(0)  # the global generator must not matter
    first = generate_story(a)
    random.seed(1)
    assert generate_story(b) == first
