"""The course's shipped model, and loading any checkpoint with its tokenizer.

A checkpoint is any format `minillama.formats.checkpoint` reads, detected by content: a
transformers directory (config.json + safetensors) or a Meta one (params.json +
consolidated.*.pth) with the SentencePiece `tokenizer.model` beside the weights, a llama2.c
.bin with tokenizer.model or tokenizer.bin beside it, or a GGUF file (its own vocabulary).
"""

from __future__ import annotations

from pathlib import Path

COURSE_MODEL = Path(__file__).with_name("assets") / "course"
TOKENIZER_FILE = "tokenizer.model"


def load_tokenizer(path: str | Path):
    """The tokenizer of a checkpoint (a directory or file, any format), or of a .model /
    .json tokenizer file."""
    from minillama.tokenizer import Tokenizer

    path = Path(path)
    if path.is_file() and path.suffix in (".model", ".json"):
        return Tokenizer.load(path) if path.suffix == ".json" else Tokenizer.from_sentencepiece(path)
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer or checkpoint at {path}")
    from minillama.formats.checkpoint import find_tokenizer

    tok = find_tokenizer(path)
    if tok is None:
        raise FileNotFoundError(f"no tokenizer for {path}: expected a SentencePiece {TOKENIZER_FILE} "
                                "beside the weights (or tokenizer.bin beside a llama2.c file; a GGUF "
                                "file carries its own)")
    return tok


def load_model(path: str | Path | None = None, engine: str = "torch", quant: str | None = None):
    """(model, Tokenizer) from a checkpoint in any format (default: the shipped model).
    engine "torch": a Llama in eval mode; "numba": an `Engine`, its matrices quantized at
    load if quant is "q8_0", "q4_0" or "nf4" (a GGUF file's quantized matrices load as stored)."""
    path = COURSE_MODEL if path is None else Path(path)
    if not path.exists():
        hint = " (the shipped model is missing: reinstall minillama)" if path == COURSE_MODEL else ""
        raise FileNotFoundError(f"model {path} does not exist{hint}")
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
        raise ValueError(f"{path}: the tokenizer has {tokenizer.vocab_size} pieces but the model's "
                         f"vocab_size is {model.args.vocab_size}")
    return model, tokenizer
