"""The course's shipped model, and loading any model directory with its tokenizer.

A model directory is a transformers Llama directory (config.json + safetensors) with the
SentencePiece `tokenizer.model` beside it, as Llama 2's Hugging Face repos have.
"""

from __future__ import annotations

from pathlib import Path

COURSE_MODEL = Path(__file__).with_name("assets") / "course"
TOKENIZER_FILE = "tokenizer.model"


def load_tokenizer(path: str | Path):
    """The tokenizer of a model directory (tokenizer.model), or of a .model / .json file."""
    from minillama.tokenizer import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}: expected a SentencePiece "
                                f"{TOKENIZER_FILE} or a minillama tokenizer .json")
    return Tokenizer.load(path) if path.suffix == ".json" else Tokenizer.from_sentencepiece(path)


def load_model(path: str | Path | None = None, engine: str = "torch", quant: str | None = None):
    """(model, Tokenizer) from a model directory; default: the shipped model. engine
    "torch": a Llama in eval mode; "numba": an `Engine` (which never imports torch), its
    matrices quantized at load if quant is "q8_0", "q4_0" or "nf4"."""
    path = COURSE_MODEL if path is None else Path(path)
    if not path.is_dir():
        hint = " (the shipped model is missing: reinstall minillama)" if path == COURSE_MODEL else ""
        raise FileNotFoundError(f"model directory {path} does not exist{hint}")
    if quant is not None and engine != "numba":
        raise ValueError(f"quant={quant!r} needs the numba engine (engine='numba'), got {engine!r}")
    if engine == "numba":
        from minillama.engine import Engine

        model = Engine.from_pretrained(path, quant=quant)
    elif engine == "torch":
        from minillama.model import Llama

        model = Llama.from_pretrained(path).eval()
    else:
        raise ValueError(f"unknown engine {engine!r}: use 'numba' or 'torch'")
    tokenizer = load_tokenizer(path)
    if tokenizer.vocab_size != model.args.vocab_size:
        raise ValueError(f"{path}: {TOKENIZER_FILE} has {tokenizer.vocab_size} pieces but "
                         f"config.json says vocab_size {model.args.vocab_size}")
    return model, tokenizer
