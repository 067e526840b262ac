"""Tests for minillama/evaluate.py against torch's own cross-entropy and KL divergence on
the torch model's logits (the independent reference). Engine and torch logits differ by
~1e-6 (tests/test_engine.py); losses and KLs are means of O(1) terms, so 1e-5 absolute is
a strict tolerance."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize

from minillama.config import ModelArgs
from minillama.engine import Engine
from minillama.evaluate import eval_windows, log_probs, log_softmax, next_token_stats
from minillama.model import Llama

ATOL = 1e-5
ARGS = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=53, hidden_dim=48,
                 max_seq_len=64)


def torch_logits(model, windows):
    with torch.no_grad():
        return model(torch.as_tensor(windows[:, :-1]))  # (n, seq_len, vocab)


def test_loss_and_kl_match_torch():
    model, other = randomize(Llama(ARGS), seed=1), randomize(Llama(ARGS), seed=2)
    tokens = np.random.default_rng(0).integers(0, ARGS.vocab_size, 500)
    windows = eval_windows(tokens, n_windows=5, seq_len=20)
    stats = next_token_stats(Engine.from_model(other), windows, reference=Engine.from_model(model))
    # the reference's log-probs computed once give the same numbers as the reference engine
    ref_lp = log_probs(Engine.from_model(model), windows)
    assert ref_lp.shape == (5, 20, ARGS.vocab_size)
    assert next_token_stats(Engine.from_model(other), windows, reference=ref_lp) == stats
    with pytest.raises(ValueError, match=r"do not fit windows \(5, 21\)"):
        next_token_stats(Engine.from_model(other), windows, reference=ref_lp[:3])
    ref_logits, logits = torch_logits(model, windows), torch_logits(other, windows)
    loss = F.cross_entropy(logits.flatten(0, 1), torch.as_tensor(windows[:, 1:]).flatten())
    kl = F.kl_div(F.log_softmax(logits, -1).flatten(0, 1), F.log_softmax(ref_logits, -1).flatten(0, 1),
                  log_target=True, reduction="batchmean")
    agree = (ref_logits.argmax(-1) == logits.argmax(-1)).float().mean()
    assert stats.n_tokens == 5 * 20
    assert stats.loss == pytest.approx(loss.item(), abs=ATOL)
    assert stats.perplexity == pytest.approx(math.exp(loss.item()), rel=ATOL)
    assert stats.kl == pytest.approx(kl.item(), abs=ATOL) and stats.kl > 0.01
    assert stats.top1_agreement == pytest.approx(agree.item())


def test_a_model_against_itself():
    engine = Engine.from_model(randomize(Llama(ARGS), seed=3))
    windows = eval_windows(np.arange(300) % ARGS.vocab_size, n_windows=3, seq_len=16)
    stats = next_token_stats(engine, windows, reference=engine)
    assert stats.kl == pytest.approx(0.0, abs=1e-12) and stats.top1_agreement == 1.0
    assert next_token_stats(engine, windows).kl is None


def test_windows_and_log_softmax():
    w = eval_windows(np.arange(100), n_windows=3, seq_len=9)
    assert w.shape == (3, 10) and w[0, 0] == 0 and w[-1, -1] == 99  # evenly spaced, ends included
    assert eval_windows(np.arange(25), n_windows=10, seq_len=9).shape == (2, 10)  # what fits
    with pytest.raises(ValueError, match="at least seq_len"):
        eval_windows(np.arange(5), n_windows=1, seq_len=9)
    x = np.array([[1000.0, 1000.0, -np.inf]])  # huge logits must not overflow
    np.testing.assert_allclose(np.exp(log_softmax(x)), [[0.5, 0.5, 0.0]])
