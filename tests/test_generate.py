"""minillama.generate: samplers on hand-built logits, the decode loop, streaming."""

import math

import numpy as np
import pytest
import torch

from minillama.config import ModelArgs
from minillama.generate import (
    StreamDecoder,
    generate,
    generate_ids,
    prepare_prompt,
    sample_next,
    sampling_probs,
    softmax,
    top_k_filter,
    top_p_filter,
)
from minillama.model import Llama
from minillama.tokenizer import Tokenizer

PROBS = np.array([0.1, 0.2, 0.3, 0.4])


def test_softmax_and_temperature_by_hand():
    logits = np.log([1.0, 2.0, 4.0])
    np.testing.assert_allclose(softmax(logits), [1 / 7, 2 / 7, 4 / 7], atol=1e-12)
    # temperature 0.5 squares the odds: 1 : 4 : 16
    np.testing.assert_allclose(softmax(logits, 0.5), [1 / 21, 4 / 21, 16 / 21], atol=1e-12)
    # temperature 2 takes square roots: 1 : sqrt2 : 2
    z = 1 + math.sqrt(2) + 2
    np.testing.assert_allclose(softmax(logits, 2.0), [1 / z, math.sqrt(2) / z, 2 / z], atol=1e-12)
    assert np.isfinite(softmax(np.array([1e4, 0.0]))).all()


def test_top_k_by_hand():
    np.testing.assert_allclose(top_k_filter(PROBS, 2), [0, 0, 3 / 7, 4 / 7], atol=1e-12)
    np.testing.assert_allclose(top_k_filter(PROBS, 1), [0, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(top_k_filter(PROBS, 0), PROBS)  # 0 = off
    np.testing.assert_allclose(top_k_filter(PROBS, 10), PROBS)


def test_top_p_by_hand():
    # sorted: 0.4, 0.3 (running 0.7), 0.2 (0.9), 0.1 (1.0)
    np.testing.assert_allclose(top_p_filter(PROBS, 0.5), [0, 0, 3 / 7, 4 / 7], atol=1e-12)
    np.testing.assert_allclose(top_p_filter(PROBS, 0.3), [0, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(top_p_filter(PROBS, 0.85), [0, 2 / 9, 3 / 9, 4 / 9], atol=1e-12)
    np.testing.assert_allclose(top_p_filter(PROBS, 1.0), PROBS)


def test_greedy_and_combined():
    logits = np.array([0.5, 3.0, -1.0, 2.9])
    assert sample_next(logits, temperature=0) == 1
    # temperature 1, top-k 2 keeps ids 1 and 3 with odds e^3 : e^2.9
    probs = sampling_probs(logits, 1.0, top_k=2)
    a = 1 / (1 + math.exp(-0.1))
    np.testing.assert_allclose(probs, [0, a, 0, 1 - a], atol=1e-12)


def test_sample_frequencies_match_the_distribution():
    rng = np.random.default_rng(0)
    logits = np.log(PROBS)
    draws = np.bincount([sample_next(logits, 1.0, rng=rng) for _ in range(20000)], minlength=4)
    # binomial std for p=0.4, n=20000 is 0.0035; allow about 4 std
    np.testing.assert_allclose(draws / 20000, PROBS, atol=0.015)
    draws = {sample_next(logits, 1.0, top_k=2, rng=rng) for _ in range(2000)}
    assert draws == {2, 3}


def test_same_seed_same_tokens():
    logits = np.random.default_rng(1).standard_normal(50)
    a = [sample_next(logits, 0.9, 10, 0.9, np.random.default_rng(7)) for _ in range(5)]
    b = [sample_next(logits, 0.9, 10, 0.9, np.random.default_rng(7)) for _ in range(5)]
    assert a == b


@pytest.mark.parametrize("kwargs, msg", [
    (dict(temperature=-0.1), "temperature must be >= 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(top_k=-1), "top_k must be a whole number >= 0"),
    (dict(top_k=2.5), "top_k must be a whole number >= 0"),
])
def test_bad_sampling_options_are_rejected(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        sample_next(np.zeros(4), **{"temperature": 1.0, **kwargs})


def test_decode_loop_stops_and_feeds_positions():
    calls = []

    def step(ids, start_pos):  # a fake model: always predicts (last id + 1) mod 10
        calls.append((list(ids), start_pos))
        logits = np.zeros(10)
        logits[(ids[-1] + 1) % 10] = 5.0
        return logits

    ids, why = generate_ids(step, [1, 2], max_seq_len=100, max_new_tokens=4, temperature=0)
    assert ids == [3, 4, 5, 6] and why == "max_new_tokens"
    assert calls[0] == ([1, 2], 0) and calls[1] == ([3], 2) and calls[2] == ([4], 3)
    ids, why = generate_ids(step, [1, 2], 100, 50, temperature=0, stop_ids=[7])
    assert ids == [3, 4, 5, 6] and why == "stop_token"
    ids, why = generate_ids(step, [1, 2], max_seq_len=5, max_new_tokens=50, temperature=0)
    assert ids == [3, 4, 5] and why == "context"


# ---------------------------------------------------------------------------------------
# with a real (tiny, random) model and a trained tokenizer
# ---------------------------------------------------------------------------------------

TEXT = ["Once upon a time there was a little cat. The cat liked to play in the sun.",
        "One day, Lily found a red ball in the park. She was very happy."] * 20


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXT, 300)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    args = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
                     max_seq_len=48)
    return Llama(args).eval()


def test_greedy_with_cache_equals_argmax_over_full_recompute(model, tok):
    out = generate(model, tok, "Once upon a time", max_new_tokens=20, temperature=0,
                   stop_ids=[])
    ids = list(out.prompt_ids)
    with torch.no_grad():
        for _ in range(20):  # the reference: no cache, the whole sequence every time
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert out.ids == ids[len(out.prompt_ids):]
    assert out.stop_reason == "max_new_tokens"
    assert out.text == tok.decode(ids)[len(tok.decode(out.prompt_ids)):]


def test_seeded_sampling_is_reproducible_and_streams_the_same_text(model, tok):
    pieces = []
    a = generate(model, tok, "One day", 15, temperature=1.0, top_p=0.9, seed=3,
                 stream=pieces.append)
    b = generate(model, tok, "One day", 15, temperature=1.0, top_p=0.9, seed=3)
    assert a.ids == b.ids and "".join(pieces) == a.text


def test_stream_decoder_never_splits_a_character(tok):
    text = "cat 😀 é 猫 sun"  # none of these symbols are in the training text: byte pieces
    ids = tok.encode(text)
    assert any(tok.id_to_piece(i).startswith("<0x") for i in ids)
    dec = StreamDecoder(tok)
    pieces = [dec.push(i) for i in ids]
    assert "".join(pieces) + dec.flush() == tok.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)


def test_prompts_empty_too_long_and_mismatched(model, tok):
    assert prepare_prompt(tok, "", 48) == [tok.bos_id]
    long = "the cat liked to play " * 20
    with pytest.raises(ValueError, match=r"the prompt is \d+ tokens \(with BOS\) but the model's "
                                         r"context holds 48"):
        generate(model, tok, long, 5)
    out = generate(model, tok, long, 5, truncate=True, temperature=0)
    assert out.prompt_ids[0] == tok.bos_id and len(out.prompt_ids) < 48
    other = Tokenizer.train(TEXT, 290)
    with pytest.raises(ValueError, match="tokenizer has 290 pieces but the model's vocab_size is 300"):
        generate(model, other, "hi", 5)


def test_generation_stops_at_the_end_of_the_context(model, tok):
    out = generate(model, tok, "Once", max_new_tokens=500, temperature=0, stop_ids=[])
    assert out.stop_reason == "context"
    assert len(out.prompt_ids) + len(out.ids) == model.args.max_seq_len


def test_cli_streams_the_shipped_models_story_and_rejects_bad_options():
    import subprocess
    import sys

    from minillama.pretrained import load_model

    cmd = [sys.executable, "-m", "minillama", "generate", "Once upon a time",
           "--max-new-tokens", "30", "--temperature", "0"]
    model, tok = load_model()
    expected = generate(model, tok, "Once upon a time", 30, temperature=0)  # torch, no engine
    for engine in ("numba", "torch"):
        r = subprocess.run([*cmd, "--engine", engine], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "Once upon a time" + expected.text + "\n"
    for bad, msg in [("--temperature=-1", "temperature must be >= 0"),
                     ("--top-p=0", "top_p must be in (0, 1]"), ("--top-k=-2", "top_k must be")]:
        r = subprocess.run([*cmd[:4], bad], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
