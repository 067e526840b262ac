"""Read and write llama2.c checkpoints (v0, v1, v2) and its tokenizer.bin, with NumPy only.

    write_llama2c("model.bin", args, state_dict)          # v0: what llama2.c's `run` reads
    write_llama2c("model_q80.bin", args, state_dict, version=2)   # what `runq` reads
    args, state_dict = read_llama2c("model.bin")          # Meta names, float32 arrays

Layouts (checked against run.c, runq.c and llama2.c's export.py and tokenizer.py). All
numbers are little-endian, tensors row-major, `[x]` means "for every layer, layer 0 first":

- v0 (legacy, `run`): 7 int32 `dim hidden_dim n_layers n_heads n_kv_heads vocab_size seq_len`
  (28 bytes, a negative vocab_size flags an unshared classifier), then fp32 `tok_embeddings,
  [attention_norm], [wq], [wk], [wv], [wo], [ffn_norm], [w1], [w2], [w3], norm`, the two old
  RoPE tables cos and sin (seq_len, head_dim // 2) each (run.c skips them), then `output`
  when unshared.
- v1: a 256-byte header: uint32 magic 0x616b3432 ("ak42"), int32 version, the 7 int32 (vocab
  positive), uint8 shared_classifier, zeros. Then fp32 `[attention_norm], [ffn_norm], norm,
  tok_embeddings, [wq], [wk], [wv], [wo], [w1], [w2], [w3]`, then `output` when unshared.
- v2 (`runq`): v1's header with version 2 and an int32 group_size right after the flag byte
  (offset 37, unaligned). The norms in fp32 as in v1, then the v1 order of matrices, each one
  (per layer, not per stack) as its int8 values followed by its fp32 scales (Q8_0: see
  quantize_q80). runq.c needs dim % group_size == 0, and hidden_dim too (see _group_size).
- tokenizer.bin: uint32 max_token_length, then per token float32 score, int32 length, bytes.

q and k stay in Meta's interleaved rotary layout, which run.c rotates as pairs (2i, 2i+1):
no permutation, unlike the HF format. llama2.c fixes rope_theta = 10000, norm_eps = 1e-5 and
plain RoPE, so the reader returns those and the writer refuses any other value.
"""

from __future__ import annotations

import functools
import math
import numbers
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minillama.config import ModelArgs
from minillama.formats.mapped import FileMap, LazyTensors

MAGIC = 0x616B3432  # a uint32 whose hex spells "ak42"; little-endian on disk: b"24ka"
HEADER_SIZE = 256  # v1 and v2
V0_PARAMS = struct.Struct("<7i")  # the v0 header: 28 bytes
V12_PARAMS = struct.Struct("<Ii7iB")  # magic, version, 7 params, shared_classifier: 37 bytes
GROUP_SIZE = struct.Struct("<i")  # v2 only, at offset V12_PARAMS.size
MAX_DIM = 1 << 20  # a sanity bound on every header number: real models are far below it
ROPE_THETA, NORM_EPS = 10000.0, 1e-5  # llama2.c's fixed values (run.c)
SPACE = "\u2581"  # SentencePiece's "▁"; tokenizer.bin stores a plain space instead

_PARAM_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
_LAYER_NAMES = {  # llama2.c's per-layer tensor -> our name under layers.{l}.
    "attention_norm": "attention_norm.weight", "ffn_norm": "ffn_norm.weight",
    **{f"w{k}": f"attention.w{k}.weight" for k in "qkvo"},
    **{f"w{k}": f"feed_forward.w{k}.weight" for k in "123"},
}
_ORDER = {  # file order; "freqs_cos"/"freqs_sin" are v0's unused RoPE tables
    0: ("tok_embeddings", "attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3",
        "norm", "freqs_cos", "freqs_sin", "output"),
    1: ("attention_norm", "ffn_norm", "norm", "tok_embeddings", "wq", "wk", "wv", "wo",
        "w1", "w2", "w3", "output"),
}
_ORDER[2] = _ORDER[1]  # same order; v2 stores every matrix (2-D tensor) as Q8_0


class Llama2cHeader(NamedTuple):
    """What a llama2.c checkpoint's header says; vocab_size is always positive here."""

    version: int  # 0 (legacy), 1 (fp32) or 2 (Q8_0)
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool  # True: the classifier is tok_embeddings (tied)
    group_size: int | None  # Q8_0 group size (v2); None for v0 and v1


# ---------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------


def _layout(h: Llama2cHeader) -> list[tuple[str, tuple[int, ...]]]:
    """(our name, shape) of every tensor in file order."""
    hd = h.dim // h.n_heads
    q_dim, kv_dim = h.n_heads * hd, h.n_kv_heads * hd
    shapes = {
        "attention_norm": (h.dim,), "ffn_norm": (h.dim,), "norm": (h.dim,),
        "wq": (q_dim, h.dim), "wk": (kv_dim, h.dim), "wv": (kv_dim, h.dim), "wo": (h.dim, q_dim),
        "w1": (h.hidden_dim, h.dim), "w2": (h.dim, h.hidden_dim), "w3": (h.hidden_dim, h.dim),
        "tok_embeddings": (h.vocab_size, h.dim), "output": (h.vocab_size, h.dim),
        "freqs_cos": (h.seq_len, hd // 2), "freqs_sin": (h.seq_len, hd // 2),
    }
    out = []
    for kind in _ORDER[h.version]:
        if kind == "output" and h.shared_classifier:
            continue
        if kind in _LAYER_NAMES:
            out += [(f"layers.{l}.{_LAYER_NAMES[kind]}", shapes[kind]) for l in range(h.n_layers)]
        else:
            out.append((kind if kind.startswith("freqs") else f"{kind}.weight", shapes[kind]))
    return out


def _quantized(h: Llama2cHeader, shape: tuple[int, ...]) -> bool:
    return h.version == 2 and len(shape) == 2  # v2 keeps only the 1-D norms in fp32


def _header_size(h: Llama2cHeader) -> int:
    return V0_PARAMS.size if h.version == 0 else HEADER_SIZE


def _file_size(h: Llama2cHeader) -> int:
    """The exact size in bytes of a file with this header."""
    size = _header_size(h)
    for _, shape in _layout(h):
        n = math.prod(shape)
        size += n + 4 * (n // h.group_size) if _quantized(h, shape) else 4 * n  # int8+scales | fp32
    return size


def _bad(path, field: str, value, accepted: str) -> ValueError:
    return ValueError(f"{path}: not a valid llama2.c checkpoint: {field} is {value}; "
                      f"accepted: {accepted}")


def _check_params(path, h: Llama2cHeader) -> None:
    """Reject header numbers no llama2.c model has (what a GGUF or safetensors file gives)."""
    v0 = " (read as v0: the file lacks the 'ak42' magic of v1/v2)" if h.version == 0 else ""
    for field in _PARAM_FIELDS:
        value = getattr(h, field)
        if not 0 < value <= MAX_DIM:
            raise _bad(path, field, value, f"1..{MAX_DIM}{v0}")
    if h.dim % h.n_heads:
        raise _bad(path, "n_heads", h.n_heads, f"a divisor of dim = {h.dim}")
    if h.n_heads % h.n_kv_heads:
        raise _bad(path, "n_kv_heads", h.n_kv_heads, f"a divisor of n_heads = {h.n_heads}")
    if (h.dim // h.n_heads) % 2:
        raise _bad(path, "n_heads", h.n_heads, f"a value making head_dim = dim / n_heads even "
                   f"(RoPE rotates pairs); dim is {h.dim}")
    if h.version == 2 and (h.group_size <= 0 or h.dim % h.group_size):
        raise _bad(path, "group_size", h.group_size, f"a positive divisor of dim = {h.dim} "
                   "(runq.c quantizes vectors of size dim in groups)")


# ---------------------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------------------


def _parse_header(path, head: bytes) -> Llama2cHeader:
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] == MAGIC:
        if len(head) < HEADER_SIZE:
            raise _bad(path, "file size", f"{len(head)} bytes",
                       f"at least the {HEADER_SIZE}-byte header of a v1/v2 file")
        _, version, *params, shared = V12_PARAMS.unpack_from(head)
        if version not in (1, 2):
            raise _bad(path, "version", version, "1 or 2 after the 'ak42' magic (v0 has no magic)")
        if shared not in (0, 1):
            raise _bad(path, "shared_classifier", shared, "0 or 1")
        group = GROUP_SIZE.unpack_from(head, V12_PARAMS.size)[0] if version == 2 else None
        return Llama2cHeader(version, *params, bool(shared), group)
    if len(head) < V0_PARAMS.size:
        raise _bad(path, "file size", f"{len(head)} bytes",
                   f"at least the {V0_PARAMS.size}-byte header of a v0 file")
    *params, vocab, seq_len = V0_PARAMS.unpack_from(head)
    return Llama2cHeader(0, *params, abs(vocab), seq_len, vocab > 0, None)  # run.c: vocab > 0


def _check_size(path, h: Llama2cHeader, size: int) -> None:
    expected = _file_size(h)
    if size == expected:
        return
    flipped = h._replace(shared_classifier=not h.shared_classifier)
    hint = "" if h.version or size != _file_size(flipped) else (
        f" (the size with {'an unshared' if h.shared_classifier else 'a shared'} classifier: "
        "is the sign of vocab_size wrong?)")
    raise _bad(path, "file size", f"{size} bytes", f"exactly {expected} bytes, what the v{h.version} "
               f"header {tuple(h)} implies{hint}")


def read_llama2c_header(path: str | Path) -> Llama2cHeader:
    """The checked header of a llama2.c checkpoint (v0, v1 or v2), file size included."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
    h = _parse_header(path, head)
    _check_params(path, h)
    _check_size(path, h, path.stat().st_size)
    return h


def detect_llama2c(path: str | Path) -> int | None:
    """The llama2.c version (0, 1 or 2) of a file, or None if it is not a valid checkpoint."""
    try:
        return read_llama2c_header(path).version
    except ValueError:
        return None


def _pack_header(h: Llama2cHeader) -> bytes:
    params = [getattr(h, f) for f in _PARAM_FIELDS]
    if h.version == 0:
        params[5] = h.vocab_size if h.shared_classifier else -h.vocab_size
        return V0_PARAMS.pack(*params)
    head = V12_PARAMS.pack(MAGIC, h.version, *params, int(h.shared_classifier))
    if h.version == 2:
        head += GROUP_SIZE.pack(h.group_size)
    return head.ljust(HEADER_SIZE, b"\0")


# ---------------------------------------------------------------------------------------
# Q8_0
# ---------------------------------------------------------------------------------------


def quantize_q80(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Q8_0, as export.py: per group of group_size consecutive values of w (row-major),
    scale = max|x| / 127 and q = round(x / scale), halves to even, in float32. w (any shape,
    size % group_size == 0) -> (int8 q shaped like w, float32 scales (w.size // group_size,),
    max |q * scale - w|)."""
    x = np.asarray(w, dtype=np.float32)
    if group_size <= 0 or x.size % group_size:
        raise ValueError(f"group_size {group_size} does not divide the tensor's size {x.size}; "
                         "accepted: a positive divisor")
    groups = x.reshape(-1, group_size)  # (n_groups, group_size)
    scale = np.abs(groups).max(axis=1) / np.float32(127.0)  # float32, as export.py computes it
    if not np.isfinite(scale).all():
        raise ValueError("the tensor has inf or NaN values; Q8_0 accepts finite values only")
    # an all-zero group would divide 0 by 0: give it q = 0 and scale 0, which dequantize to 0
    safe = np.where(scale > 0, scale, np.float32(1.0))
    # np.round rounds halves to even, as export.py's torch.round does
    q = np.round(groups / safe[:, None]).astype(np.int8)  # (n_groups, group_size)
    err = np.abs(q * scale[:, None] - groups).max() if x.size else 0.0
    return q.reshape(x.shape), scale, float(err)


def _dequantize(q: np.ndarray, scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    groups = q.reshape(scale.size, -1).astype(np.float32)  # (n_groups, group_size)
    return (groups * scale[:, None]).reshape(shape)


def _group_size(args: ModelArgs, requested: int) -> int:
    """Halve the requested group size until it divides dim, as export.py does, and hidden_dim
    too: runq.c quantizes the (hidden_dim,) FFN activation in groups and drops a remainder."""
    if isinstance(requested, bool) or not isinstance(requested, numbers.Integral) or requested <= 0:
        raise ValueError(f"group_size is {requested!r}; accepted: a positive int")
    gs = int(requested)
    while args.dim % gs or args.ffn_hidden_dim % gs:
        gs //= 2  # ends at 1 at worst, which divides everything
    return gs


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------


def _as_f32(t) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor: converted without importing torch here
        t = np.asarray(t.detach().float().cpu())
    return np.ascontiguousarray(t, dtype="<f4")


def _check_state_dict(path, args: ModelArgs, sd: dict, layout: list) -> None:
    expected = {name: shape for name, shape in layout if not name.startswith("freqs")}
    optional = {"output.weight"} if args.tie_embeddings else set()  # tied: absent or equal
    missing, unknown = set(expected) - set(sd), set(sd) - set(expected) - optional
    if missing or unknown:
        raise ValueError(f"{path}: the state dict does not match args: missing {sorted(missing)}, "
                         f"unexpected {sorted(unknown)}")
    for name, shape in expected.items():
        if tuple(sd[name].shape) != shape:
            raise ValueError(f"{path}: {name} has shape {tuple(sd[name].shape)}; accepted: {shape}")
    if "output.weight" in optional and "output.weight" in sd:
        if not np.array_equal(_as_f32(sd["output.weight"]), _as_f32(sd["tok_embeddings.weight"])):
            raise ValueError(f"{path}: args.tie_embeddings is True but output.weight differs from "
                             "tok_embeddings.weight; accepted: absent or equal")


def _rope_tables(h: Llama2cHeader) -> dict[str, np.ndarray]:
    """v0's unused cos and sin tables (seq_len, head_dim // 2), theta 10000, as export.py writes."""
    hd = h.dim // h.n_heads
    freqs = 1.0 / ROPE_THETA ** (np.arange(0, hd, 2) / hd)  # (hd // 2,)
    angles = np.outer(np.arange(h.seq_len), freqs)  # (seq_len, hd // 2)
    return {"freqs_cos": np.cos(angles), "freqs_sin": np.sin(angles)}


def write_llama2c(path: str | Path, args: ModelArgs, state_dict: dict[str, np.ndarray],
                  version: int = 0, group_size: int = 64) -> None:
    """Write Meta-named tensors (numpy or torch) as a llama2.c v0, v1 or v2 (Q8_0) file; v2's
    group_size is halved until it divides dim and hidden_dim (the header records the result)."""
    if version not in _ORDER:
        raise ValueError(f"version is {version!r}; accepted: 0 (run.c), 1 (fp32) or 2 (runq.c)")
    if (args.rope_theta, args.norm_eps, args.rope_scaling) != (ROPE_THETA, NORM_EPS, None):
        raise ValueError(f"llama2.c fixes rope_theta={ROPE_THETA}, norm_eps={NORM_EPS} and no rope "
                         f"scaling; got {args.rope_theta}, {args.norm_eps}, {args.rope_scaling}")
    h = Llama2cHeader(version, args.dim, args.ffn_hidden_dim, args.n_layers, args.n_heads,
                      args.n_kv_heads, args.vocab_size, args.max_seq_len, args.tie_embeddings,
                      _group_size(args, group_size) if version == 2 else None)
    _check_params(path, h)  # never write what read_llama2c would refuse
    layout = _layout(h)
    _check_state_dict(path, args, state_dict, layout)
    tables = _rope_tables(h) if version == 0 else {}
    try:
        with open(path, "wb") as f:
            f.write(_pack_header(h))
            for name, shape in layout:
                x = _as_f32(tables[name] if name in tables else state_dict[name])
                if _quantized(h, shape):
                    q, scale, _ = quantize_q80(x, h.group_size)  # raises on inf or NaN
                    f.write(q.tobytes() + scale.astype("<f4").tobytes())
                else:
                    x.tofile(f)
    except BaseException:
        Path(path).unlink(missing_ok=True)  # never leave a truncated checkpoint behind
        raise


def read_llama2c(path: str | Path, maps: list | None = None) -> tuple[ModelArgs, dict[str, np.ndarray]]:
    """(ModelArgs, Meta-named float32 arrays) from a llama2.c v0/v1/v2 file: v0 and v1 tensors
    are read-only views of a memory map (a FileMap, appended to maps if given); v2's are
    dequantized when looked up (a Mapping that keeps none of them). ModelArgs gets llama2.c's
    fixed norm_eps 1e-5 and rope_theta 10000; no output.weight if tied."""
    path = Path(path)
    h = read_llama2c_header(path)
    fm = FileMap(path)
    if maps is not None:
        maps.append(fm)
    sd, pos = {}, _header_size(h)
    for name, shape in _layout(h):
        n = math.prod(shape)
        if name.startswith("freqs"):  # ignored, as run.c does
            pos += 4 * n
        elif _quantized(h, shape):
            q = fm.array(pos, "i1", (n,), name)
            scale = fm.array(pos + n, "<f4", (n // h.group_size,), name)
            sd[name] = functools.partial(_dequantize, q, scale, shape)
            pos += n + 4 * (n // h.group_size)
        else:
            sd[name] = fm.array(pos, "<f4", shape, name)
            pos += 4 * n
    if h.version == 2:  # dequantized one tensor at a time, when looked up
        sd = LazyTensors({k: v if callable(v) else (lambda v=v: v) for k, v in sd.items()})
    args = ModelArgs(dim=h.dim, n_layers=h.n_layers, n_heads=h.n_heads, n_kv_heads=h.n_kv_heads,
                     vocab_size=h.vocab_size, hidden_dim=h.hidden_dim, norm_eps=NORM_EPS,
                     rope_theta=ROPE_THETA, max_seq_len=h.seq_len,
                     tie_embeddings=h.shared_classifier)
    return args, sd


# ---------------------------------------------------------------------------------------
# tokenizer.bin
# ---------------------------------------------------------------------------------------


def _bin_piece(tokenizer, i: int) -> bytes:
    """Piece i as llama2.c's tokenizer.py exports it: BOS/EOS on lines of their own, "▁" as a
    space, byte pieces kept as the text "<0xAB>" (run.c decodes them), utf-8."""
    if i == tokenizer.bos_id:
        return b"\n<s>\n"
    if i == tokenizer.eos_id:
        return b"\n</s>\n"
    return tokenizer.id_to_piece(i).replace(SPACE, " ").encode("utf-8")


def write_tokenizer_bin(path: str | Path, tokenizer) -> None:
    """Write a minillama Tokenizer's pieces and scores as llama2.c's tokenizer.bin."""
    pieces = [_bin_piece(tokenizer, i) for i in range(tokenizer.vocab_size)]
    with open(path, "wb") as f:
        f.write(struct.pack("<I", max(map(len, pieces))))  # max_token_length
        for i, piece in enumerate(pieces):
            f.write(struct.pack("<fI", tokenizer.score(i), len(piece)) + piece)


def read_tokenizer_bin(path: str | Path, vocab_size: int) -> tuple[list[bytes], list[float], int]:
    """(pieces as raw bytes, float scores, max_token_length) of a tokenizer.bin with vocab_size
    entries (the file does not store its size: the checkpoint's header does)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ValueError(f"vocab_size is {vocab_size!r}; accepted: a positive int")
    data = Path(path).read_bytes()
    ends = f"{path}: file ends at byte {len(data)} inside {{}}; accepted: max_token_length, then " \
           f"{vocab_size} entries of (float32 score, int32 length, bytes)"
    if len(data) < 4:
        raise ValueError(ends.format("max_token_length"))
    max_len, pieces, scores, pos = struct.unpack_from("<I", data)[0], [], [], 4
    for i in range(vocab_size):
        if pos + 8 > len(data):
            raise ValueError(ends.format(f"the score and length of token {i}"))
        score, n = struct.unpack_from("<fi", data, pos)
        if n < 0 or pos + 8 + n > len(data):
            raise ValueError(ends.format(f"the bytes of token {i}") if n >= 0 else
                             f"{path}: token {i} has length {n}; accepted: >= 0")
        pieces.append(data[pos + 8:pos + 8 + n])
        scores.append(score)
        pos += 8 + n
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} bytes after token {vocab_size - 1}; accepted: "
                         f"none (is vocab_size {vocab_size} the checkpoint's?)")
    longest = max(map(len, pieces))
    if max_len < longest:  # run.c sizes its merge buffer from it
        raise ValueError(f"{path}: max_token_length is {max_len}; accepted: >= the longest "
                         f"piece, {longest} bytes")
    return pieces, scores, max_len


def tokenizer_from_bin(path: str | Path, vocab_size: int):
    """A minillama Tokenizer from a tokenizer.bin, undoing write_tokenizer_bin's changes: a
    space back to "▁", "\\n<s>\\n" and "\\n</s>\\n" back to the control pieces <s> and </s>.
    The file keeps no types or options, so Llama 2's are assumed: id 0 is <unk>, pieces
    <0x00>..<0xFF> are bytes (byte fallback), and a space is added in front of the text."""
    from minillama.formats.sentencepiece import BYTE, CONTROL, NORMAL, UNKNOWN, bpe_model
    from minillama.tokenizer import Tokenizer

    raw, scores, _ = read_tokenizer_bin(path, vocab_size)
    control = {b"\n<s>\n": "<s>", b"\n</s>\n": "</s>"}
    pieces = []
    for i, (b, score) in enumerate(zip(raw, scores)):
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: token {i} is not UTF-8 ({e}); accepted: SentencePiece "
                             "pieces") from None
        if b in control:
            pieces.append((control[b], score, CONTROL))
        elif i == 0:
            pieces.append((text, score, UNKNOWN))
        elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            pieces.append((text, score, BYTE))
        else:
            pieces.append((text.replace(" ", SPACE), score, NORMAL))
    try:
        return Tokenizer(bpe_model(pieces, byte_fallback=any(t == BYTE for _, _, t in pieces)))
    except ValueError as e:
        raise ValueError(f"{path}: not a usable tokenizer.bin: {e}") from None
