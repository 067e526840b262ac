"""How good a model's next-token predictions are, with the engine and NumPy only (no torch).

    windows = eval_windows(test_tokens, n_windows=16, seq_len=128)
    fp32 = next_token_stats(engine, windows)                      # loss and perplexity
    q8 = next_token_stats(q8_engine, windows, reference=engine)   # ... and KL from fp32
    ref = log_probs(engine, windows)                              # the reference, computed once
    q4 = next_token_stats(q4_engine, windows, reference=ref)      # for many models

- **Perplexity** is exp(mean next-token loss): how many equally likely tokens the model is
  choosing between, on average (lesson 06).
- **KL divergence from a reference** (llama.cpp's measure of what quantization costs):
  the mean over positions of KL(P_ref || P) = sum_v P_ref(v) (log P_ref(v) - log P(v)), in
  nats. 0 means the two models predict the same distributions; unlike perplexity, it also
  counts changes on tokens that did not occur in the text.
- **Top-1 agreement**: how often both pick the same most likely token (greedy decoding
  agrees for as long as this holds).

The windows are evenly spaced and fixed, so two models are always judged on the same
tokens. Each window is one batched prefill from an empty cache; log-probabilities are
computed in float64.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class NextTokenStats(NamedTuple):
    """What next_token_stats measured over n_tokens predictions."""

    loss: float  # mean negative log-likelihood of the true next token, nats
    perplexity: float  # exp(loss)
    kl: float | None  # mean KL(reference || model), nats; None without a reference
    top1_agreement: float | None  # share of positions where both argmaxes agree
    n_tokens: int


def eval_windows(tokens: np.ndarray, n_windows: int, seq_len: int) -> np.ndarray:
    """n_windows evenly spaced windows of seq_len + 1 tokens: (n_windows, seq_len + 1) int64,
    inputs [:, :-1] and next-token targets [:, 1:]. Fewer if the stream is short."""
    tokens = np.asarray(tokens).reshape(-1)
    n = min(n_windows, (len(tokens) - 1) // seq_len)
    if n_windows < 1 or seq_len < 1 or n < 1:
        raise ValueError(f"need n_windows >= 1 and seq_len >= 1 and at least seq_len + 1 = "
                         f"{seq_len + 1} tokens; got {n_windows}, {seq_len} and {len(tokens)} tokens")
    starts = np.linspace(0, len(tokens) - seq_len - 1, n).astype(np.int64)
    return np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities over the last axis; the max is subtracted first."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _logits(engine, window: np.ndarray) -> np.ndarray:
    engine.reset()
    return engine.prefill(window[:-1], all_logits=True)  # (seq_len, vocab_size)


def log_probs(engine, windows: np.ndarray) -> np.ndarray:
    """float64 (n, seq_len, vocab_size): the engine's next-token log-probabilities on each
    window (n, seq_len + 1), to pass as next_token_stats' reference for many models."""
    return np.stack([log_softmax(_logits(engine, w)) for w in windows])


def next_token_stats(engine, windows: np.ndarray, reference=None) -> NextTokenStats:
    """Loss and perplexity of an Engine on windows (n, seq_len + 1); with a reference (an
    Engine with the same vocabulary, or its log_probs on these windows) also the mean
    KL(reference || engine) and the top-1 agreement."""
    if isinstance(reference, np.ndarray) and reference.shape[:2] != (len(windows), windows.shape[1] - 1):
        raise ValueError(f"reference log-probs of shape {reference.shape} do not fit windows "
                         f"{windows.shape}: expected ({len(windows)}, {windows.shape[1] - 1}, vocab)")
    nll, kl, agree, count = 0.0, 0.0, 0, 0
    for i, w in enumerate(windows):
        logp = log_softmax(_logits(engine, w))  # (seq_len, vocab_size)
        targets = w[1:]
        nll -= float(logp[np.arange(len(targets)), targets].sum())
        if reference is not None:
            ref = reference[i] if isinstance(reference, np.ndarray) else log_softmax(_logits(reference, w))
            kl += float((np.exp(ref) * (ref - logp)).sum())
            agree += int((ref.argmax(-1) == logp.argmax(-1)).sum())
        count += len(targets)
    loss = nll / count
    return NextTokenStats(loss, math.exp(loss), None if reference is None else kl / count,
                          None if reference is None else agree / count, count)
