"""Helpers shared by the tests: random weights, and the shipped model's quality bars."""

import math
import re

import numpy as np
import torch


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights that give O(1) activations and logits, so an absolute tolerance is a strict bound."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
    return model.eval()


# The shipped model's quality bars, applied to the base model's stories (test_pretrained)
# and to the chat adapters' answers (test_chat): the stories must stay stories.

WORD = re.compile(r"[A-Za-z']+")
_SENTENCE_END = re.compile(r'(?:(?<=[.!?])|(?<=[.!?]["”]))\s+')


def unknown_words(texts, vocab: set[str]) -> tuple[int, list[str]]:
    """(number of words in texts, the words not in vocab)."""
    words = [w for t in texts for w in WORD.findall(t)]
    return len(words), [w for w in words if w not in vocab]


def ended_sentence_share(texts) -> tuple[float, int]:
    """(share of sentences ending in . ! or ? (a closing quote allowed), number of sentences)."""
    sentences = [s.strip() for t in texts for s in _SENTENCE_END.split(t)]
    sentences = [s for s in sentences if s]
    return float(np.mean([bool(re.search(r'[.!?]["”]?$', s)) for s in sentences])), len(sentences)
