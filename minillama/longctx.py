"""Long context (lesson 12): RoPE scaling applied to a model, long evaluation text,
perplexity by position and by length, and passkey retrieval.

    model = with_context(model, 1024, parse_scaling("linear:4"))   # a Llama or an Engine
    tokens = long_tokens(tok, 200_000)                              # held-out stories, joined
    ppl = perplexity_by_length(engine, tokens, (256, 512, 1024, 2048), n_windows=4)
    acc = passkey_accuracy(engine, tok, length=1024, depths=(0, 0.5, 1), n=10)

The shipped model was trained on windows of TRAIN_WINDOW = 256 tokens of the story stream
(BOS story EOS BOS story EOS ...). Its stories are independent of each other, so a longer
window cannot lower the perplexity of the text much; what it shows is whether positions
past 256 still work. The passkey test asks for what only a long window can give: a
number said once, far back, repeated at the end (Chen et al. 2023, the PI paper, section 3.3).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minillama.config import ROPE_SCALING_TYPES, RopeScaling

TRAIN_WINDOW = 256  # the shipped model's training windows (minillama train --seq-len 256)
# PI x4 fine-tuned at 1024 tokens (its card, README.md, says how it was made): lesson 12
SHIPPED_LONG_ADAPTER = Path(__file__).with_name("assets") / "long"
EVAL_SEED = 12345  # long_tokens' stories: not the training corpus's seed (0)
TUNE_SEED = 777  # the long-context fine-tune's stories: neither of the two

PASSKEY_INTRO = "There is a pass key hidden in these stories. Find it and remember it."
PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = "What is the pass key? The pass key is"
PASSKEY_DIGITS = 5  # as in the PI paper's test


def parse_scaling(spec: str | None, original: int = TRAIN_WINDOW) -> RopeScaling | None:
    """"linear:4", "ntk:4", "dynamic:4", "yarn:4" or "llama3:4" -> a RopeScaling whose
    original context is `original` tokens; None or "none" -> None (plain RoPE)."""
    if spec is None or spec == "none":
        return None
    kind, _, factor = spec.partition(":")
    if kind not in ROPE_SCALING_TYPES or not factor:
        raise ValueError(f"rope scaling {spec!r}: expected TYPE:FACTOR such as 'linear:4', with "
                         f"TYPE one of {sorted(ROPE_SCALING_TYPES)}, or 'none'")
    try:
        value = float(factor)
    except ValueError:
        raise ValueError(f"rope scaling {spec!r}: the factor {factor!r} is not a number") from None
    return RopeScaling(kind, value, original_max_position_embeddings=original)


def with_context(model, max_seq_len: int, scaling: RopeScaling | None):
    """The same weights with a max_seq_len window and RoPE scaling: a new Engine sharing
    an Engine's weights, or a new Llama (eval mode) with a torch Llama's weights copied."""
    args = dataclasses.replace(model.args, max_seq_len=max_seq_len, rope_scaling=scaling)
    if hasattr(model, "weights"):  # an Engine: its rope table and KV cache are made for args
        return type(model)(args, model.weights)
    from minillama.model import Llama

    out = Llama(args)
    out.load_state_dict(model.state_dict())
    return out.eval()


# ---------------------------------------------------------------------------------------
# text and perplexity
# ---------------------------------------------------------------------------------------


def long_tokens(tok, n_tokens: int, seed: int = EVAL_SEED) -> np.ndarray:
    """At least n_tokens of freshly generated stories in the training format (BOS story
    EOS ...), int64: the long evaluation text."""
    import random

    from minillama.data import generate_story

    rng, ids = random.Random(seed), []
    while len(ids) < n_tokens:
        ids += tok.encode(generate_story(rng).text, bos=True, eos=True)
    return np.asarray(ids, dtype=np.int64)


def nll_by_position(engine, windows: np.ndarray) -> np.ndarray:
    """Negative log-likelihood (nats) of each next token: windows (n, T + 1) -> (n, T)
    float64, each window one prefill from an empty cache."""
    from minillama.evaluate import log_softmax

    out = np.empty((len(windows), windows.shape[1] - 1))
    for i, w in enumerate(windows):
        engine.reset()
        logp = log_softmax(engine.prefill(w[:-1], all_logits=True))  # (T, vocab)
        out[i] = -logp[np.arange(len(w) - 1), w[1:]]
    return out


def window_starts(tokens: np.ndarray, length: int, n_windows: int) -> np.ndarray:
    """n_windows evenly spaced starts of windows of length + 1 tokens."""
    if len(tokens) < length + 1 or n_windows < 1:
        raise ValueError(f"need n_windows >= 1 and at least {length + 1} tokens, got "
                         f"{n_windows} and {len(tokens)}")
    return np.linspace(0, len(tokens) - length - 1, n_windows).astype(np.int64)


def perplexity_by_length(engine, tokens: np.ndarray, lengths, n_windows: int = 4) -> dict[int, float]:
    """Perplexity over whole windows of each length (the PI paper's measure), windows
    starting at the same places for every length. Attention is causal, so but for
    "dynamic" scaling (whose frequencies depend on the length) one prefill of the longest
    window gives every shorter one's losses: its first `length` positions."""
    lengths = sorted(lengths)
    longest = lengths[-1]
    starts = window_starts(tokens, longest, n_windows)
    scaling = engine.args.rope_scaling
    if scaling is None or scaling.type != "dynamic":
        nll = nll_by_position(engine, np.stack([tokens[s:s + longest + 1] for s in starts]))
        return {n: math.exp(nll[:, :n].mean()) for n in lengths}
    return {n: math.exp(nll_by_position(engine, np.stack([tokens[s:s + n + 1] for s in starts])).mean())
            for n in lengths}


def bucket_perplexity(nll: np.ndarray, edges) -> list[float]:
    """Perplexity of the positions in each bucket [edges[i], edges[i + 1]) of nll (n, T)."""
    return [math.exp(nll[:, a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]


# ---------------------------------------------------------------------------------------
# passkey retrieval
# ---------------------------------------------------------------------------------------


class Passkey(NamedTuple):
    """One passkey document: ids (prompt + answer), loss mask (1 on the answer), the key."""

    ids: list[int]
    mask: list[int]
    key: str
    needle_at: int  # the token position where the needle sentence starts
    answer_at: int  # where the answer starts: the prompt is ids[:answer_at]

    @property
    def prompt(self) -> list[int]:
        return self.ids[:self.answer_at]

    @property
    def answer(self) -> list[int]:
        return self.ids[self.answer_at:]


class Filler:
    """Held-out stories as token ids (no BOS or EOS), to fill passkey documents from."""

    def __init__(self, tok, n_stories: int = 400, seed: int = EVAL_SEED):
        from minillama.data import generate_stories

        self.stories = [tok.encode(s.text) for s in generate_stories(n_stories, seed)]
        self.tok = tok
        self.intro = [tok.bos_id] + tok.encode(PASSKEY_INTRO)
        self.question = tok.encode(PASSKEY_QUESTION)

    def document(self, length: int, depth: float, rng: np.random.Generator,
                 learn_needle: bool = False) -> Passkey:
        """A passkey document of exactly `length` tokens (answer included): the intro,
        stories, the needle at the story boundary nearest `depth` (0: right after the
        intro, 1: right before the question), more stories, the question, the answer."""
        if not 0 <= depth <= 1:
            raise ValueError(f"depth is a fraction of the filler in [0, 1], got {depth}")
        key = str(rng.integers(10 ** (PASSKEY_DIGITS - 1), 10 ** PASSKEY_DIGITS))
        needle = self.tok.encode(PASSKEY_NEEDLE.format(key=key))
        answer = self.tok.encode(key)  # "▁" and one token per digit
        n_fill = length - len(self.intro) - len(needle) - len(self.question) - len(answer)
        if n_fill < 0:
            shortest = length - n_fill
            raise ValueError(f"a passkey document needs at least {shortest} tokens, got length {length}")
        fill, bounds = [], [0]  # bounds: where each story starts in fill
        i = int(rng.integers(len(self.stories)))
        while len(fill) < n_fill:
            fill += self.stories[i % len(self.stories)]
            bounds.append(len(fill))
            i += 1
        fill = fill[:n_fill]
        bounds = np.array([b for b in bounds if b <= n_fill] + [n_fill])
        cut = int(bounds[np.abs(bounds - depth * n_fill).argmin()])
        prompt = self.intro + fill[:cut] + needle + fill[cut:] + self.question
        mask = [0] * len(prompt) + [1] * len(answer)
        if learn_needle:  # also learn the needle's second mention of the key: a copy close by
            k = len(answer)
            second = [j for j in range(len(needle) - k + 1) if needle[j:j + k] == answer][-1]
            at = len(self.intro) + cut + second
            mask[at:at + k] = [1] * k
        return Passkey(prompt + answer, mask, key, len(self.intro) + cut, len(prompt))


def passkey_accuracy(engine, filler: Filler, length: int, depths=(0.0, 0.25, 0.5, 0.75, 1.0),
                     n: int = 10, seed: int = 0) -> dict[float, float]:
    """depth -> share of n documents of `length` tokens whose greedy answer is the key."""
    if length > engine.args.max_seq_len:
        raise ValueError(f"length {length} is longer than the engine's window "
                         f"{engine.args.max_seq_len}: use with_context first")
    rng = np.random.default_rng(seed)
    out = {}
    for depth in depths:
        hits = 0
        for _ in range(n):
            doc = filler.document(length, depth, rng)
            got = engine.generate(doc.prompt, len(doc.answer), temperature=0.0)
            hits += got == doc.answer
        out[depth] = hits / n
    return out


# ---------------------------------------------------------------------------------------
# fine-tuning data
# ---------------------------------------------------------------------------------------


def batch_sampler(tok, seq_len: int, batch_size: int, passkey_share: float = 0.0,
                  seed: int = 0, n_tokens: int = 2_000_000):
    """step -> batch_size (ids, mask) examples for a long-context fine-tune: windows of
    seq_len + 1 tokens of stories (every token learnt), and with passkey_share > 0 every
    round(1 / passkey_share)-th batch of passkey documents of one length drawn from
    [max(seq_len / 4, 128), seq_len], their needles at depth u**2 for u uniform (more far
    ones than near), only the key learnt: where the needle repeats it, and as the answer."""
    from minillama.instruct import Tokens

    if not 0 <= passkey_share <= 1:
        raise ValueError(f"passkey_share is a share of the batches in [0, 1], got {passkey_share}")
    stream = long_tokens(tok, n_tokens, seed=TUNE_SEED + seed)
    filler = Filler(tok, seed=TUNE_SEED + seed + 1) if passkey_share else None
    every = round(1 / passkey_share) if passkey_share else 0
    rng = np.random.default_rng(seed)

    def next_batch(step: int):
        if every and step % every == every - 1:
            length = int(rng.integers(min(seq_len, max(seq_len // 4, 128)), seq_len + 1))
            docs = [filler.document(length, float(rng.random()) ** 2, rng, learn_needle=True)
                    for _ in range(batch_size)]
            return [Tokens(d.ids, d.mask) for d in docs]
        starts = rng.integers(0, len(stream) - seq_len - 1, batch_size)
        return [Tokens(stream[s:s + seq_len + 1].tolist(), [1] * (seq_len + 1)) for s in starts]

    return next_batch
