"""One loader for every checkpoint format, detected by content, and conversion between them.

    ck = read_checkpoint("path")        # a directory or a file, in any format below
    ck.fmt, ck.args, ck.tensors, ck.tokenizer
    convert("stories.bin", "out/", to="gguf", quant="q8_0")

Formats (`FORMATS`) and how each is recognised, by its bytes rather than its name:

- "gguf": a file starting with b"GGUF" (or a directory holding exactly one such file);
- "llama2c": a file whose llama2.c header (v1/v2 magic "ak42", or v0's seven int32 with no
  magic) is valid and whose size is exactly what the header implies (or a directory holding
  one such file among its *.bin);
- "hf": a directory with config.json and model.safetensors (or a sharded index), or one
  of its safetensors files;
- "meta": a directory with params.json and consolidated.00.pth, or one of its .pth files.

Tokenizers: GGUF carries its own; otherwise a SentencePiece `tokenizer.model` beside the
weights, or for llama2.c a `tokenizer.bin`. `write_checkpoint` writes the weights and the
tokenizer in the target's own way: tokenizer.model beside HF and Meta weights, tokenizer.bin
(and tokenizer.model) beside a llama2.c file, inside a GGUF file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minillama.config import ModelArgs
from minillama.formats.mapped import LazyTensors

FORMATS = ("hf", "meta", "llama2c", "gguf")
QUANTS = {  # format -> what --quant may ask of it
    "hf": (None, "f16"), "meta": (None, "f16"), "llama2c": (None, "q8_0"),
    "gguf": (None, "f16", "q8_0", "q4_0"),
}
# file names write_checkpoint uses inside a target directory
FILE_NAMES = {"gguf": "model.gguf", "llama2c": "model.bin"}
TOKENIZER_MODEL, TOKENIZER_BIN = "tokenizer.model", "tokenizer.bin"
PARAMS_FILE = "params.json"  # Meta's (formats/meta.py imports torch: not needed to detect)
_ACCEPTED = ("a GGUF file, a llama2.c .bin (v0, v1 or v2), a transformers directory (config.json + "
             "safetensors) or a Meta directory (params.json + consolidated.00.pth)")


@dataclass
class Checkpoint:
    """A checkpoint read lazily: tensors are views of memory maps where the format allows."""

    fmt: str  # one of FORMATS
    path: Path  # the file (gguf, llama2c) or directory (hf, meta) the weights came from
    args: ModelArgs
    tensors: dict[str, Any]  # Meta names -> NumPy arrays (or torch tensors for meta)
    tokenizer: Any = None  # a minillama Tokenizer, or None if none was found
    maps: list = field(default_factory=list)  # FileMaps behind the tensors
    gguf: Any = None  # the parsed GGUFFile, for the engine's direct quantized load

    def release(self) -> None:
        """Hand the pages of the memory maps read so far back to the page cache."""
        for m in self.maps:
            m.drop()


def _first_bytes(path: Path, n: int = 8) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def detect_format(path: str | Path) -> tuple[str, Path]:
    """(format, the file or directory to read) for a path, judged by content."""
    from minillama.formats.gguf import is_gguf
    from minillama.formats.hf import INDEX_FILE, SINGLE_FILE
    from minillama.formats.llama2c import detect_llama2c

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: expected {_ACCEPTED}")
    if path.is_dir():
        weights = (path / SINGLE_FILE).is_file() or (path / INDEX_FILE).is_file()
        if (path / "config.json").is_file() and weights:
            return "hf", path
        if (path / PARAMS_FILE).is_file():
            return "meta", path
        ggufs = [p for p in sorted(path.iterdir()) if p.is_file() and is_gguf(p)]
        bins = [p for p in sorted(path.glob("*.bin")) if detect_llama2c(p) is not None]
        found = [("gguf", p) for p in ggufs] + [("llama2c", p) for p in bins]
        if len(found) == 1:
            return found[0]
        if not found and (path / "config.json").is_file():
            return "hf", path  # read_hf_state_dict says what is missing (e.g. only pickled .bin)
        what = (f"{len(found)} candidates ({', '.join(p.name for _, p in found)}): name the file"
                if found else f"nothing recognisable; accepted: {_ACCEPTED}")
        raise ValueError(f"{path}: cannot tell which checkpoint to load: {what}")
    head = _first_bytes(path)
    if head[:4] == b"GGUF":
        return "gguf", path
    if detect_llama2c(path) is not None:
        return "llama2c", path
    if head[:2] == b"PK" and (path.parent / PARAMS_FILE).is_file():  # a .pth is a zip archive
        return "meta", path.parent
    if (path.parent / "config.json").is_file() and path.suffix == ".safetensors":
        return "hf", path.parent
    raise ValueError(f"{path}: not a checkpoint minillama recognises (first bytes {head!r}); "
                     f"accepted: {_ACCEPTED}")


def _tokenizer_beside(where: Path, vocab_size: int, allow_bin: bool = False):
    from minillama.formats.llama2c import tokenizer_from_bin
    from minillama.tokenizer import Tokenizer

    if (where / TOKENIZER_MODEL).is_file():
        return Tokenizer.from_sentencepiece(where / TOKENIZER_MODEL)
    if allow_bin and (where / TOKENIZER_BIN).is_file():
        return tokenizer_from_bin(where / TOKENIZER_BIN, vocab_size)
    return None


def read_checkpoint(path: str | Path, tokenizer: bool = True) -> Checkpoint:
    """Read any checkpoint (see the module docstring) under Meta's names and layout."""
    fmt, where = detect_format(path)
    maps: list = []
    gf, tok = None, None
    if fmt == "hf":
        from minillama.formats.hf import read_hf_config, read_hf_state_dict

        args = read_hf_config(where)
        tensors = read_hf_state_dict(where, args, maps)
        tok = _tokenizer_beside(where, args.vocab_size) if tokenizer else None
    elif fmt == "meta":
        from minillama.formats.meta import read_meta

        args, tensors = read_meta(where)
        tok = _tokenizer_beside(where, args.vocab_size) if tokenizer else None
    elif fmt == "llama2c":
        from minillama.formats.llama2c import read_llama2c

        args, tensors = read_llama2c(where, maps)
        tok = _tokenizer_beside(where.parent, args.vocab_size, allow_bin=True) if tokenizer else None
    else:
        from minillama.formats.gguf import _meta_names, args_from_gguf, read_gguf_file, tokenizer_from_gguf

        gf = read_gguf_file(where)
        maps.append(gf.map)
        args = args_from_gguf(gf)
        names = _meta_names(gf, args)
        tensors = LazyTensors({n: functools.partial(gf.float32, g) for n, g in names.items()})
        if tokenizer:
            tok = tokenizer_from_gguf(gf) or _tokenizer_beside(where.parent, args.vocab_size)
    if tok is not None and tok.vocab_size != args.vocab_size:
        raise ValueError(f"{where}: the tokenizer has {tok.vocab_size} pieces but the model's "
                         f"vocab_size is {args.vocab_size}")
    return Checkpoint(fmt, where, args, tensors, tok, maps, gf)


def find_tokenizer(path: str | Path):
    """The tokenizer that goes with a checkpoint (see the module docstring), or None."""
    fmt, where = detect_format(path)
    if fmt == "gguf":
        from minillama.formats.gguf import args_from_gguf, read_gguf_file, tokenizer_from_gguf

        gf = read_gguf_file(where)
        return tokenizer_from_gguf(gf) or _tokenizer_beside(where.parent, args_from_gguf(gf).vocab_size)
    if fmt == "llama2c":
        from minillama.formats.llama2c import read_llama2c_header

        return _tokenizer_beside(where.parent, read_llama2c_header(where).vocab_size, allow_bin=True)
    return _tokenizer_beside(where, 0)


def write_checkpoint(dst: str | Path, fmt: str, args: ModelArgs, tensors, tokenizer=None,
                     quant: str | None = None, progress: Callable[[int], None] | None = None) -> Path:
    """Write a checkpoint in fmt to dst: a directory for hf and meta; for gguf and llama2c a
    file (dst ending in .gguf / .bin) or a directory that gets model.gguf / model.bin. The
    tokenizer goes where the format keeps it. Returns the path that read_checkpoint reads."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if quant not in QUANTS[fmt]:
        raise ValueError(f"{fmt} cannot store {quant!r}; accepted: "
                         + ", ".join("none (float32)" if q is None else q for q in QUANTS[fmt]))
    dst = Path(dst)
    if fmt in FILE_NAMES:
        file = dst if dst.suffix in (".gguf", ".bin") else dst / FILE_NAMES[fmt]
        file.parent.mkdir(parents=True, exist_ok=True)
        where = file.parent
    else:
        dst.mkdir(parents=True, exist_ok=True)
        file, where = dst, dst
    if fmt == "hf":
        from minillama.formats.hf import write_hf

        write_hf(dst, args, tensors, "float16" if quant == "f16" else "float32")
    elif fmt == "meta":
        import torch

        from minillama.formats.meta import write_meta

        dtype = torch.float16 if quant == "f16" else torch.float32
        write_meta(dst, args, {n: _torch(t, dtype) for n, t in tensors.items()})
    elif fmt == "llama2c":
        from minillama.formats.llama2c import write_llama2c, write_tokenizer_bin

        write_llama2c(file, args, tensors, version=2 if quant == "q8_0" else 0)
        if tokenizer is not None:
            write_tokenizer_bin(where / TOKENIZER_BIN, tokenizer)
    else:
        from minillama.formats.gguf import write_gguf

        write_gguf(file, args, tensors, tokenizer, quant, progress=progress)
    if tokenizer is not None and fmt != "gguf":
        tokenizer.to_sentencepiece(where / TOKENIZER_MODEL)
    return file


def _torch(t, dtype):
    import numpy as np
    import torch

    t = t if isinstance(t, torch.Tensor) else torch.from_numpy(np.array(t))
    return t.to(dtype)


def convert(src: str | Path, dst: str | Path, to: str, quant: str | None = None,
            progress: bool = True) -> Path:
    """Read src in any format and write it to dst in format `to` (see write_checkpoint),
    with a progress bar over the tensors when progress is True."""
    if to not in FORMATS:
        raise ValueError(f"unknown format {to!r}; accepted: {', '.join(FORMATS)}")
    ck = read_checkpoint(src)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ck.tensors), unit="tensor", desc=f"{ck.fmt} -> {to}", leave=False)
    try:
        return write_checkpoint(dst, to, ck.args, _Progress(ck, bar), ck.tokenizer, quant)
    finally:
        if bar is not None:
            bar.close()


class _Progress(Mapping):
    """A checkpoint's tensors; the first lookup of each moves the bar, and map pages read so
    far are dropped, so a conversion holds about one tensor at a time."""

    def __init__(self, ck: Checkpoint, bar):
        self._ck, self._bar, self._seen = ck, bar, set()

    def __getitem__(self, name: str):
        t = self._ck.tensors[name]
        if name not in self._seen:
            self._seen.add(name)
            if self._bar is not None:
                self._bar.update(1)
        return t

    def __iter__(self):
        return iter(self._ck.tensors)

    def __len__(self) -> int:
        return len(self._ck.tensors)
