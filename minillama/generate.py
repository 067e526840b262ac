"""Sampling and text generation: greedy, temperature, top-k, top-p, stop tokens, streaming.

The sampler works on a NumPy vector of logits with a NumPy random generator, so the torch
model and the Numba engine draw the same tokens from the same logits and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Raise ValueError unless temperature >= 0, top_k >= 0 (0 = off) and 0 < top_p <= 1."""
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top_k must be a whole number >= 0 (0 keeps every token), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities (float64) from logits divided by temperature > 0."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max())  # subtracting the max keeps exp() from overflowing
    return z / z.sum()


def top_k_filter(probs: np.ndarray, k: int) -> np.ndarray:
    """Zero all but the k most probable entries (ties broken by lower id) and renormalise."""
    if k <= 0 or k >= probs.size:
        return probs
    keep = np.argsort(-probs, kind="stable")[:k]
    out = np.zeros_like(probs)
    out[keep] = probs[keep]
    return out / out.sum()


def top_p_filter(probs: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most probable entries whose total reaches p; renormalise."""
    if p >= 1.0:
        return probs
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order])
    # the first index where the running total reaches p is the last one kept
    n_keep = int(np.searchsorted(cumulative, p * cumulative[-1])) + 1
    out = np.zeros_like(probs)
    keep = order[:n_keep]
    out[keep] = probs[keep]
    return out / out.sum()


def sampling_probs(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0) -> np.ndarray:
    """The distribution the sampler draws from (vocab_size,), after temperature, top-k, top-p."""
    check_sampling(temperature, top_k, top_p)
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        probs = np.zeros_like(logits)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    return top_p_filter(top_k_filter(softmax(logits, temperature), int(top_k)), top_p)


def sample_next(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                rng: np.random.Generator | None = None) -> int:
    """Draw one token id from logits (vocab_size,); temperature 0 is greedy (argmax)."""
    if temperature == 0:
        check_sampling(temperature, top_k, top_p)
        return int(np.argmax(logits))
    probs = sampling_probs(logits, temperature, top_k, top_p)
    rng = np.random.default_rng() if rng is None else rng
    cdf = np.cumsum(probs)
    # inverse-CDF sampling: one uniform draw per token, the same on every backend
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), probs.size - 1))


# ---------------------------------------------------------------------------------------
# streaming text
# ---------------------------------------------------------------------------------------


class StreamDecoder:
    """Turns token ids arriving one at a time into text, never splitting a UTF-8 character.

    Byte-fallback pieces (<0xE2><0x96><0x81>...) only form text together, so the decoder
    re-decodes what it holds and emits only text that can no longer change.
    """

    def __init__(self, tokenizer, prompt_ids: Sequence[int] = ()):
        self.tok = tokenizer
        self.ids: list[int] = list(prompt_ids)
        self.emitted = len(tokenizer.decode(self.ids)) if self.ids else 0

    def push(self, token_id: int) -> str:
        """Add one id; return the newly completed text (possibly empty)."""
        self.ids.append(int(token_id))
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete character: wait for its next bytes
            return ""
        new, self.emitted = text[self.emitted:], len(text)
        return new

    def flush(self) -> str:
        text = self.tok.decode(self.ids)
        new, self.emitted = text[self.emitted:], len(text)
        return new


# ---------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------


@dataclass
class Generation:
    """What generate() produced: new ids, their text, and why it stopped."""

    prompt_ids: list[int]
    ids: list[int]
    text: str
    stop_reason: str  # "eos", "stop_token", "max_new_tokens" or "context"


def prepare_prompt(tokenizer, prompt: str, max_seq_len: int, truncate: bool = False) -> list[int]:
    """BOS + the prompt's ids; an empty prompt is BOS alone. Too long -> error unless truncate."""
    ids = tokenizer.encode(prompt, bos=True) if prompt else [tokenizer.bos_id]
    if len(ids) >= max_seq_len:
        if not truncate:
            raise ValueError(
                f"the prompt is {len(ids)} tokens (with BOS) but the model's context holds "
                f"{max_seq_len} (max_seq_len), leaving no room to generate; shorten it, or "
                "pass truncate=True (--truncate) to keep BOS and the prompt's last tokens"
            )
        ids = [tokenizer.bos_id] + ids[len(ids) - max_seq_len // 2 + 1:]
    return ids


def generate_ids(step: Callable[[list[int], int], np.ndarray], prompt_ids: list[int],
                 max_seq_len: int, max_new_tokens: int, temperature: float = 0.8, top_k: int = 0,
                 top_p: float = 1.0, seed: int | None = 0, stop_ids: Sequence[int] = (),
                 on_token: Callable[[int], None] | None = None) -> tuple[list[int], str]:
    """The decode loop shared by every backend.

    step(new_ids, start_pos) feeds new ids at start_pos and returns the last position's
    logits (vocab_size,). Returns (generated ids, stop reason).
    """
    check_sampling(temperature, top_k, top_p)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    rng = np.random.default_rng(seed)
    out: list[int] = []
    logits = step(list(prompt_ids), 0)  # prefill: the whole prompt in one call
    pos = len(prompt_ids)
    while True:
        if len(out) == max_new_tokens:
            return out, "max_new_tokens"
        token = sample_next(logits, temperature, top_k, top_p, rng)
        if token in stop_ids:
            return out, "stop_token"
        out.append(token)
        if on_token is not None:
            on_token(token)
        if pos + 1 >= max_seq_len:
            return out, "context"
        if len(out) == max_new_tokens:  # done: no step for a token nobody will read
            return out, "max_new_tokens"
        logits = step([token], pos)
        pos += 1


def torch_step(model) -> Callable[[list[int], int], np.ndarray]:
    """A step function for generate_ids backed by the torch model and a fresh KV cache."""
    import torch

    from minillama.model import KVCache

    cache = KVCache(model.args, max_batch=1)

    @torch.inference_mode()
    def step(ids: list[int], start_pos: int) -> np.ndarray:
        tokens = torch.tensor([ids], dtype=torch.long)
        return model(tokens, start_pos=start_pos, cache=cache)[0, -1].numpy()

    return step


def generate(model, tokenizer, prompt: str = "", max_new_tokens: int = 200,
             temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0, seed: int | None = 0,
             stop_ids: Sequence[int] | None = None, stream: Callable[[str], None] | None = None,
             truncate: bool = False, step=None) -> Generation:
    """Continue prompt with the model: sample up to max_new_tokens, stop at EOS.

    model is a torch `Llama` or an `Engine` (anything with `.args`; an Engine's `feed` is
    its step). stream, if given, receives text as soon as it is complete. `step` overrides
    the backend (see generate_ids); a Llama's default is the torch model with a KV cache.
    """
    max_seq_len = model.args.max_seq_len
    if tokenizer.vocab_size != model.args.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} pieces but the model's "
                         f"vocab_size is {model.args.vocab_size}: they do not belong together")
    prompt_ids = prepare_prompt(tokenizer, prompt, max_seq_len, truncate)
    stops = [tokenizer.eos_id] if stop_ids is None else list(stop_ids)
    decoder = StreamDecoder(tokenizer, prompt_ids)
    on_token = None
    if stream is not None:
        def on_token(t: int) -> None:
            if piece := decoder.push(t):
                stream(piece)

    step = step or getattr(model, "feed", None) or torch_step(model)
    ids, reason = generate_ids(step, prompt_ids, max_seq_len,
                               max_new_tokens, temperature, top_k, top_p, seed, stops, on_token)
    if stream is not None and (rest := decoder.flush()):
        stream(rest)
    if reason == "stop_token" and stop_ids is None:
        reason = "eos"
    # decode with the prompt: a piece's leading space is only kept after other text
    text = tokenizer.decode(prompt_ids + ids)[len(tokenizer.decode(prompt_ids)):]
    return Generation(prompt_ids, ids, text, reason)
