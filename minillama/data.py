"""The story corpus: a seeded generator of simple children's stories, splits, statistics,
and a loader for plain-text corpora such as TinyStories.

Every story follows a small plot (who, a pet, a place, a wanted object, a problem, a helper,
a resolution, a closing feeling), and each beat is said in one of several sentence patterns
(`minillama.story_words`). The generator records each story's attributes, so later lessons
can ask for "a story about Lily, a duck and a kite" and check the answer.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from minillama import story_words as W


@dataclass(frozen=True)
class Story:
    """One generated story and the attributes it was built from (all appear in the text)."""

    text: str
    name: str    # the main character, e.g. "Lily"
    animal: str  # the pet, e.g. "duck"
    place: str   # a place phrase, e.g. "in the park"
    object: str  # the object the plot turns on, e.g. "kite"
    mood: str    # the closing feeling, e.g. "proud"

    def attributes(self) -> dict[str, str]:
        """The attributes as a dict (everything but the text)."""
        d = asdict(self)
        del d["text"]
        return d


def _pronouns(girl: bool) -> dict[str, str]:
    p = ("she", "her", "her", "herself") if girl else ("he", "his", "him", "himself")
    return {"he": p[0], "his": p[1], "him": p[2], "himself": p[3],
            "He": p[0].capitalize(), "His": p[1].capitalize()}


def _plural(noun: str) -> str:
    if noun in W.PLURALS:
        return W.PLURALS[noun]
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _helper(rng: random.Random, slots: dict) -> tuple[str, str, str, set]:
    """Pick a helper: (first mention, short name, possessive, kinds of help it can give)."""
    roll = rng.random()
    if roll < 0.2:
        grown = slots["grown"]
        return f"{slots['his']} {grown}", f"{slots['his']} {grown}", W.GROWNUPS[grown], \
            {"person", "climber", "strong", "swimmer", "any"}
    if roll < 0.4:
        friend = rng.choice([n for n in W.GIRLS + W.BOYS if n != slots["name"]])
        kind = "girl" if friend in W.GIRLS else "boy"
        return f"{friend}, a {rng.choice(W.TRAITS)} {kind} from next door,", friend, \
            "her" if kind == "girl" else "his", {"person", "climber", "any"}
    first = rng.choice(sorted(W.HELPERS))
    short, poss, kinds = W.HELPERS[first]
    return first, short, poss, kinds


_A_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def _fill(template: str, slots: dict) -> str:
    s = _A_VOWEL.sub(r"\1n ", template.format(**slots))  # "a orange" -> "an orange"
    return s[0].upper() + s[1:]


def _draw(rng: random.Random) -> dict:
    """Draw every choice of one story: the slots its patterns use, and its plot's problem."""
    girl = rng.random() < 0.5
    name = rng.choice(W.GIRLS if girl else W.BOYS)
    animal = rng.choice(sorted(W.ANIMALS))
    place = rng.choice(sorted(W.PLACES))
    obj = rng.choice(sorted(W.OBJECTS))
    mood = rng.choice(sorted(W.ENDINGS))
    sights = rng.sample(W.PLACES[place], 2)
    slots = dict(_pronouns(girl), name=name, kind="girl" if girl else "boy", animal=animal,
                 pet=rng.choice(W.PET_NAMES), place=place, obj=obj, use=W.OBJECTS[obj],
                 mood=mood, opening=rng.choice(W.OPENINGS), age=rng.choice(W.AGES),
                 trait=rng.choice(W.TRAITS), home=rng.choice(W.HOMES),
                 animal_adj=rng.choice(W.ANIMAL_ADJS), sound=W.ANIMALS[animal][0],
                 move=W.ANIMALS[animal][1],
                 color=rng.choice(W.COLORS), sight=sights[0], sight2=sights[1],
                 grown=rng.choice(sorted(W.GROWNUPS)), bad=rng.choice(W.BAD_FEELINGS),
                 thief=rng.choice(W.THIEVES), hobby=rng.choice(W.HOBBIES),
                 age_n=rng.randint(3, 9), hour=rng.randint(1, 12), food=rng.choice(W.FOODS),
                 n=rng.randint(2, 12),
                 animals=_plural(rng.choice(sorted(W.ANIMALS))), hair=rng.choice(W.HAIR),
                 clothes=rng.choice(W.CLOTHES), said=rng.choice(W.SAID),
                 adverb=rng.choice(W.ADVERBS), town_adj=rng.choice(W.TOWN_ADJS),
                 town=rng.choice(W.TOWN_HEADS) + rng.choice(W.TOWN_TAILS))
    first, short, poss, kinds = _helper(rng, slots)
    slots.update(helper=first, helper_short=short, Helper=short, helper_his=poss)
    problem = rng.choice(W.PROBLEMS)
    fixes = [f for kind, fs in problem["fix"].items() if kind in kinds for f in fs]
    return dict(slots, _problem=problem["what"], _fixes=fixes)


def _plot(rng: random.Random, slots: dict) -> list[str]:
    """The story's patterns, beat by beat: opening, want, problem, helper, resolution."""
    def maybe(p: float, patterns: list[str]) -> list[str]:
        return [rng.choice(patterns)] if rng.random() < p else []

    beats = [rng.choice(W.INTRO)] + maybe(0.4, W.TOWN) + maybe(0.3, W.LOOKS) + maybe(0.4, W.HOBBY)
    beats.append(rng.choice(W.PET))
    if "{place}" not in beats[0]:
        beats.append(rng.choice(W.SCENE))
    beats += maybe(0.3, W.DAYS) + maybe(0.5, W.WEATHER) + maybe(0.5, W.SEE)
    beats += maybe(0.5, W.COUNT) + maybe(0.3, W.PLAY) + maybe(0.3, W.FOOD) + maybe(0.4, W.CHAT)
    beats.append(rng.choice(W.WANT))
    beats += [rng.choice(W.WANT_SAY)] if rng.random() < 0.6 else []
    beats.append(rng.choice(slots["_problem"]))
    beats += rng.sample(W.FEEL_BAD, rng.randint(1, 2)) + [rng.choice(W.SAY_BAD)]
    beats += [rng.choice(W.HELPER_COMES), rng.choice(W.HELPER_ASKS)]
    beats.append(rng.choice(W.TOLD))
    mood = slots["mood"]
    if mood == "sad":  # the object stays lost; the story ends on the new friendship
        beats.append(rng.choice(W.SAD_FIX))
        beats += [rng.choice(W.ENDINGS[mood]), rng.choice(W.LOST_LESSONS)]
    else:
        beats += [rng.choice(slots["_fixes"]), rng.choice(W.THANKS), rng.choice(W.ENDINGS[mood])]
        beats += rng.sample(W.LESSONS, rng.randint(1, 2))
    return beats


def generate_story(rng: random.Random) -> Story:
    """Generate one story from rng (a `random.Random`), with its attributes."""
    slots = _draw(rng)
    text = " ".join(_fill(b, slots) for b in _plot(rng, slots))
    name, place = slots["name"], slots["place"]
    if place not in text:  # some openings leave the place out; then the pet goes there
        text += f" The next day, {name} and {slots['pet']} went back to play {place}."
    return Story(text=text, name=name, animal=slots["animal"], place=place,
                 object=slots["obj"], mood=slots["mood"])


def generate_stories(n: int, seed: int = 0) -> list[Story]:
    """n stories from one seed; the same seed always gives the same stories."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    return [generate_story(rng) for _ in range(n)]


def generate_corpus(n_bytes: int, seed: int = 0) -> list[Story]:
    """Stories from one seed until their text reaches n_bytes of UTF-8 (e.g. 5_000_000)."""
    if n_bytes < 0:
        raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
    rng, stories, total = random.Random(seed), [], 0
    while total < n_bytes:
        stories.append(generate_story(rng))
        total += len(stories[-1].text.encode("utf-8")) + 1  # +1 for the newline between them
    return stories


def corpus_text(stories: Iterable[Story | str]) -> str:
    """One story per line, the plain-text format that `load_text_corpus` reads back."""
    return "\n".join(s.text if isinstance(s, Story) else s for s in stories)


# ---------------------------------------------------------------------------- splits

@dataclass(frozen=True)
class Splits:
    """Train, validation and test stories: no text is in two of them."""

    train: list
    val: list
    test: list


def split_stories(stories: Iterable[Story | str], val: float = 0.05, test: float = 0.05) -> Splits:
    """Split stories by a hash of their text, so a story (or its duplicate) is in one split only."""
    if not (0 <= val and 0 <= test and val + test < 1):
        raise ValueError(f"val={val} and test={test} must be >= 0 with val + test < 1")
    out: tuple[list, list, list] = ([], [], [])
    seen: set[str] = set()
    for s in stories:
        text = s.text if isinstance(s, Story) else s
        if text in seen:
            continue  # a duplicate would leak between splits: keep the first copy only
        seen.add(text)
        h = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
        u = int.from_bytes(h, "little") / 2**64  # uniform in [0, 1), fixed for this text
        out[0 if u >= val + test else 1 if u < val else 2].append(s)
    return Splits(*out)


# ---------------------------------------------------------------------------- statistics

_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE = re.compile(r"[^.!?]+[.!?]+\"?")


@dataclass(frozen=True)
class CorpusStats:
    """What makes a corpus's variety visible."""

    stories: int
    bytes: int
    words: int
    distinct_words: int
    sentences: int
    distinct_openings: int  # distinct first three words of a sentence
    top_ngrams: dict[int, list[tuple[str, int]]]  # n -> [(ngram, count)] most frequent first


def corpus_stats(stories: Iterable[Story | str], ngram_sizes: tuple[int, ...] = (1, 2, 3),
                 top: int = 10) -> CorpusStats:
    """Count stories, words, distinct words, sentence openings and the top n-grams."""
    texts = [s.text if isinstance(s, Story) else s for s in stories]
    n_words, n_sent, n_bytes = 0, 0, 0
    vocab: Counter = Counter()
    openings: set[tuple[str, ...]] = set()
    grams: dict[int, Counter] = {n: Counter() for n in ngram_sizes}
    for text in texts:
        n_bytes += len(text.encode("utf-8"))
        words = [w.lower() for w in _WORD.findall(text)]
        n_words += len(words)
        vocab.update(words)
        for n in ngram_sizes:
            grams[n].update(zip(*(words[i:] for i in range(n))))
        for sentence in _SENTENCE.findall(text):
            n_sent += 1
            openings.add(tuple(w.lower() for w in _WORD.findall(sentence)[:3]))
    top_ngrams = {n: [(" ".join(g), c) for g, c in grams[n].most_common(top)] for n in ngram_sizes}
    return CorpusStats(len(texts), n_bytes, n_words, len(vocab), n_sent, len(openings), top_ngrams)


# ---------------------------------------------------------------------------- plain text

END_OF_TEXT = "<|endoftext|>"  # the separator TinyStories' text files use


def load_text_corpus(path: str | Path, split: str = "auto") -> list[str]:
    """Read stories from a UTF-8 text file: split="line", "paragraph", "endoftext" or "auto".

    "auto" picks endoftext if the file contains "<|endoftext|>", else paragraph if it has
    blank lines, else line. Stories are stripped and empty ones dropped.
    """
    if split not in ("auto", "line", "paragraph", "endoftext"):
        raise ValueError(f"split must be 'auto', 'line', 'paragraph' or 'endoftext', got {split!r}")
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (bad byte at offset {e.start}); "
                         "convert the file to UTF-8 first") from None
    text = text.replace("\r\n", "\n")
    if split == "auto":
        split = ("endoftext" if END_OF_TEXT in text else
                 "paragraph" if re.search(r"\n[ \t]*\n", text) else "line")
    if split == "endoftext":
        parts = text.split(END_OF_TEXT)
    elif split == "paragraph":
        parts = re.split(r"\n[ \t]*\n", text)
    else:
        parts = text.split("\n")
    stories = [p.strip() for p in parts if p.strip()]
    if not stories:
        raise ValueError(f"{path}: no stories found (the file is empty or only whitespace)")
    return stories
