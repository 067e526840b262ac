"""Read and write Meta's original Llama checkpoints: params.json plus consolidated.NN.pth.

    args, state_dict = read_meta("llama-2-7b")       # Meta names, torch tensors as stored
    write_meta("out", args, state_dict, n_shards=2)  # params.json, consolidated.00/01.pth

A checkpoint is a directory (usually with tokenizer.model too, which this module leaves alone):

- params.json: the shape, with the field names of Meta's `ModelArgs`: dim, n_layers, n_heads,
  n_kv_heads (absent: n_heads), vocab_size (-1 in Llama 1/2: the tokenizer gives it; here
  tok_embeddings' rows), multiple_of and ffn_dim_multiplier (the FFN width, see below),
  norm_eps, rope_theta (Llama 3 only; absent: 10000), use_scaled_rope (Llama 3.1: its RoPE
  scaling, LLAMA31_SCALING) and max_seq_len (absent: 4096). Any other key is refused.
- consolidated.NN.pth, NN = 00, 01, ...: one torch.save'd dict of tensors per model-parallel
  rank, under our own (Meta's) names. Each rank holds a slice of every matrix (SHARD_AXES):
  column-parallel layers (wq, wk, wv, w1, w3, output) split their output features, dim 0;
  row-parallel ones (wo, w2) their input features, dim 1; the embedding (Llama 2's
  ParallelEmbedding) its dim 1; the norms are replicated. Merging is concatenation along
  that axis, in rank order. Old checkpoints also hold the buffer rope.freqs: ignored.

The FFN width is not stored: Meta computes it from dim, multiple_of and ffn_dim_multiplier
(our ModelArgs.ffn_hidden_dim with hidden_dim None). read_meta checks that rule against w1;
write_meta chooses multiple_of and ffn_dim_multiplier so that the rule gives the width
exactly (args_to_params). q and k rows are in Meta's interleaved rotary layout already: no
permutation, unlike the HF format.

Tied embeddings: the format always stores output.weight. write_meta writes a copy of
tok_embeddings when args.tie_embeddings; read_meta returns tie_embeddings=True, and no
output.weight, when output.weight is absent or bit-identical to tok_embeddings, so a tied
model round-trips exactly (an untied model whose two matrices are bit-identical reads as tied,
which computes the same thing).

What read_meta returns: ModelArgs as params.json describes it (hidden_dim None: the width is
Meta's rule's, multiple_of and ffn_dim_multiplier as in the file) and torch tensors in the
file's dtype (bf16 stays bf16; Llama and the engine's weights_from_state_dict convert). With
one shard they are memory-mapped from the file, not copied. Files are loaded with
torch.load(weights_only=True): a pickle that needs anything beyond tensors is refused unrun.

Limits of the format and of Meta's reference code, which write_meta respects:
- Llama 2's ModelArgs has no rope_theta nor use_scaled_rope (a key it lacks is a TypeError),
  so rope_theta is written only when it is not 10000 (or with use_scaled_rope: Llama 3's
  ModelArgs defaults rope_theta to 500000), use_scaled_rope only for Llama 3.1's scaling, and
  any other RoPE scaling is refused: params.json cannot express it.
- Meta's Llama.build passes max_seq_len itself along with **params, so it refuses a
  params.json holding max_seq_len ("multiple values for keyword argument"). It is written only
  when it is not 4096, the default here, so that the file describes the model completely.
- Llama 3's reference code splits the embedding over the vocabulary (VocabParallelEmbedding,
  dim 0). read_meta recognizes such shards (each as wide as dim) and merges them along dim 0;
  write_meta always writes Llama 2's layout (dim 1): a multi-shard file for Meta's Llama 3
  code would need the other split. (One shard, as Llama 3 8B, is the same for both.)
- n_shards must divide every split dimension. Meta's model-parallel code also needs it to
  divide n_kv_heads (each rank gets whole heads); that is not required to store the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import re
from pathlib import Path

import numpy as np
import torch

from minillama.config import ModelArgs, RopeScaling, weight_shapes

PARAMS_FILE = "params.json"
ROPE_THETA = 10000.0  # absent from Llama 1/2's params.json: their code hard-codes it
MAX_SEQ_LEN = 4096  # when params.json has no max_seq_len (Llama 2's context)
MULTIPLE_OF, NORM_EPS = 256, 1e-5  # Meta's ModelArgs defaults for absent keys
# what use_scaled_rope means in Llama 3.1's reference code (apply_scaling's constants)
LLAMA31_SCALING = RopeScaling("llama3", factor=8.0, original_max_position_embeddings=8192,
                              low_freq_factor=1.0, high_freq_factor=4.0)
PARAMS_KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
               "ffn_dim_multiplier", "norm_eps", "rope_theta", "use_scaled_rope", "max_seq_len")
_REQUIRED = ("dim", "n_layers", "n_heads")  # Meta's defaults for these describe 7B: no guessing
IGNORED = ("rope.freqs",)  # a RoPE buffer old checkpoints saved; recomputed, not learned

_LAYER_AXES = {  # per-layer tensor (name after "layers.{l}.") -> concatenation axis
    "attention.wq.weight": 0, "attention.wk.weight": 0, "attention.wv.weight": 0,  # column
    "attention.wo.weight": 1,  # row-parallel
    "feed_forward.w1.weight": 0, "feed_forward.w3.weight": 0,  # column-parallel
    "feed_forward.w2.weight": 1,  # row-parallel
    "attention_norm.weight": None, "ffn_norm.weight": None,  # replicated
}
_GLOBAL_AXES = {"tok_embeddings.weight": 1, "norm.weight": None, "output.weight": 0}
SHARD_AXES: dict[str, int | None] = {**_GLOBAL_AXES, **_LAYER_AXES}
_LAYER = re.compile(r"layers\.(\d+)\.(.+)")
_SHARD_FILE = re.compile(r"consolidated\.(\d+)\.pth")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format (torch >= 1.6); older files are pickles


def _shard_name(k: int) -> str:
    return f"consolidated.{k:02d}.pth"


# ---------------------------------------------------------------------------------------
# The sharding rule
# ---------------------------------------------------------------------------------------


def shard_axis(name: str) -> int | None:
    """The axis along which shards of tensor `name` are concatenated; None: replicated.
    'layers.3.attention.wo.weight' -> 1."""
    m = _LAYER.fullmatch(name)
    axis = _LAYER_AXES.get(m.group(2), "?") if m else _GLOBAL_AXES.get(name, "?")
    if axis == "?":
        known = [*_GLOBAL_AXES, *(f"layers.{{l}}.{k}" for k in _LAYER_AXES)]
        raise ValueError(f"unknown tensor {name!r}: not a Llama weight (known: {', '.join(known)})")
    return axis


def _check_n_shards(n_shards) -> int:
    if isinstance(n_shards, bool) or not isinstance(n_shards, numbers.Integral) or n_shards <= 0:
        raise ValueError(f"n_shards is {n_shards!r}; accepted: a positive int")
    return int(n_shards)


def split_for_shards(name: str, tensor, n_shards: int) -> list:
    """tensor (torch or NumPy) cut into n_shards equal slices along shard_axis(name), views in
    rank order; a replicated tensor is the same object n_shards times. Inverse of merge_shards."""
    n = _check_n_shards(n_shards)
    axis = shard_axis(name)
    if axis is None:
        return [tensor] * n
    size = tensor.shape[axis]
    if size % n:
        raise ValueError(f"n_shards={n} does not divide {name}'s size {size} along dim {axis} "
                         f"(shape {tuple(tensor.shape)}); accepted: {_divisors(size)}")
    step = size // n
    index = [slice(None)] * tensor.ndim
    parts = []
    for k in range(n):
        index[axis] = slice(k * step, (k + 1) * step)
        parts.append(tensor[tuple(index)])
    return parts


def _same_bits(a, b) -> bool:
    """Same dtype, shape and bytes (NaN equals itself, -0.0 differs from 0.0)."""
    if type(a) is not type(b) or a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
        return False
    if isinstance(a, torch.Tensor):
        return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _merge(name: str, parts: list, axis: int | None):
    if not parts:
        raise ValueError(f"{name}: no shards to merge")
    first = parts[0]
    for k, p in enumerate(parts[1:], start=1):
        where = f"{name!r} in shard {k} ({_shard_name(k)})"
        if axis is None:
            if not _same_bits(p, first):
                raise ValueError(f"replicated tensor {where} differs from shard 0's (shape "
                                 f"{tuple(p.shape)} vs {tuple(first.shape)}, dtype {p.dtype} vs "
                                 f"{first.dtype}); accepted: bit-identical copies in every shard")
        elif tuple(p.shape) != tuple(first.shape) or p.dtype != first.dtype:
            raise ValueError(f"{where} has shape {tuple(p.shape)} and dtype {p.dtype}, shard 0 "
                             f"{tuple(first.shape)} and {first.dtype}; accepted: equal slices "
                             f"(split along dim {axis})")
    if axis is None or len(parts) == 1:
        return first
    if first.ndim <= axis:
        raise ValueError(f"{name!r} in shard 0 has shape {tuple(first.shape)}: no dim {axis} to "
                         "concatenate along")
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim=axis)
    return np.concatenate(parts, axis=axis)


def merge_shards(name: str, parts: list):
    """Concatenate the shards of tensor `name` (torch or NumPy, rank order) along
    shard_axis(name); a replicated tensor must be bit-identical in every shard (else
    ValueError naming tensor and shard) and is returned as is."""
    return _merge(name, parts, shard_axis(name))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# ---------------------------------------------------------------------------------------
# params.json <-> ModelArgs
# ---------------------------------------------------------------------------------------


def params_to_args(params: dict, vocab_size: int | None = None,
                   hidden_dim: int | None = None) -> ModelArgs:
    """params.json's dict -> ModelArgs (hidden_dim None: Meta's rule; tie_embeddings False,
    read_meta decides it from the tensors). vocab_size: the tokenizer's size, needed when
    params says -1 (Llama 1/2). hidden_dim: the checkpoint's w1 rows, checked against the rule."""
    if not isinstance(params, dict):
        raise ValueError(f"{PARAMS_FILE}: holds a {type(params).__name__}; accepted: an object")
    unknown = sorted(set(params) - set(PARAMS_KEYS))
    if unknown:
        raise ValueError(f"{PARAMS_FILE}: unknown keys {unknown}; accepted: {list(PARAMS_KEYS)}")
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise ValueError(f"{PARAMS_FILE}: lacks {missing}, needed to build a Llama")
    vocab = params.get("vocab_size", -1)
    if vocab == -1:  # Llama 1/2: Meta's code takes it from the tokenizer
        if vocab_size is None:
            raise ValueError(f"{PARAMS_FILE}: vocab_size is -1 (the tokenizer's size); pass "
                             "vocab_size (the tokenizer's, or tok_embeddings' rows)")
        vocab = vocab_size
    elif vocab_size is not None and vocab_size != vocab:
        raise ValueError(f"{PARAMS_FILE}: vocab_size is {vocab}, but {vocab_size} was given")
    scaled = params.get("use_scaled_rope", False)
    if not isinstance(scaled, bool):
        raise ValueError(f"{PARAMS_FILE}: use_scaled_rope is {scaled!r}; accepted: true or false")
    theta = params.get("rope_theta", ROPE_THETA)
    try:
        args = ModelArgs(
            dim=params["dim"], n_layers=params["n_layers"], n_heads=params["n_heads"],
            n_kv_heads=params.get("n_kv_heads"),  # absent or null: n_heads (MHA)
            vocab_size=vocab, hidden_dim=None, multiple_of=params.get("multiple_of", MULTIPLE_OF),
            ffn_dim_multiplier=params.get("ffn_dim_multiplier"),
            norm_eps=params.get("norm_eps", NORM_EPS),
            rope_theta=float(theta) if isinstance(theta, numbers.Real) else theta,
            rope_scaling=LLAMA31_SCALING if scaled else None,
            max_seq_len=params.get("max_seq_len", MAX_SEQ_LEN), tie_embeddings=False,
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{PARAMS_FILE}: {e}") from None
    if hidden_dim is not None and hidden_dim != args.ffn_hidden_dim:
        raise ValueError(
            f"{PARAMS_FILE}: Meta's rule gives the FFN width {args.ffn_hidden_dim} (dim "
            f"{args.dim}, multiple_of {args.multiple_of}, ffn_dim_multiplier "
            f"{args.ffn_dim_multiplier}), but the checkpoint's w1 has {hidden_dim} rows")
    return args


def _meta_rule(args: ModelArgs, multiple_of: int, multiplier: float | None) -> int:
    return dataclasses.replace(args, hidden_dim=None, multiple_of=multiple_of,
                               ffn_dim_multiplier=multiplier).ffn_hidden_dim


def _ffn_params(args: ModelArgs) -> tuple[int, float | None]:
    """(multiple_of, ffn_dim_multiplier) from which Meta's rule gives args.ffn_hidden_dim."""
    hidden = args.ffn_hidden_dim
    if _meta_rule(args, args.multiple_of, args.ffn_dim_multiplier) == hidden:
        return args.multiple_of, args.ffn_dim_multiplier  # args' own (always so if hidden_dim None)
    # multiple_of = hidden rounds any value in 1..hidden up to hidden. Before the multiplier the
    # rule's value is base = int(8 * dim / 3); if base > hidden, a multiplier m < 1 brings it
    # into range: int(m * base) in 1..hidden. Try short decimals first, for a readable file.
    base = int(2 * (4 * args.dim) / 3)
    if base <= hidden:
        return hidden, None
    for digits in range(1, 8):
        m = math.floor(hidden / base * 10**digits) / 10**digits
        if m > 0 and _meta_rule(args, hidden, m) == hidden:
            return hidden, m
    m = (hidden + 0.5) / base  # int(m * base) = hidden: the 0.5 margin absorbs float rounding
    if _meta_rule(args, hidden, m) != hidden:  # cannot happen for a positive int hidden
        raise ValueError(f"no multiple_of / ffn_dim_multiplier gives the FFN width {hidden}")
    return hidden, m


def _is_llama31(s: RopeScaling) -> bool:
    keys = ("type", "factor", "original_max_position_embeddings", "low_freq_factor",
            "high_freq_factor")  # the fields llama3 scaling uses
    return all(getattr(s, k) == getattr(LLAMA31_SCALING, k) for k in keys)


def args_to_params(args: ModelArgs) -> dict:
    """ModelArgs -> a params.json dict with only keys Meta's reference code accepts (see the
    module docstring); Meta's rule applied to it gives args.ffn_hidden_dim exactly."""
    s = args.rope_scaling
    if s is not None and not _is_llama31(s):
        raise ValueError(f"rope scaling {s} cannot be written to {PARAMS_FILE}: the format knows "
                         f"only Llama 3.1's (use_scaled_rope: {LLAMA31_SCALING}), or none")
    multiple_of, multiplier = _ffn_params(args)
    params = {"dim": args.dim, "n_layers": args.n_layers, "n_heads": args.n_heads,
              "n_kv_heads": args.n_kv_heads, "vocab_size": args.vocab_size,
              "multiple_of": multiple_of, "norm_eps": float(args.norm_eps)}
    if multiplier is not None:
        params["ffn_dim_multiplier"] = float(multiplier)
    if args.rope_theta != ROPE_THETA or s is not None:  # Llama 3's code defaults it to 500000
        params["rope_theta"] = float(args.rope_theta)
    if s is not None:
        params["use_scaled_rope"] = True
    if args.max_seq_len != MAX_SEQ_LEN:
        params["max_seq_len"] = args.max_seq_len
    return params


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def detect_meta(path: str | Path) -> bool:
    """True if path is a directory with params.json and consolidated.00.pth."""
    path = Path(path)
    return path.is_dir() and (path / PARAMS_FILE).is_file() and (path / _shard_name(0)).is_file()


def _read_params(path: Path) -> dict:
    file = path / PARAMS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no {PARAMS_FILE} in {path}: not a Meta checkpoint directory")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None


def _shard_files(path: Path) -> list[Path]:
    """consolidated.00.pth .. consolidated.{n-1}.pth, checked to be contiguous."""
    found = {}
    for f in path.iterdir():
        m = _SHARD_FILE.fullmatch(f.name)
        if m:
            k = int(m.group(1))
            if f.name != _shard_name(k):
                raise ValueError(f"{f}: shard files are named consolidated.NN.pth, NN = 00, 01, "
                                 f"...; cannot tell the rank of {f.name!r}")
            found[k] = f
    if not found:
        raise FileNotFoundError(f"no {_shard_name(0)} in {path}: not a Meta checkpoint directory")
    n = max(found) + 1
    gaps = [_shard_name(k) for k in range(n) if k not in found]
    if gaps:
        raise ValueError(f"{path}: shards must be {_shard_name(0)} .. {_shard_name(n - 1)} without "
                         f"gaps; missing {gaps}")
    return [found[k] for k in range(n)]


def _torch_error(e: Exception) -> str:
    """The useful line of torch.load's (long) error message."""
    msg = str(e)
    if "WeightsUnpickler error:" in msg:
        msg = msg.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n")[0]
        msg = msg.split(" Please use", 1)[0]
    return f"{type(e).__name__}: {msg.strip().splitlines()[0] if msg.strip() else ''}"


def _load_shard(file: Path) -> dict:
    """One shard's tensors (rope.freqs dropped), with weights_only=True: never runs pickled code."""
    try:
        with open(file, "rb") as f:
            zipped = f.read(4) == _ZIP_MAGIC
        # mmap needs the zip format; an older (pre-1.6) file is read whole, still weights_only
        obj = torch.load(file, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as e:  # RuntimeError, UnpicklingError, EOFError, ...: torch raises many
        raise ValueError(f"{file}: cannot load it with torch.load(weights_only=True) (truncated or "
                         f"corrupt, or pickling more than tensors): {_torch_error(e)}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{file}: holds a {type(obj).__name__}; accepted: a dict of tensors")
    out = {}
    for name, t in obj.items():
        if name in IGNORED:
            continue
        if not isinstance(name, str) or not isinstance(t, torch.Tensor) or not t.is_floating_point():
            what = f"a {t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{file}: entry {name!r} is {what}; accepted: float tensors")
        out[name] = t
    return out


def read_meta(path: str | Path) -> tuple[ModelArgs, dict[str, torch.Tensor]]:
    """(ModelArgs, Meta-named torch tensors in the file's dtype) from a Meta checkpoint
    directory: shards merged, every name and shape checked; no output.weight if tied."""
    path = Path(path)
    params = _read_params(path)
    files = _shard_files(path)
    shards = [_load_shard(f) for f in files]
    names = list(shards[0])
    for f, shard in zip(files[1:], shards[1:]):
        if set(shard) != set(names):
            raise ValueError(f"{f} holds other tensors than {files[0].name}: only in {f.name} "
                             f"{sorted(set(shard) - set(names))}, missing "
                             f"{sorted(set(names) - set(shard))}")
    n = len(files)
    span = files[0].name if n == 1 else f"{files[0].name} .. {files[-1].name}"
    dim = params.get("dim") if isinstance(params, dict) else None  # checked by params_to_args
    merged, axes = {}, {}
    for name in names:
        try:
            axis = shard_axis(name)
        except ValueError as e:
            raise ValueError(f"{files[0]}: {e}") from None
        parts = [shard[name] for shard in shards]
        p = parts[0]
        if (name == "tok_embeddings.weight" and n > 1 and p.ndim == 2
                and p.shape[1] == dim):
            axis = 0  # full-width shards: Llama 3's VocabParallelEmbedding splits the vocabulary
        try:
            merged[name], axes[name] = _merge(name, parts, axis), axis
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    emb, w1 = merged.get("tok_embeddings.weight"), merged.get("layers.0.feed_forward.w1.weight")
    vocab = emb.shape[0] if emb is not None and emb.ndim == 2 else None
    if isinstance(params, dict) and params.get("vocab_size", -1) != -1:
        vocab = None  # params.json's size; tok_embeddings is checked against it below
    try:
        args = params_to_args(params, vocab_size=vocab,
                              hidden_dim=w1.shape[0] if w1 is not None and w1.ndim == 2 else None)
    except ValueError as e:
        hint = "" if n == 1 else f", merged from {n} shards: is one missing?"
        raise ValueError(f"{path}: {e} (in {span}{hint})") from None

    out = merged.get("output.weight")
    tied = out is None or (emb is not None and _same_bits(out, emb))
    if tied:
        args = dataclasses.replace(args, tie_embeddings=True)
        merged.pop("output.weight", None)  # the classifier is tok_embeddings
    expected = weight_shapes(args)
    for name, t in merged.items():
        if name not in expected:
            raise ValueError(f"unexpected tensor {name!r} in {files[0]}: {PARAMS_FILE} has "
                             f"n_layers={args.n_layers}")
        if tuple(t.shape) != expected[name]:
            how = "" if n == 1 or axes[name] is None else \
                f", merged along dim {axes[name]} from {n} shards (is one missing?)"
            raise ValueError(f"tensor {name!r} in {path / span} has shape {tuple(t.shape)}{how}; "
                             f"expected {expected[name]} from {PARAMS_FILE}")
    missing = [f"{name} {shape}" for name, shape in expected.items() if name not in merged]
    if missing:
        raise ValueError(f"{path / span} is missing tensors (name, expected shape): "
                         f"{', '.join(missing)}")
    return args, {name: merged[name] for name in expected}  # Meta's order


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _as_torch(path, name: str, t) -> torch.Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(t))
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise ValueError(f"{path}: {name} is {type(t).__name__} {getattr(t, 'dtype', '')}; "
                         "accepted: a float torch tensor or NumPy array")
    return t.detach().cpu()


def _tensors_to_write(path, args: ModelArgs, state_dict: dict) -> dict[str, torch.Tensor]:
    """Every tensor of the file, checked against args; output.weight = tok_embeddings if tied."""
    expected = weight_shapes(args)
    optional = {"output.weight"} if args.tie_embeddings else set()  # tied: absent or equal
    missing, unknown = set(expected) - set(state_dict), set(state_dict) - set(expected) - optional
    if missing or unknown:
        raise ValueError(f"{path}: the state dict does not match args: missing {sorted(missing)}, "
                         f"unexpected {sorted(unknown)}")
    tensors = {}
    for name, shape in expected.items():
        tensors[name] = _as_torch(path, name, state_dict[name])
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{path}: {name} has shape {tuple(tensors[name].shape)}; accepted: {shape}")
    if args.tie_embeddings:
        emb = tensors["tok_embeddings.weight"]
        if "output.weight" in state_dict:
            out = _as_torch(path, "output.weight", state_dict["output.weight"])
            if out.shape != emb.shape or not torch.equal(out, emb.to(out.dtype)):
                raise ValueError(f"{path}: args.tie_embeddings is True but output.weight differs "
                                 "from tok_embeddings.weight; accepted: absent or equal")
        tensors["output.weight"] = emb  # Meta's format always has the classifier
    return tensors


def _check_divisible(tensors: dict[str, torch.Tensor], n: int) -> None:
    sizes = {name: t.shape[shard_axis(name)] for name, t in tensors.items()
             if shard_axis(name) is not None}
    bad = [name for name, size in sizes.items() if size % n]
    if bad:
        name, axis = bad[0], shard_axis(bad[0])
        more = f", nor the sizes of {len(bad) - 1} other tensors" if len(bad) > 1 else ""
        raise ValueError(f"n_shards={n} does not divide {name}'s size {sizes[name]} along dim "
                         f"{axis}{more}; accepted n_shards: {_divisors(math.gcd(*sizes.values()))}")


def write_meta(path: str | Path, args: ModelArgs, state_dict: dict, n_shards: int = 1) -> None:
    """Write Meta-named tensors (torch or NumPy, dtype kept) as path/params.json and
    path/consolidated.00.pth .. {n_shards-1}; everything is checked before anything is
    written, and a failure leaves the directory as it was. Stale higher shards are removed."""
    path = Path(path)
    n = _check_n_shards(n_shards)
    params = args_to_params(args)  # refuses what params.json cannot express
    tensors = _tensors_to_write(path, args, state_dict)
    _check_divisible(tensors, n)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    temps = []  # written under hidden names, renamed once all are complete
    try:
        for k in range(n):
            shard = {name: split_for_shards(name, t, n)[k].contiguous().clone()  # own storage
                     for name, t in tensors.items()}
            temps.append(path / f".{_shard_name(k)}.partial")
            torch.save(shard, temps[-1])
            del shard
        temps.append(path / f".{PARAMS_FILE}.partial")
        temps[-1].write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    except BaseException:
        for t in temps:
            t.unlink(missing_ok=True)
        if created:
            try:
                path.rmdir()
            except OSError:
                pass
        raise
    for tmp, final in zip(temps, [*map(_shard_name, range(n)), PARAMS_FILE]):
        os.replace(tmp, path / final)
    for f in path.iterdir():  # a leftover higher shard would be read as part of the model
        m = _SHARD_FILE.fullmatch(f.name)
        if m and int(m.group(1)) >= n:
            f.unlink()
