"""GGUF, llama.cpp's single-file format: read (bounds-checked, memory-mapped) and write.

    gf = read_gguf_file("model.gguf")       # header, metadata and tensor table; no data read
    args = args_from_gguf(gf)               # llama.* metadata -> ModelArgs
    tok = tokenizer_from_gguf(gf)           # tokenizer.ggml.* -> a minillama Tokenizer
    args, sd, tok = read_gguf("model.gguf") # Meta names, float32 (quantized tensors dequantized)
    w = engine_weights(gf, args)            # Q8_0 / Q4_0 blocks straight into the engine's formats
    write_gguf("model.gguf", args, sd, tokenizer=tok, quant="q8_0")

The layout (GGUF v3; v2 is the same with these sizes), all little-endian:

    "GGUF"  uint32 version  uint64 n_tensors  uint64 n_kv
    n_kv    x  (string key, uint32 value_type, value)
    n_tensors x (string name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml_type, uint64 offset)
    padding to `general.alignment` (default 32), then the data; each offset counts from the
    start of the data and is a multiple of the alignment.

A string is a uint64 length and that many UTF-8 bytes; an array is a uint32 element type,
a uint64 count and the elements. ne lists a tensor's dimensions innermost first, so an
(out, in) matrix has ne = [in, out]: the reverse of NumPy's shape.

Names. llama.cpp's tensors are `token_embd`, `blk.N.attn_q` ... `output_norm`, `output`
(absent when the classifier is tied to the embeddings); `GGUF_TO_META` maps them to ours.
q and k stay in Meta's interleaved rotary layout, as in Meta's and llama2.c's files.

Types read: F32, F16 and BF16 (widened to float32), Q8_0 and Q4_0. Their blocks are
exactly `minillama.quant`'s (`Q8_0_BLOCK`, `Q4_0_BLOCK`), so `engine_weights` hands them
to the engine's Q8Matrix / Q4Matrix as they are, reordered but never dequantized. Other
ggml types (the K-quants and friends) are recognised, so the table still parses and the
error says which type it is, but they are not loaded.

Every count, length, type and offset of the header is checked against the file's size
before it is used: a truncated, corrupt or foreign file raises `GGUFError` naming the file
and the field, never a crash or a partial load.
"""

from __future__ import annotations

import math
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from minillama.config import ModelArgs, RopeScaling, weight_shapes
from minillama.formats.mapped import FileMap
from minillama.quant import Q4_0_BLOCK, Q8_0_BLOCK, q4_0_quantize, q8_0_quantize

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # v1 (uint32 counts) predates August 2023 and is not read
WRITE_VERSION = 3
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSORS = 1 << 20  # sanity bounds on header counts: a 405B model has about 1,100 tensors
MAX_KV = 1 << 20
MAX_NESTING = 4  # arrays of arrays of ...

# metadata value types
(UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64,
 FLOAT64) = range(13)
VALUE_TYPES = {UINT8: "<u1", INT8: "<i1", UINT16: "<u2", INT16: "<i2", UINT32: "<u4", INT32: "<i4",
               FLOAT32: "<f4", BOOL: "<u1", UINT64: "<u8", INT64: "<i8", FLOAT64: "<f8"}  # fixed size

# ggml tensor types: id -> (name, values per block, bytes per block), from ggml's type traits
GGML_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
              6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
              10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
              13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
              16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
              19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
              22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
              26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
              30: ("BF16", 1, 2)}
F32, F16, Q4_0, Q8_0, BF16 = 0, 1, 2, 8, 30
READABLE = (F32, F16, BF16, Q8_0, Q4_0)
_BLOCKS = {Q8_0: Q8_0_BLOCK, Q4_0: Q4_0_BLOCK}
# what write_gguf's quant= means for the matrices, and general.file_type (llama_ftype)
WRITE_TYPES = {None: F32, "f32": F32, "f16": F16, "q8_0": Q8_0, "q4_0": Q4_0}
FILE_TYPES = {F32: 0, F16: 1, Q4_0: 2, Q8_0: 7}

GGUF_TO_META = {
    "token_embd.weight": "tok_embeddings.weight",
    "blk.{i}.attn_norm.weight": "layers.{i}.attention_norm.weight",
    "blk.{i}.attn_q.weight": "layers.{i}.attention.wq.weight",
    "blk.{i}.attn_k.weight": "layers.{i}.attention.wk.weight",
    "blk.{i}.attn_v.weight": "layers.{i}.attention.wv.weight",
    "blk.{i}.attn_output.weight": "layers.{i}.attention.wo.weight",
    "blk.{i}.ffn_norm.weight": "layers.{i}.ffn_norm.weight",
    "blk.{i}.ffn_gate.weight": "layers.{i}.feed_forward.w1.weight",
    "blk.{i}.ffn_down.weight": "layers.{i}.feed_forward.w2.weight",
    "blk.{i}.ffn_up.weight": "layers.{i}.feed_forward.w3.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",
}
_RULES = [(re.compile(re.escape(k).replace(r"\{i\}", r"(\d+)") + "$"), v) for k, v in GGUF_TO_META.items()]
_META_RULES = [(re.compile(re.escape(v).replace(r"\{i\}", r"(\d+)") + "$"), k)
               for k, v in GGUF_TO_META.items()]

# the SentencePiece piece types and GGUF's token types are the same numbers
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class GGUFError(ValueError):
    """A file that is not a GGUF Llama model minillama can read: what is wrong, and where."""


def gguf_to_meta_name(name: str) -> str:
    """'blk.3.ffn_up.weight' -> 'layers.3.feed_forward.w3.weight'; ValueError if unknown."""
    return _translate(name, _RULES, "GGUF", GGUF_TO_META)


def meta_to_gguf_name(name: str) -> str:
    """'layers.3.feed_forward.w3.weight' -> 'blk.3.ffn_up.weight'; ValueError if unknown."""
    return _translate(name, _META_RULES, "minillama", GGUF_TO_META.values())


def _translate(name, rules, what, known) -> str:
    for pattern, target in rules:
        m = pattern.match(name)
        if m:
            return target.replace("{i}", m.group(1)) if m.groups() else target
    raise ValueError(f"unknown {what} tensor {name!r}: not a Llama weight (known: {', '.join(known)})")


# ---------------------------------------------------------------------------------------
# Reading the header
# ---------------------------------------------------------------------------------------


class TensorInfo(NamedTuple):
    """One entry of the tensor table."""

    name: str
    shape: tuple[int, ...]  # NumPy order: ne reversed
    type: int  # ggml type id (GGML_TYPES)
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.type][0]


@dataclass
class GGUFFile:
    """A parsed GGUF header: metadata and the tensor table. The data stays in the map."""

    path: Path
    version: int
    metadata: dict[str, Any]  # key -> int, float, bool, str, or a list / NumPy array of them
    tensors: dict[str, TensorInfo]  # in file order
    alignment: int
    data_start: int
    map: FileMap

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    def raw(self, name: str) -> np.ndarray:
        """A tensor as stored, read-only and zero-copy: F32, F16 or BF16 (as uint16) values
        shaped like the tensor, or Q8_0 / Q4_0 blocks shaped (..., rows, cols // 32)."""
        t = self._info(name)
        if t.type in _BLOCKS:
            return self.map.array(t.offset, _BLOCKS[t.type], (*t.shape[:-1], t.shape[-1] // 32), name)
        dtype = {F32: "<f4", F16: "<f2", BF16: "<u2"}.get(t.type)
        if dtype is None:
            raise GGUFError(f"{self.path}: tensor {name!r} has type {t.type_name}; minillama reads "
                            f"F32, F16, BF16, Q8_0 and Q4_0 (llama.cpp's llama-quantize converts to "
                            "Q8_0 or Q4_0)")
        return self.map.array(t.offset, dtype, t.shape, name)

    def float32(self, name: str) -> np.ndarray:
        """A tensor as float32: a view for F32, else a dequantized (exact for F16/BF16) copy."""
        t, a = self._info(name), self.raw(name)
        if t.type == F32:
            return a
        if t.type == F16:
            return a.astype(np.float32)
        if t.type == BF16:
            return (a.astype(np.uint32) << 16).view(np.float32)
        q = a["qs"]
        if t.type == Q4_0:
            q = np.concatenate([q & 15, q >> 4], axis=-1).astype(np.int8) - 8
        x = q.astype(np.float32) * a["d"].astype(np.float32)[..., None]  # (..., nb, 32)
        return x.reshape(t.shape)

    def _info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise GGUFError(f"{self.path}: no tensor {name!r}")
        return self.tensors[name]


class _Cursor:
    """Reads the header's fields from a byte buffer, each read checked against its end."""

    def __init__(self, path: Path, buf: np.ndarray):
        self.path, self.buf, self.pos, self.size = path, buf, 0, len(buf)

    def fail(self, field: str, problem: str) -> GGUFError:
        return GGUFError(f"{self.path}: not a valid GGUF file: {field}: {problem} (at byte {self.pos})")

    def take(self, n: int, field: str) -> int:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(field, f"needs {n} bytes but the file ends at byte {self.size} (truncated?)")
        start, self.pos = self.pos, self.pos + n
        return start

    def scalar(self, vtype: int, field: str):
        dtype = np.dtype(VALUE_TYPES[vtype])
        start = self.take(dtype.itemsize, field)
        v = self.buf[start:start + dtype.itemsize].view(dtype)[0]
        if vtype == BOOL:
            if v > 1:
                raise self.fail(field, f"a bool must be 0 or 1, got {v}")
            return bool(v)
        return _python_number(v)

    def u32(self, field: str) -> int:
        return self.scalar(UINT32, field)

    def u64(self, field: str) -> int:
        return self.scalar(UINT64, field)

    def string(self, field: str, max_len: int | None = None) -> str:
        n = self.u64(f"{field} (length)")
        if max_len is not None and n > max_len:
            raise self.fail(field, f"length {n}; accepted: at most {max_len}")
        start = self.take(n, field)
        try:
            return bytes(self.buf[start:start + n]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(field, f"not valid UTF-8 ({e})") from None

    def value(self, vtype: int, field: str, depth: int = 0):
        if vtype in VALUE_TYPES:
            return self.scalar(vtype, field)
        if vtype == STRING:
            return self.string(field)
        if vtype != ARRAY:
            raise self.fail(field, f"value type {vtype}; accepted: 0..12")
        if depth >= MAX_NESTING:
            raise self.fail(field, f"arrays nested deeper than {MAX_NESTING}")
        etype = self.u32(f"{field} (array element type)")
        count = self.u64(f"{field} (array length)")
        if etype in VALUE_TYPES:  # fixed-size elements: one bounds check, one NumPy view
            dtype = np.dtype(VALUE_TYPES[etype])
            start = self.take(count * dtype.itemsize, f"{field} ({count} elements)")
            a = self.buf[start:start + count * dtype.itemsize].view(dtype).astype(dtype.newbyteorder("="))
            return a.astype(bool) if etype == BOOL else a
        if count > self.size - self.pos:  # every element needs at least one byte
            raise self.fail(field, f"array of {count} elements in {self.size - self.pos} bytes left")
        return [self.value(etype, f"{field}[{i}]", depth + 1) for i in range(count)]


def _python_number(v):
    """A NumPy scalar -> int, or float with float32's shortest decimal (1e-05, not 9.99e-06)."""
    if isinstance(v, np.floating):
        return float(str(v)) if v.dtype == np.float32 else float(v)
    return int(v)


def read_gguf_file(path: str | Path) -> GGUFFile:
    """Parse and check a GGUF file's header, metadata and tensor table (no tensor is read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    fm = FileMap(path)
    c = _Cursor(path, fm.bytes)
    if fm.size < 4 or bytes(fm.bytes[:4]) != MAGIC:
        got = bytes(fm.bytes[:4])
        raise GGUFError(f"{path}: not a GGUF file: the first 4 bytes are {got!r}; accepted: {MAGIC!r}")
    c.take(4, "magic")
    version = c.u32("version")
    if version not in VERSIONS:
        raise c.fail("version", f"{version}; accepted: {' or '.join(map(str, VERSIONS))}")
    n_tensors, n_kv = c.u64("tensor_count"), c.u64("metadata_kv_count")
    if n_tensors > MAX_TENSORS:
        raise c.fail("tensor_count", f"{n_tensors}; accepted: at most {MAX_TENSORS}")
    if n_kv > MAX_KV:
        raise c.fail("metadata_kv_count", f"{n_kv}; accepted: at most {MAX_KV}")
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = c.string(f"metadata key {i}", max_len=65535)
        if not key:
            raise c.fail(f"metadata key {i}", "empty; accepted: a name such as 'general.architecture'")
        if key in metadata:
            raise c.fail(f"metadata key {key!r}", "appears twice")
        metadata[key] = c.value(c.u32(f"{key} (value type)"), key)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise c.fail("general.alignment", f"{alignment!r}; accepted: a power of two")
    infos = []
    for i in range(n_tensors):
        name = c.string(f"tensor {i} name", max_len=256)
        if not name:
            raise c.fail(f"tensor {i} name", "empty; accepted: a name such as 'blk.0.attn_q.weight'")
        n_dims = c.u32(f"tensor {name!r} n_dims")
        if not 1 <= n_dims <= MAX_DIMS:
            raise c.fail(f"tensor {name!r} n_dims", f"{n_dims}; accepted: 1..{MAX_DIMS}")
        ne = [c.u64(f"tensor {name!r} ne[{d}]") for d in range(n_dims)]
        if any(n == 0 or n > 1 << 40 for n in ne):
            raise c.fail(f"tensor {name!r} ne", f"{ne}; accepted: 1..2**40 each")
        ttype = c.u32(f"tensor {name!r} type")
        if ttype not in GGML_TYPES:
            raise c.fail(f"tensor {name!r} type", f"{ttype}; not a ggml type this reader knows "
                         f"({', '.join(n for n, _, _ in GGML_TYPES.values())})")
        _, block, block_bytes = GGML_TYPES[ttype]
        if ne[0] % block:
            raise c.fail(f"tensor {name!r} ne[0]", f"{ne[0]} is not a multiple of {GGML_TYPES[ttype][0]}'s "
                         f"block of {block}")
        offset = c.u64(f"tensor {name!r} offset")
        if offset % alignment:
            raise c.fail(f"tensor {name!r} offset", f"{offset}; accepted: a multiple of the alignment "
                         f"{alignment}")
        nbytes = math.prod(ne) // block * block_bytes
        infos.append((name, tuple(reversed(ne)), ttype, offset, nbytes))
    data_start = -(-c.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for name, shape, ttype, offset, nbytes in infos:
        if name in tensors:
            raise GGUFError(f"{path}: not a valid GGUF file: tensor {name!r} appears twice")
        if data_start + offset + nbytes > fm.size:
            raise GGUFError(f"{path}: tensor {name!r} ({GGML_TYPES[ttype][0]} {list(shape)}, {nbytes} "
                            f"bytes at data offset {offset}) runs past the end of the file ({fm.size} "
                            "bytes): truncated?")
        tensors[name] = TensorInfo(name, shape, ttype, data_start + offset, nbytes)
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors.values())
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise GGUFError(f"{path}: not a valid GGUF file: tensors {a!r} and {b!r} overlap")
    return GGUFFile(path, version, metadata, tensors, alignment, data_start, fm)


def is_gguf(path: str | Path) -> bool:
    """True if the file starts with GGUF's magic (the header is checked when it is read)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Metadata -> ModelArgs and Tokenizer
# ---------------------------------------------------------------------------------------


def _key(gf: GGUFFile, key: str, kind: type, default=None, required: bool = True):
    v = gf.metadata.get(key, default)
    if v is None:
        if required:
            raise GGUFError(f"{gf.path}: metadata {key!r} is missing; a llama GGUF file needs it")
        return None
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    if not ok:
        raise GGUFError(f"{gf.path}: metadata {key!r} is {v!r}; accepted: a {kind.__name__}")
    return v


def args_from_gguf(gf: GGUFFile) -> ModelArgs:
    """ModelArgs from the llama.* metadata, checked against the tensor table."""
    arch = _key(gf, "general.architecture", str)
    if arch != "llama":
        raise GGUFError(f"{gf.path}: general.architecture is {arch!r}; accepted: 'llama'")
    dim = _key(gf, "llama.embedding_length", int)
    n_heads = _key(gf, "llama.attention.head_count", int)
    n_kv = _key(gf, "llama.attention.head_count_kv", int, default=n_heads)
    rope_dims = _key(gf, "llama.rope.dimension_count", int, default=dim // max(n_heads, 1))
    if n_heads <= 0 or dim % n_heads or rope_dims != dim // n_heads:
        raise GGUFError(f"{gf.path}: llama.rope.dimension_count is {rope_dims} with embedding_length "
                        f"{dim} and head_count {n_heads}; accepted: RoPE over the whole head "
                        f"(dimension_count = {dim} / {n_heads})")
    if "token_embd.weight" not in gf.tensors:
        raise GGUFError(f"{gf.path}: no tensor 'token_embd.weight'")
    vocab = gf.tensors["token_embd.weight"].shape[0]
    if _key(gf, "llama.vocab_size", int, default=vocab) != vocab:
        raise GGUFError(f"{gf.path}: llama.vocab_size is {gf.get('llama.vocab_size')} but token_embd "
                        f"has {vocab} rows")
    if "rope_freqs.weight" in gf.tensors:
        raise GGUFError(f"{gf.path}: has a rope_freqs tensor (Llama 3.1's per-frequency RoPE scaling); "
                        "accepted: plain RoPE or linear scaling")
    scaling = None
    stype = _key(gf, "llama.rope.scaling.type", str, default="none")
    if stype == "linear":
        scaling = RopeScaling("linear", _key(gf, "llama.rope.scaling.factor", float))
    elif stype != "none":
        raise GGUFError(f"{gf.path}: llama.rope.scaling.type is {stype!r}; accepted: 'none' or 'linear'")
    try:
        return ModelArgs(
            dim=dim, n_layers=_key(gf, "llama.block_count", int), n_heads=n_heads, n_kv_heads=n_kv,
            vocab_size=vocab, hidden_dim=_key(gf, "llama.feed_forward_length", int),
            norm_eps=_key(gf, "llama.attention.layer_norm_rms_epsilon", float),
            rope_theta=_key(gf, "llama.rope.freq_base", float, default=10000.0),
            rope_scaling=scaling, max_seq_len=_key(gf, "llama.context_length", int),
            tie_embeddings="output.weight" not in gf.tensors)
    except (TypeError, ValueError) as e:
        raise GGUFError(f"{gf.path}: the llama.* metadata is not a valid model: {e}") from None


def tokenizer_from_gguf(gf: GGUFFile):
    """The tokenizer.ggml.* vocabulary as a minillama Tokenizer (SentencePiece 'llama' kind),
    or None when the file has no vocabulary."""
    from minillama.formats.sentencepiece import bpe_model
    from minillama.tokenizer import Tokenizer

    tokens = gf.get("tokenizer.ggml.tokens")
    if tokens is None:
        return None
    kind = _key(gf, "tokenizer.ggml.model", str)
    if kind != "llama":
        raise GGUFError(f"{gf.path}: tokenizer.ggml.model is {kind!r}; minillama's tokenizer reads "
                        "'llama' (SentencePiece BPE, Llama 1/2) vocabularies, not 'gpt2' (Llama 3)")
    n = len(tokens)
    scores = gf.get("tokenizer.ggml.scores", np.zeros(n, np.float32))
    types = gf.get("tokenizer.ggml.token_type", np.full(n, NORMAL, np.int32))
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise GGUFError(f"{gf.path}: tokenizer.ggml.tokens must be an array of strings")
    for key, a in (("tokenizer.ggml.scores", scores), ("tokenizer.ggml.token_type", types)):
        if not isinstance(a, np.ndarray) or a.shape != (n,):
            raise GGUFError(f"{gf.path}: {key} must be a numeric array of {n} values (one per token)")
    if not set(np.unique(types).tolist()) <= {NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE}:
        raise GGUFError(f"{gf.path}: tokenizer.ggml.token_type has values outside 1..6")
    ids = {}
    for what, default in (("bos", 1), ("eos", 2), ("unknown", 0)):
        i = _key(gf, f"tokenizer.ggml.{what}_token_id", int, default=default)
        if not 0 <= i < n:
            raise GGUFError(f"{gf.path}: tokenizer.ggml.{what}_token_id is {i}; accepted: 0..{n - 1}")
        ids[what] = i
    pieces = [(t, float(s), int(k)) for t, s, k in zip(tokens, scores.tolist(), types.tolist())]
    model = bpe_model(pieces, byte_fallback=BYTE in types,
                      add_dummy_prefix=bool(gf.get("tokenizer.ggml.add_space_prefix", True)))
    model.trainer_spec.values.update(bos_piece=tokens[ids["bos"]], eos_piece=tokens[ids["eos"]],
                                     unk_piece=tokens[ids["unknown"]])
    try:
        return Tokenizer(model)
    except ValueError as e:
        raise GGUFError(f"{gf.path}: the tokenizer.ggml vocabulary is not usable: {e}") from None


# ---------------------------------------------------------------------------------------
# Tensors: Meta names, float32 or the engine's quantized formats
# ---------------------------------------------------------------------------------------


def _meta_names(gf: GGUFFile, args: ModelArgs) -> dict[str, str]:
    """Our name -> GGUF name for every weight, each checked against args' shape."""
    expected = weight_shapes(args)
    names = {}
    for gname, t in gf.tensors.items():
        try:
            name = gguf_to_meta_name(gname)
        except ValueError as e:
            raise GGUFError(f"{gf.path}: {e}") from None
        if name not in expected:
            raise GGUFError(f"{gf.path}: unexpected tensor {gname!r}: llama.block_count is {args.n_layers}")
        if t.shape != expected[name]:
            raise GGUFError(f"{gf.path}: tensor {gname!r} has shape {list(t.shape)} (ne "
                            f"{list(reversed(t.shape))}), expected {list(expected[name])} from the "
                            "llama.* metadata")
        names[name] = gname
    missing = [meta_to_gguf_name(n) for n in expected if n not in names]
    if missing:
        raise GGUFError(f"{gf.path}: missing tensors: {', '.join(missing)}")
    return names


def read_gguf(path: str | Path) -> tuple[ModelArgs, dict[str, np.ndarray], Any]:
    """(ModelArgs, Meta-named float32 arrays, Tokenizer or None). F32 tensors are views of
    the memory map; F16, BF16, Q8_0 and Q4_0 are dequantized. No output.weight when tied."""
    gf = read_gguf_file(path)
    args = args_from_gguf(gf)
    sd = {name: gf.float32(gname) for name, gname in _meta_names(gf, args).items()}
    return args, sd, tokenizer_from_gguf(gf)


def engine_weights(gf: GGUFFile, args: ModelArgs, release: Callable[[], None] | None = None):
    """The engine's Weights straight from the file: a matrix kind whose tensors are all Q8_0
    (or all Q4_0) becomes a Q8Matrix (Q4Matrix) of the same blocks, reordered into chunks
    but never dequantized; float kinds become float32. Mixed kinds are dequantized, with a
    warning. The embeddings are float32 (one row is read per token); when tied, the
    classifier is token_embd in its stored format."""
    from minillama.engine import MATRIX_KINDS, Weights, _tensor_names
    from minillama.kernels import F32Matrix
    from minillama.kernels_quant import Q4Matrix, Q8Matrix

    names = _meta_names(gf, args)
    release = release or gf.map.drop
    L = args.n_layers

    def f32_stack(meta: str) -> np.ndarray:
        first = gf.tensors[names[f"layers.0.{meta}"]].shape
        out = np.empty((L, *first), np.float32)
        for l in range(L):
            out[l] = gf.float32(names[f"layers.{l}.{meta}"])
        release()
        return out

    def matrix(tensor_names: list[str], kind: str):
        types = {gf.tensors[n].type for n in tensor_names}
        if len(types) == 1 and next(iter(types)) in _BLOCKS:
            t = next(iter(types))
            blocks = [gf.raw(n) for n in tensor_names]  # each (rows, nb) records
            qs = np.stack([b["qs"] for b in blocks])  # (n_mats, rows, nb, 32 | 16)
            d = np.stack([b["d"].astype(np.float32) for b in blocks])  # (n_mats, rows, nb)
            W = (Q8Matrix if t == Q8_0 else Q4Matrix).from_blocks(qs, d)
        else:
            if len(types) > 1:
                warnings.warn(f"{gf.path}: {kind} mixes types {sorted(GGML_TYPES[t][0] for t in types)}; "
                              "dequantized to float32", stacklevel=3)
            W = F32Matrix(np.stack([gf.float32(n) for n in tensor_names]))
        release()
        return W

    emb = np.array(gf.float32("token_embd.weight"), np.float32, order="C")  # a copy, float32
    release()
    mats = {}
    for kind in MATRIX_KINDS:
        if kind == "output" and args.tie_embeddings and gf.tensors["token_embd.weight"].type not in _BLOCKS:
            mats[kind] = F32Matrix(emb[None])  # the same memory, as weights_from_state_dict does
            continue
        if kind == "output":
            src = ["token_embd.weight" if args.tie_embeddings else "output.weight"]
        else:
            src = [names[n] for n in _tensor_names(args, kind)]
        mats[kind] = matrix(src, kind)
    return Weights(tok_embeddings=emb, attention_norm=f32_stack("attention_norm.weight"),
                   ffn_norm=f32_stack("ffn_norm.weight"),
                   norm=np.array(gf.float32("output_norm.weight"), np.float32), **mats)


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _pack_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _pack_value(v) -> bytes:
    """(uint32 type, value) for the Python values write_gguf uses."""
    if isinstance(v, bool):
        return struct.pack("<IB", BOOL, v)
    if isinstance(v, int):
        return struct.pack("<II", UINT32, v)
    if isinstance(v, float):
        return struct.pack("<If", FLOAT32, v)
    if isinstance(v, str):
        return struct.pack("<I", STRING) + _pack_string(v)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return struct.pack("<IIQ", ARRAY, STRING, len(v)) + b"".join(map(_pack_string, v))
    if isinstance(v, np.ndarray):
        etype = {np.dtype("float32"): FLOAT32, np.dtype("int32"): INT32}[v.dtype]
        return struct.pack("<IIQ", ARRAY, etype, v.size) + v.astype(v.dtype.newbyteorder("<")).tobytes()
    raise TypeError(f"no GGUF encoding for {v!r}")


def gguf_metadata(args: ModelArgs, tokenizer=None, quant: str | None = None,
                  name: str = "minillama") -> dict[str, Any]:
    """The metadata write_gguf writes, in order: general.*, llama.*, tokenizer.ggml.*."""
    if args.rope_scaling is not None and args.rope_scaling.type != "linear":
        raise ValueError(f"GGUF's llama metadata holds no rope scaling or 'linear'; got "
                         f"{args.rope_scaling.type!r} (its llama.cpp form is a rope_freqs tensor, not "
                         "written here)")
    md: dict[str, Any] = {
        "general.architecture": "llama", "general.name": name,
        "general.file_type": FILE_TYPES[WRITE_TYPES[quant]],
        "llama.context_length": args.max_seq_len, "llama.embedding_length": args.dim,
        "llama.block_count": args.n_layers, "llama.feed_forward_length": args.ffn_hidden_dim,
        "llama.attention.head_count": args.n_heads, "llama.attention.head_count_kv": args.n_kv_heads,
        "llama.rope.dimension_count": args.head_dim, "llama.rope.freq_base": float(args.rope_theta),
        "llama.attention.layer_norm_rms_epsilon": float(args.norm_eps),
        "llama.vocab_size": args.vocab_size,
    }
    if args.rope_scaling is not None:
        md["llama.rope.scaling.type"] = "linear"
        md["llama.rope.scaling.factor"] = float(args.rope_scaling.factor)
    if tokenizer is not None:
        if tokenizer.vocab_size != args.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} pieces, the model vocab_size "
                             f"{args.vocab_size}")
        n = tokenizer.vocab_size
        md.update({
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": [tokenizer.id_to_piece(i) for i in range(n)],
            "tokenizer.ggml.scores": np.array([tokenizer.score(i) for i in range(n)], np.float32),
            "tokenizer.ggml.token_type": np.array([_TYPE_IDS[tokenizer.piece_type(i)] for i in range(n)],
                                                  np.int32),
            "tokenizer.ggml.bos_token_id": tokenizer.bos_id, "tokenizer.ggml.eos_token_id": tokenizer.eos_id,
            "tokenizer.ggml.unknown_token_id": tokenizer.unk_id,
            "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
            "tokenizer.ggml.add_space_prefix": bool(tokenizer.add_dummy_prefix),
        })
    return md


_TYPE_IDS = {"NORMAL": NORMAL, "UNKNOWN": UNKNOWN, "CONTROL": CONTROL, "USER_DEFINED": USER_DEFINED,
             "UNUSED": UNUSED, "BYTE": BYTE}


def _as_f32(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy()
    return np.ascontiguousarray(t, dtype=np.float32)


def _tensor_type(shape: tuple[int, ...], quant: str | None, name: str) -> int:
    """1-D tensors (norms) in F32, as llama.cpp keeps them; matrices in the requested type,
    or F32 (with a warning) when their rows are not whole blocks of 32."""
    t = WRITE_TYPES[quant]
    if len(shape) == 1:
        return F32
    if t in _BLOCKS and shape[-1] % 32:
        warnings.warn(f"{name}: rows of {shape[-1]} are not whole blocks of 32; written as F32", stacklevel=3)
        return F32
    return t


def _encode(x: np.ndarray, ttype: int, name: str) -> np.ndarray:
    if ttype == F32:
        return x.astype("<f4", copy=False)
    if ttype == F16:
        if np.abs(x).max(initial=0) > 65504:
            raise ValueError(f"{name} has values beyond fp16's range (65504); write it as f32")
        return x.astype("<f2")
    return (q8_0_quantize if ttype == Q8_0 else q4_0_quantize)(x, name=name).data


def write_gguf(path: str | Path, args: ModelArgs, state_dict, tokenizer=None, quant: str | None = None,
               name: str = "minillama", progress: Callable[[int], None] | None = None) -> None:
    """Write Meta-named tensors (NumPy or torch) as a GGUF v3 llama file that llama.cpp loads.

    quant: None or "f32" (everything F32), "f16", "q8_0" or "q4_0" for the matrices (the
    embeddings and classifier included, as llama-quantize does); norms stay F32. The
    tokenizer (a minillama Tokenizer), if given, goes into tokenizer.ggml.*. progress(n)
    is called with the bytes of each tensor written."""
    if quant not in WRITE_TYPES:
        raise ValueError(f"quant is {quant!r}; accepted: None, 'f32', 'f16', 'q8_0', 'q4_0'")
    path = Path(path)
    md = gguf_metadata(args, tokenizer, quant, name)
    expected = weight_shapes(args)
    sd = dict(state_dict)
    if args.tie_embeddings and "output.weight" in sd:
        if not np.array_equal(_as_f32(sd.pop("output.weight")), _as_f32(sd["tok_embeddings.weight"])):
            raise ValueError("tie_embeddings is True but output.weight differs from tok_embeddings.weight")
    missing, unknown = set(expected) - set(sd), set(sd) - set(expected)
    if missing or unknown:
        raise ValueError(f"the state dict does not match args: missing {sorted(missing)}, "
                         f"unexpected {sorted(unknown)}")
    for n, shape in expected.items():
        if tuple(sd[n].shape) != shape:
            raise ValueError(f"{n} has shape {tuple(sd[n].shape)}, expected {shape}")
    order = [(n, meta_to_gguf_name(n), expected[n], _tensor_type(expected[n], quant, n)) for n in expected]
    head = [MAGIC, struct.pack("<IQQ", WRITE_VERSION, len(order), len(md))]
    head += [_pack_string(k) + _pack_value(v) for k, v in md.items()]
    offset = 0
    for _, gname, shape, ttype in order:
        _, block, block_bytes = GGML_TYPES[ttype]
        head.append(_pack_string(gname) + struct.pack(f"<I{len(shape)}QIQ", len(shape), *reversed(shape),
                                                      ttype, offset))
        offset += -(-(math.prod(shape) // block * block_bytes) // DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT
    header = b"".join(head)
    try:
        with open(path, "wb") as f:
            f.write(header + bytes(-len(header) % DEFAULT_ALIGNMENT))
            for n, _, _, ttype in order:
                data = _encode(_as_f32(sd[n]), ttype, n).tobytes()
                f.write(data + bytes(-len(data) % DEFAULT_ALIGNMENT))
                if progress is not None:
                    progress(len(data))
    except BaseException:
        path.unlink(missing_ok=True)  # never leave a truncated file behind
        raise
