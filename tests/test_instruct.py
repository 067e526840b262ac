"""Tests of minillama/instruct.py: requests and phrasings, held-out triples, training pairs,
the Alpaca and Llama 2 chat templates (ids and loss masks built by hand from the shipped
tokenizer), and the follows / score checks on hand-written examples."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import itertools
import re
import string

import pytest

from minillama import story_words as W
from minillama.data import generate_stories
from minillama.instruct import (
    ALPACA_PROMPT,
    HELDOUT_PHRASINGS,
    TRAIN_PHRASINGS,
    Follows,
    alpaca_ids,
    chat_ids,
    eval_requests,
    follow_rates,
    follows,
    instruction_pairs,
    is_heldout,
    make_request,
    render,
    render_chat_text,
    score,
    template_ids,
)
from minillama.pretrained import COURSE_MODEL, load_tokenizer

NAMES = sorted(set(W.GIRLS) | set(W.BOYS))
SLOTS = {"name", "animal", "a_animal", "place", "Place", "kind", "his"}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(COURSE_MODEL)


@pytest.fixture(scope="module")
def pairs():
    return instruction_pairs(300, seed=5)


def triple(x) -> tuple[str, str, str]:
    return x.name, x.animal, x.place


# ---------------------------------------------------------------------------- held-out triples

def test_about_a_tenth_of_all_triples_is_held_out_and_every_word_has_both_kinds():
    held = [t for t in itertools.product(NAMES, sorted(W.ANIMALS), sorted(W.PLACES)) if is_heldout(*t)]
    total = len(NAMES) * len(W.ANIMALS) * len(W.PLACES)
    assert 0.05 < len(held) / total < 0.15
    # the rule holds out triples, not whole names, animals or places
    for k, vocab in enumerate((NAMES, W.ANIMALS, W.PLACES)):
        assert {t[k] for t in held} == set(vocab)


def test_no_training_pair_is_held_out_and_every_eval_request_is(pairs):
    assert not any(is_heldout(*triple(p)) for p in pairs)
    requests = eval_requests(200, seed=3)
    assert all(is_heldout(*triple(r)) for r in requests)
    assert len({r.name for r in requests}) > 100  # names drawn from all 400-odd, not a few
    assert not {triple(p) for p in pairs} & {triple(r) for r in requests}


# ---------------------------------------------------------------------------- phrasings

def test_phrasings_are_many_distinct_and_disjoint():
    assert len(TRAIN_PHRASINGS) >= 24 and len(HELDOUT_PHRASINGS) >= 8
    assert len(set(TRAIN_PHRASINGS)) == len(TRAIN_PHRASINGS)
    assert len(set(HELDOUT_PHRASINGS)) == len(HELDOUT_PHRASINGS)
    assert not set(TRAIN_PHRASINGS) & set(HELDOUT_PHRASINGS)
    for phrasings in (TRAIN_PHRASINGS, HELDOUT_PHRASINGS):  # several styles in each list
        assert any(p.endswith("?") for p in phrasings)
        assert any(p[0].islower() and p[-1] not in ".?!" for p in phrasings)
        assert any("{his}" in p for p in phrasings)


@pytest.mark.parametrize("phrasing", TRAIN_PHRASINGS + HELDOUT_PHRASINGS)
def test_every_phrasing_names_all_three_with_the_right_article_and_pronoun(phrasing):
    fields = {f for _, f, _, _ in string.Formatter().parse(phrasing) if f is not None}
    assert fields <= SLOTS and "name" in fields
    assert fields & {"animal", "a_animal"} and fields & {"place", "Place"}
    for name, animal, place in [("Lily", "owl", "at the beach"), ("Tom", "bear cub", "in the park"),
                                ("Mia", "alpaca", "by the river"), ("Ben", "duck", "at school")]:
        text = render(phrasing, name, animal, place)
        assert "{" not in text and follows(text, make_request(name, animal, place, 0)).all, text
        assert not re.search(r"\ban (duck|bear)\b|\ba (owl|alpaca)\b", text), text
        wrong = r"\b(his|boy)\b" if name in ("Lily", "Mia") else r"\b(her|girl)\b"
        assert not re.search(wrong, text), text


def test_render_by_hand():
    assert render(TRAIN_PHRASINGS[0], "Lily", "owl", "at the beach") == \
        "Write a story about a girl named Lily and her owl, at the beach."
    assert render(TRAIN_PHRASINGS[0], "Tom", "duck", "in the park") == \
        "Write a story about a boy named Tom and his duck, in the park."
    assert render(TRAIN_PHRASINGS[1], "Tom", "alpaca", "in the park") == \
        "Tell me a story about Tom and an alpaca in the park."
    # a name on neither list gets neutral words
    assert render(TRAIN_PHRASINGS[0], "Zed", "duck", "in the park") == \
        "Write a story about a child named Zed and their duck, in the park."
    r = make_request("Mia", "owl", "by the river", 2, heldout_phrasing=True)
    assert r.instruction == HELDOUT_PHRASINGS[2].format(name="Mia", his="her", animal="owl",
                                                        place="by the river")


# ---------------------------------------------------------------------------- pairs and requests

def test_pairs_are_the_generators_stories_minus_the_held_out_ones(pairs):
    stories = [s for s in generate_stories(600, seed=5) if not is_heldout(s.name, s.animal, s.place)]
    assert len(stories) >= 300
    assert [(p.response, *triple(p)) for p in pairs] == [(s.text, *triple(s)) for s in stories[:300]]


def test_every_pair_answers_its_own_instruction(pairs):
    for p in pairs:
        assert follows(p.response, p.request).all, p
        assert follows(p.instruction, p.request).all, p
        r = p.request
        assert not r.heldout_phrasing and p.instruction == r.instruction
        assert r.instruction == render(TRAIN_PHRASINGS[r.phrasing], *triple(r))
    assert len({p.request.phrasing for p in pairs}) > 20


def test_eval_requests_use_both_kinds_of_phrasing():
    requests = eval_requests(200, seed=3)
    assert sum(r.heldout_phrasing for r in requests) == 100
    for r in requests:
        phrasings = HELDOUT_PHRASINGS if r.heldout_phrasing else TRAIN_PHRASINGS
        assert r.instruction == render(phrasings[r.phrasing], *triple(r))
        if r.heldout_phrasing:
            assert r.instruction not in {render(p, *triple(r)) for p in TRAIN_PHRASINGS}
    assert not any(r.heldout_phrasing for r in eval_requests(20, heldout_phrasings=0))
    assert all(r.heldout_phrasing for r in eval_requests(20, heldout_phrasings=1))


def test_same_seed_same_data_other_seed_other_data():
    assert instruction_pairs(40, seed=1) == instruction_pairs(40, seed=1)
    assert instruction_pairs(40, seed=1) != instruction_pairs(40, seed=2)
    assert eval_requests(40, seed=1) == eval_requests(40, seed=1)
    assert eval_requests(40, seed=1) != eval_requests(40, seed=2)
    assert instruction_pairs(0) == [] and eval_requests(0) == []


# ---------------------------------------------------------------------------- alpaca

def test_alpaca_masks_exactly_bos_and_prompt(tok, pairs):
    p = pairs[0]
    ids, mask = alpaca_ids(tok, p.instruction, p.response)
    prompt = [tok.bos_id] + tok.encode(ALPACA_PROMPT.format(instruction=p.instruction))
    n = len(prompt)
    assert ids[:n] == prompt and ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert mask == [0] * n + [1] * (len(ids) - n)
    assert tok.decode(ids[n:-1]) == p.response
    assert ids[n:-1] == tok.encode(p.response)
    text = tok.decode(ids[:n])
    assert text.startswith("Below is an instruction") and text.endswith("### Response:\n")
    assert p.instruction in text
    # for generation: the same prompt ids, nothing after them
    assert alpaca_ids(tok, p.instruction) == (prompt, [0] * n)
    assert template_ids(tok, p.instruction, p.response) == (ids, mask)


# ---------------------------------------------------------------------------- chat

S, U1, A1 = "You write short stories for children.", "Hi! Who are you?", "I am a story teller."
U2 = "Tell me a story about Lily and a duck in the park."


def test_chat_ids_built_by_hand(tok, pairs):
    bos, eos, A2 = tok.bos_id, tok.eos_id, pairs[0].response
    p1 = [bos] + tok.encode(f"[INST] <<SYS>>\n{S}\n<</SYS>>\n\n{U1} [/INST]")
    a1 = tok.encode(A1) + [eos]
    p2 = [bos] + tok.encode(f"[INST] {U2} [/INST]")
    a2 = tok.encode(A2) + [eos]
    ids, mask = chat_ids(tok, [(U1, A1), (U2, A2)], system=S)
    assert ids == p1 + a1 + p2 + a2
    assert mask == [0] * len(p1) + [1] * len(a1) + [0] * len(p2) + [1] * len(a2)
    # surrounding whitespace is stripped, as in Meta's code
    assert chat_ids(tok, [(f"  {U1}\n", f" {A1} "), (U2, A2)], system=f"{S}\n").ids == ids
    # a final None assistant ends right after the last " [/INST]", ready to generate
    ids, mask = chat_ids(tok, [(U1, A1), (U2, None)], system=S)
    assert ids == p1 + a1 + p2 and mask == [0] * len(p1) + [1] * len(a1) + [0] * len(p2)
    assert template_ids(tok, U2, template="chat") == ([bos] + tok.encode(f"[INST] {U2} [/INST]"),
                                                      [0] * len(p2))


def test_chat_specials_are_ids_and_the_system_prompt_is_in_the_first_turn_only(tok):
    ids, _ = chat_ids(tok, [(U1, A1), (U2, A1), ("And another?", None)], system=S)
    assert ids.count(tok.bos_id) == 3 and ids.count(tok.eos_id) == 2
    text = tok.decode(ids)
    assert "<s>" not in text and "</s>" not in text
    assert text.count("[INST]") == 3 and text.count("[/INST]") == 3
    assert text.count("<<SYS>>") == 1 and text.index("<<SYS>>") < text.index(U1)
    assert "<<SYS>>" not in tok.decode(chat_ids(tok, [(U1, A1)]).ids)


def test_render_chat_text_marks_where_the_ids_go():
    assert render_chat_text([(U1, A1), (U2, None)], system=S) == (
        f"<s>[INST] <<SYS>>\n{S}\n<</SYS>>\n\n{U1} [/INST] {A1}</s><s>[INST] {U2} [/INST]")


# ---------------------------------------------------------------------------- follows and score

def test_follows_hand_examples():
    req = make_request("Lily", "bear cub", "in the park", 0)
    assert follows("Lily and her bear cub played in the park.", req) == Follows(True, True, True, True)
    assert follows("Lily's Bear Cub ran around In The Park!", req).all  # possessive, any case
    assert follows("Lily had a bear\ncub in the  park.", req).all  # whitespace runs
    assert not follows("Lilyanne and her bear cub played in the park.", req).name
    assert not follows("lily and her bear cub played in the park.", req).name  # names keep case
    assert not follows("Lily saw a bear and a cub in the park.", req).animal
    assert not follows("Lily saw two bear cubs in the park.", req).animal  # a whole word only
    assert not follows("Lily and her bear cub went to the park.", req).place
    assert follows("Lily was at the market.", make_request("Lily", "duck", "at the market", 0)) == \
        Follows(True, False, True, False)
    texts = ["Lily and her bear cub played in the park.", "Lily played in the park."]
    assert score(texts, [req, req]) == 0.5
    assert follow_rates(texts, [req, req]) == {"name": 1.0, "animal": 0.5, "place": 1.0, "all": 0.5}


# ---------------------------------------------------------------------------- bad input

def test_bad_input_says_what_is_accepted(tok):
    with pytest.raises(ValueError, match=r"n must be an integer >= 0, got -1"):
        instruction_pairs(-1)
    with pytest.raises(ValueError, match=r"n must be an integer >= 0, got -2"):
        eval_requests(-2)
    with pytest.raises(ValueError, match=r"heldout_phrasings is a share in \[0, 1\], got 1.5"):
        eval_requests(5, heldout_phrasings=1.5)
    with pytest.raises(ValueError, match=rf"index into TRAIN_PHRASINGS, 0..{len(TRAIN_PHRASINGS) - 1}"):
        make_request("Lily", "duck", "in the park", len(TRAIN_PHRASINGS))
    with pytest.raises(ValueError, match=r"animal must be a non-empty string"):
        make_request("Lily", " ", "in the park", 0)
    with pytest.raises(ValueError, match=r"turns must be a non-empty list of \(user, assistant\)"):
        chat_ids(tok, [])
    with pytest.raises(ValueError, match=r"turn 0's assistant is None, but only the last turn"):
        chat_ids(tok, [(U1, None), (U2, A1)])
    with pytest.raises(ValueError, match=r"turn 1 must be a \(user, assistant\) pair"):
        chat_ids(tok, [(U1, A1), (U2,)])
    with pytest.raises(ValueError, match=r"turn 0's user message must be a non-empty string"):
        chat_ids(tok, [("  ", A1)])
    with pytest.raises(ValueError, match=r"system \(or None for no system prompt\) must be"):
        render_chat_text([(U1, A1)], system="")
    with pytest.raises(ValueError, match=r"instruction must be a non-empty string"):
        alpaca_ids(tok, "")
    with pytest.raises(ValueError, match=r"unknown template 'vicuna'; expected one of alpaca, chat"):
        template_ids(tok, U1, template="vicuna")
    with pytest.raises(ValueError, match=r"the alpaca template has no system prompt"):
        template_ids(tok, U1, system=S)
    with pytest.raises(ValueError, match=r"need one text per request .* got 1 texts and 0 requests"):
        score(["Lily"], [])
    with pytest.raises(ValueError, match=r"got 0 texts and 0 requests"):
        score([], [])
