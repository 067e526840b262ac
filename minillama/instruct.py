"""Instruction-tuning data for lesson 11: requests for a story, the stories that answer them,
prompt templates with a loss mask, and a score for how well an answer follows its request.

    pairs = instruction_pairs(2000, seed=0)           # (instruction, story) for training
    ids, mask = alpaca_ids(tok, pairs[0].instruction, pairs[0].response)   # mask 0 on the prompt
    ids, mask = chat_ids(tok, [("Hi!", "Hello."), ("Write a story about Lily.", None)])
    requests = eval_requests(100, seed=0)             # unseen triples, half in unseen phrasings
    print(score(answers, requests))                   # share naming the name, animal and place

- **Requests.** A request asks for a story about a name, an animal and a place
  ("Tell me a story about Mia and an owl at the beach."), said in one of many phrasings.
  Training uses `TRAIN_PHRASINGS` only; `HELDOUT_PHRASINGS` are kept for evaluation.
- **Held-out triples.** A hash of (name, animal, place) sets aside about 10% of all triples
  (`is_heldout`). Training pairs never use one and eval requests only use them, so a model
  that follows eval requests has learned to follow instructions, not memorised answers.
- **Templates.** The prompt and the answer are tokenized separately, and the prompt's ids
  are the same at training and at inference, so the mask boundary is exact and generation
  starts from exactly the ids the model was trained to continue. BOS and EOS are ids,
  never text. The answer is encoded on its own, so it starts with the dummy-prefix "▁"
  piece (e.g. "▁Once"), as every pretraining story does.
- **Chat (Llama 2's format).** Each turn is `[BOS] + encode("[INST] {user} [/INST]")`, then
  `encode(answer) + [EOS]`; a system prompt goes inside the first [INST] as
  `"<<SYS>>\\n{system}\\n<</SYS>>\\n\\n"`. Meta's code ends each answer with a space before
  EOS; we leave it out (the stories never end with one).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from minillama import story_words as W
from minillama.data import generate_story

HELDOUT_SHARE = 0.1  # share of (name, animal, place) triples kept out of training

# Slots: {name} {animal} {place}, {a_animal} ("a duck", "an owl"), {Place} ("At the beach"),
# and from the name's list {kind} ("girl" / "boy") and {his} ("her" / "his").
TRAIN_PHRASINGS = (
    "Write a story about a {kind} named {name} and {his} {animal}, {place}.",
    "Tell me a story about {name} and {a_animal} {place}.",
    "a story where {name} finds {a_animal} {place}, please",
    "Can you write a short story? It should have {name}, {a_animal}, and it happens {place}.",
    "Write a short story about {name}, who has {a_animal}. It takes place {place}.",
    "Please write a children's story set {place} about {name} and {his} pet {animal}.",
    "Could you tell me a story about {a_animal} and a {kind} called {name} {place}?",
    "story: {name}, {a_animal}, {place}",
    "write a story about {name} and {his} {animal} {place}",
    "I'd like a bedtime story about {name} and {a_animal}. Set it {place}.",
    "Write a story. Main character: {name}. Pet: {a_animal}. Place: {place}.",
    "{Place}, {name} and {his} {animal} have an adventure. Write that story.",
    "Tell a story about {name}'s {animal} {place}.",
    "Make up a story about {a_animal} that belongs to {name}, {place}.",
    "Write me a simple story with {name} and {a_animal}, set {place}.",
    "Can you tell a story where {name} plays with {his} {animal} {place}?",
    "Once upon a time story please: {name}, {a_animal}, {place}.",
    "Write a happy story about a {kind}, {name}, and {his} {animal} {place}.",
    "tell me about {name} and the {animal} {place}",
    "Please write a story for kids. The hero is {name}, {his} pet is {a_animal}, and the story "
    "happens {place}.",
    "Write a story that takes place {place}. It is about {name} and {a_animal}.",
    "I want a story about {a_animal}, {place}, with a {kind} named {name}.",
    "Could you write a short tale about {name} and {his} {animal}? They are {place}.",
    "a short story with {name} and {a_animal} {place}",
    "Write a story for a child about {name}, {a_animal} and a day {place}.",
    "What happened to {name} and {his} {animal} {place}? Tell it as a story.",
    "Write a story in which {a_animal} and {name} spend the day {place}.",
    "Give me a story about {name}. Include {a_animal} and set it {place}.",
)
# Never used for training: other words, other layouts, other registers.
HELDOUT_PHRASINGS = (
    "Compose a brief tale featuring {name} and {a_animal}, set {place}.",
    "yo can u do a story w/ {name} and {a_animal} {place}",
    "Imagine {name} with {his} {animal} {place}. What happens next? Write it as a story.",
    "Setting: {place}. Characters: {name} and {a_animal}. Now write the story.",
    "My kid loves stories about {name}. Could you write one with {a_animal}, {place}?",
    "Story request -> {name} / {animal} / {place}",
    "Narrate a story about {name} and {his} {animal}, which unfolds {place}.",
    "Please, a story! Who: {name} and {a_animal}. Where: {place}.",
    "Do you know a story about {a_animal} and {name} {place}? Tell it to me.",
    "I need a tale for tonight: a {kind} called {name}, {his} {animal}, {place}.",
)


# ---------------------------------------------------------------------------- requests

@dataclass(frozen=True)
class Request:
    """A request for a story about name, animal and place, in one phrasing."""

    name: str
    animal: str
    place: str
    instruction: str  # the rendered request
    phrasing: int  # index into TRAIN_PHRASINGS, or HELDOUT_PHRASINGS if heldout_phrasing
    heldout_phrasing: bool = False


@dataclass(frozen=True)
class Pair:
    """One training example: an instruction and the story that answers it."""

    instruction: str
    response: str  # the story text
    request: Request  # the instruction's name, animal, place and phrasing

    @property
    def name(self) -> str:
        return self.request.name

    @property
    def animal(self) -> str:
        return self.request.animal

    @property
    def place(self) -> str:
        return self.request.place


def _article(noun: str) -> str:
    # The same rule as the story generator's ("an owl", "an alpaca"), so both agree.
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _gender(name: str) -> tuple[str, str]:
    """(kind, possessive) from the name lists; a name on both lists, or neither, is neutral."""
    girl, boy = name in W.GIRLS, name in W.BOYS
    if girl != boy:
        return ("girl", "her") if girl else ("boy", "his")
    return "child", "their"


def render(phrasing: str, name: str, animal: str, place: str) -> str:
    """A phrasing (one of TRAIN_PHRASINGS or HELDOUT_PHRASINGS) filled with one triple."""
    kind, his = _gender(name)
    return phrasing.format(name=name, animal=animal, place=place, a_animal=_article(animal),
                           Place=place[:1].upper() + place[1:], kind=kind, his=his)


def make_request(name: str, animal: str, place: str, phrasing: int,
                 heldout_phrasing: bool = False) -> Request:
    """The Request for a triple in phrasing number `phrasing` of the train or held-out list."""
    for what, value in (("name", name), ("animal", animal), ("place", place)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    phrasings = HELDOUT_PHRASINGS if heldout_phrasing else TRAIN_PHRASINGS
    if not (isinstance(phrasing, int) and 0 <= phrasing < len(phrasings)):
        which = "HELDOUT_PHRASINGS" if heldout_phrasing else "TRAIN_PHRASINGS"
        raise ValueError(f"phrasing must be an index into {which}, 0..{len(phrasings) - 1}; "
                         f"got {phrasing!r}")
    return Request(name, animal, place, render(phrasings[phrasing], name, animal, place),
                   phrasing, heldout_phrasing)


def is_heldout(name: str, animal: str, place: str) -> bool:
    """Whether the triple is kept out of training: a fixed hash of it falls below HELDOUT_SHARE."""
    key = f"{name}\t{animal}\t{place}".encode()
    u = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") / 2**64  # in [0, 1)
    return u < HELDOUT_SHARE


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")


def instruction_pairs(n: int, seed: int = 0) -> list[Pair]:
    """n (instruction, story) pairs: the generator's stories from seed, skipping held-out
    triples, each asked for in a random TRAIN phrasing of its own name, animal and place."""
    _check_n(n)
    # Two streams: the stories are exactly generate_stories(seed)'s, minus the held-out ones.
    stories, phrasings = random.Random(seed), random.Random(f"instruct-phrasing-{seed}")
    pairs: list[Pair] = []
    while len(pairs) < n:
        s = generate_story(stories)
        if is_heldout(s.name, s.animal, s.place):
            continue
        req = make_request(s.name, s.animal, s.place, phrasings.randrange(len(TRAIN_PHRASINGS)))
        pairs.append(Pair(req.instruction, s.text, req))
    return pairs


def eval_requests(n: int, seed: int = 0, heldout_phrasings: float = 0.5) -> list[Request]:
    """n requests for held-out triples (name, animal and place drawn uniformly); a share
    round(n * heldout_phrasings) of them in HELDOUT_PHRASINGS, the rest in TRAIN_PHRASINGS."""
    _check_n(n)
    if not 0 <= heldout_phrasings <= 1:
        raise ValueError(f"heldout_phrasings is a share in [0, 1], got {heldout_phrasings!r}")
    rng = random.Random(seed)
    names, animals, places = sorted(set(W.GIRLS) | set(W.BOYS)), sorted(W.ANIMALS), sorted(W.PLACES)
    unseen = set(rng.sample(range(n), round(n * heldout_phrasings)))
    out = []
    for i in range(n):
        while True:  # rejection: about one draw in ten is held out
            triple = rng.choice(names), rng.choice(animals), rng.choice(places)
            if is_heldout(*triple):
                break
        phrasings = HELDOUT_PHRASINGS if i in unseen else TRAIN_PHRASINGS
        out.append(make_request(*triple, rng.randrange(len(phrasings)), i in unseen))
    return out


# ---------------------------------------------------------------------------- templates

class Tokens(NamedTuple):
    """Token ids and a loss mask of the same length: 1 where the loss counts (the answer)."""

    ids: list[int]
    mask: list[int]


ALPACA_PROMPT = ("Below is an instruction that describes a task. Write a response that "
                 "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                 "### Response:\n")
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
TEMPLATES = ("alpaca", "chat")


def _specials(tok) -> tuple[int, int]:
    if tok.bos_id < 0 or tok.eos_id < 0:
        raise ValueError("the templates need a tokenizer with BOS and EOS pieces; this one has "
                         f"bos_id={tok.bos_id}, eos_id={tok.eos_id}")
    return tok.bos_id, tok.eos_id


def _text(what: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


def alpaca_ids(tok, instruction: str, response: str | None = None) -> Tokens:
    """[BOS] + prompt (mask 0) + response + [EOS] (mask 1); without a response, only
    [BOS] + prompt: the ids to generate from."""
    bos, eos = _specials(tok)
    ids = [bos] + tok.encode(ALPACA_PROMPT.format(instruction=_text("instruction", instruction)))
    mask = [0] * len(ids)
    if response is not None:
        answer = tok.encode(_text("response (or None for a prompt)", response)) + [eos]
        ids, mask = ids + answer, mask + [1] * len(answer)
    return Tokens(ids, mask)


def _chat_parts(turns, system: str | None) -> list[tuple[str, str | None]]:
    """[(prompt text, answer text or None)], one per turn, after checking the turns."""
    if isinstance(turns, str) or not isinstance(turns, Sequence) or not turns:
        raise ValueError(f"turns must be a non-empty list of (user, assistant) pairs, got {turns!r}")
    if system is not None:
        system = _text("system (or None for no system prompt)", system)
    parts = []
    for k, turn in enumerate(turns):
        if isinstance(turn, str) or not isinstance(turn, Sequence) or len(turn) != 2:
            raise ValueError(f"turn {k} must be a (user, assistant) pair, got {turn!r}")
        user, answer = turn
        user = _text(f"turn {k}'s user message", user)
        if answer is None and k != len(turns) - 1:
            raise ValueError(f"turn {k}'s assistant is None, but only the last turn may leave "
                             f"it out (to generate it); {len(turns)} turns were given")
        if answer is not None:
            answer = _text(f"turn {k}'s assistant message (or None in the last turn)", answer)
        if k == 0 and system is not None:
            user = B_SYS + system + E_SYS + user  # Meta's: the system prompt opens the first [INST]
        parts.append((f"{B_INST} {user} {E_INST}", answer))
    return parts


def chat_ids(tok, turns: Sequence[tuple[str, str | None]], system: str | None = None) -> Tokens:
    """Llama 2 chat ids of turns [(user, assistant)], mask 1 exactly on the assistant tokens
    and their EOS. A last assistant of None ends the ids after " [/INST]", ready to generate."""
    bos, eos = _specials(tok)
    ids: list[int] = []
    mask: list[int] = []
    for prompt, answer in _chat_parts(turns, system):
        p = [bos] + tok.encode(prompt)
        ids, mask = ids + p, mask + [0] * len(p)
        if answer is not None:
            a = tok.encode(answer) + [eos]
            ids, mask = ids + a, mask + [1] * len(a)
    return Tokens(ids, mask)


def render_chat_text(turns: Sequence[tuple[str, str | None]], system: str | None = None) -> str:
    """For display only: the chat as text, "<s>"/"</s>" where chat_ids puts the BOS/EOS ids
    and a space for the answer's dummy-prefix "▁". Never encode this string: tokenizing
    "<s>" as text gives other ids than BOS."""
    return "".join(f"<s>{prompt}" + ("" if answer is None else f" {answer}</s>")
                   for prompt, answer in _chat_parts(turns, system))


def template_ids(tok, instruction: str, response: str | None = None, template: str = "alpaca",
                 system: str | None = None) -> Tokens:
    """One instruction (and its response, if any) in template "alpaca" or "chat"."""
    if template == "alpaca":
        if system is not None:
            raise ValueError("the alpaca template has no system prompt; pass system=None, "
                             "or use template='chat'")
        return alpaca_ids(tok, instruction, response)
    if template == "chat":
        return chat_ids(tok, [(instruction, response)], system)
    raise ValueError(f"unknown template {template!r}; expected one of {', '.join(TEMPLATES)}")


# ---------------------------------------------------------------------------- score

class Follows(NamedTuple):
    """Which of a request's attributes a text mentions."""

    name: bool  # the name as a whole word, case-sensitive ("Joy" is not "joy")
    animal: bool  # the animal as a whole word or phrase, any case ("bear  cub" counts)
    place: bool  # the place phrase anywhere, any case, runs of whitespace as one space
    all: bool


def follows(text: str, request) -> Follows:
    """Whether text mentions request's name, animal and place (request: a Request, Pair,
    Story or anything with those three attributes)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    name = re.search(rf"\b{re.escape(request.name)}\b", text) is not None
    animal_re = r"\s+".join(map(re.escape, request.animal.split()))
    animal = re.search(rf"\b{animal_re}\b", text, re.IGNORECASE) is not None
    place = " ".join(request.place.split()).lower() in " ".join(text.split()).lower()
    return Follows(name, animal, place, name and animal and place)


def follow_rates(texts: Iterable[str], requests: Iterable) -> dict[str, float]:
    """The share of texts that mention each attribute of their request, and all three."""
    texts, requests = list(texts), list(requests)
    if len(texts) != len(requests) or not texts:
        raise ValueError(f"need one text per request and at least one of each; got "
                         f"{len(texts)} texts and {len(requests)} requests")
    hits = [follows(t, r) for t, r in zip(texts, requests)]
    return {k: sum(getattr(h, k) for h in hits) / len(hits) for k in Follows._fields}


def score(texts: Iterable[str], requests: Iterable) -> float:
    """The share of texts that mention all three of their request's name, animal and place."""
    return follow_rates(texts, requests)["all"]
