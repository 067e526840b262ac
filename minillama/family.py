"""The Llama family side by side: shapes, parameter counts, and the memory they need.

    from minillama.config import get_preset
    from minillama.family import FAMILY, count_parameters, family_table, kv_cache_bytes, memory_table
    from minillama.family import weight_bytes
    args = get_preset("llama2-7b")
    count_parameters(args)                  # 6738415616, Meta's "7B"
    weight_bytes(args, "q4_0") / 2**30      # 3.53 GiB of weights in GGUF Q4_0
    kv_cache_bytes(args, seq_len=4096)      # 2 GiB: fp16 K and V for one 4096-token sequence
    print(family_table(FAMILY))             # shapes, and computed counts next to published ones
    print(memory_table())                   # GiB per format, and the KV cache at each context

Everything is computed from `config.weight_shapes`: no weights are read or allocated.

What `weight_bytes` counts (one uniform rule, so formats compare like with like):
- fp32, fp16, bf16: every tensor in that type, norms included.
- q8_0, q4_0, nf4: every 2-D matrix in the format, embeddings and output included; the 1-D
  RMSNorm weights in fp32, as llama.cpp keeps them. Real files differ a little: llama.cpp's
  default Q4_0 mix stores output.weight in Q6_K (`--pure` gives exactly this figure), and
  transformers' 4-bit loading leaves the embeddings and lm_head unquantized.
- A matrix whose row length is not a multiple of the format's block raises
  `minillama.quant.BlockSizeError` (a ValueError) naming the tensor, as the quantizers do;
  the same shape is never silently stored some other way. (memory_table shows "n/a".)

    format  block  bytes per block                            bits per weight
    q8_0    32     2 (fp16 d) + 32 (int8)              = 34   8.5
    q4_0    32     2 (fp16 d) + 16 (two 4-bit per byte) = 18   4.5
    nf4     64     4 (fp32 absmax) + 32                = 36   4.5
    nf4 dq  64     1 (int8 absmax) + 32, + 4 per 256 blocks   4.127 (+ a 4-byte offset per tensor)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from math import prod

from minillama.config import ModelArgs, get_preset, weight_shapes
from minillama.quant import BlockSizeError

# The lesson's models, in the order it shows them; stories110M and the course model at the
# end for scale (stories15M is left out: its dim 288 is not a multiple of NF4's 64).
FAMILY = ("llama2-7b", "llama2-13b", "llama2-70b", "codellama-7b", "tinyllama-1.1b",
          "llama3-8b", "llama3.2-1b", "stories110M", "course")

# Published total parameter counts: the exact totals of the released Hugging Face
# checkpoints (their model pages show them rounded: 6.74B, 13B, 69B, 6.74B, 1.1B, 8.03B,
# 1.24B). Each is re-derived by hand from the shapes in tests/test_family.py's docstring.
PUBLISHED_PARAMS = {
    "llama2-7b": 6_738_415_616,  # meta-llama/Llama-2-7b-hf
    "llama2-13b": 13_015_864_320,  # meta-llama/Llama-2-13b-hf
    "llama2-70b": 68_976_648_192,  # meta-llama/Llama-2-70b-hf
    "codellama-7b": 6_738_546_688,  # codellama/CodeLlama-7b-hf: 7B + 16 tokens x 4096 x 2
    "tinyllama-1.1b": 1_100_048_384,  # TinyLlama/TinyLlama-1.1B-Chat-v1.0
    "llama3-8b": 8_030_261_248,  # meta-llama/Meta-Llama-3-8B
    "llama3.2-1b": 1_235_814_400,  # meta-llama/Llama-3.2-1B: tied, the embedding counted once
}

FORMATS = ("fp32", "fp16", "bf16", "q8_0", "q4_0", "nf4")
_FLOAT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
_BLOCKS = {"q8_0": (32, 34), "q4_0": (32, 18), "nf4": (64, 36)}  # fmt -> (values, bytes) per block
_NF4_DQ_BLOCK_BYTES = 33  # 32 bytes of codes + the block's absmax as one int8 code
_DQ_GROUP = 256  # double quantization: one fp32 scale per 256 absmaxes
NORM_BYTES = 4  # quantized formats keep the 1-D norm weights in fp32

GROUPS = ("embeddings", "attention", "feed_forward", "norms", "output")


# ---------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------


def _group(name: str) -> str:
    """Meta weight name -> its GROUPS entry."""
    if name == "tok_embeddings.weight":
        return "embeddings"
    if name == "output.weight":
        return "output"
    if name.endswith("norm.weight"):  # attention_norm, ffn_norm and the final norm
        return "norms"
    if ".attention." in name:
        return "attention"
    if ".feed_forward." in name:
        return "feed_forward"
    raise ValueError(f"weight {name!r} belongs to none of {GROUPS}")


def parameter_breakdown(args: ModelArgs) -> dict[str, int]:
    """Parameters per group (GROUPS order); tied embeddings: output is 0, counted in embeddings."""
    counts = dict.fromkeys(GROUPS, 0)
    for name, shape in weight_shapes(args).items():
        counts[_group(name)] += prod(shape)
    return counts


def count_parameters(args: ModelArgs) -> int:
    """Total parameters of the shape args describes (tied embeddings counted once)."""
    return sum(prod(shape) for shape in weight_shapes(args).values())


# ---------------------------------------------------------------------------------------
# Bytes
# ---------------------------------------------------------------------------------------


def _matrix_bytes(name: str, shape: tuple[int, ...], fmt: str, double_quant: bool) -> int:
    block, block_bytes = _BLOCKS[fmt]
    if shape[-1] % block:
        raise BlockSizeError(f"tensor {name}: {fmt} takes rows of a multiple of {block} values "
                             f"(block size {block}), got row length {shape[-1]}, shape {shape}")
    n_blocks = prod(shape) // block
    if double_quant:  # bnb quantizes each tensor's absmaxes in groups of 256, plus one offset
        return n_blocks * _NF4_DQ_BLOCK_BYTES + 4 * math.ceil(n_blocks / _DQ_GROUP) + 4
    return n_blocks * block_bytes


def weight_bytes(args: ModelArgs, fmt: str, double_quant: bool = False) -> int:
    """Bytes of all weights in `fmt` (one of FORMATS), by the rules of the module docstring;
    double_quant (nf4 only): the absmaxes in 8 bits, as bitsandbytes' compress_statistics."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if double_quant and fmt != "nf4":
        raise ValueError(f"double_quant applies to nf4 only, not {fmt!r}")
    total = 0
    for name, shape in weight_shapes(args).items():
        if fmt in _FLOAT_BYTES:
            total += prod(shape) * _FLOAT_BYTES[fmt]
        elif len(shape) == 1:
            total += prod(shape) * NORM_BYTES
        else:
            total += _matrix_bytes(name, shape, fmt, double_quant)
    return total


def kv_cache_bytes(args: ModelArgs, seq_len: int, batch: int = 1, bytes_per_value: float = 2) -> int:
    """Bytes of the KV cache for `batch` sequences of `seq_len` tokens: K and V, every layer,
    n_kv_heads * head_dim values each per token. bytes_per_value 2 is fp16; it may be
    fractional (34 / 32 for a Q8_0 cache), and the total is then rounded up."""
    for what, v in (("seq_len", seq_len), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"{what} must be a positive int, got {v!r}")
    if isinstance(bytes_per_value, bool) or not isinstance(bytes_per_value, numbers.Real) \
            or not bytes_per_value > 0:
        raise ValueError(f"bytes_per_value must be a positive number, got {bytes_per_value!r}")
    values = 2 * args.n_layers * args.n_kv_heads * args.head_dim * int(seq_len) * int(batch)
    return math.ceil(values * bytes_per_value)


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Fixed-width text: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _short_count(n: int) -> str:
    """6738415616 -> '6.74B', 5_500_000 -> '5.5M'."""
    return f"{n / 1e9:.2f}B" if n >= 10**9 else f"{n / 1e6:.1f}M"


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def memory_table(names: Sequence[str] = FAMILY, fmts: Sequence[str] = ("fp16", "q8_0", "q4_0", "nf4"),
                 seq_len: int | None = None) -> str:
    """Per model: parameters, GiB of weights in each format, and the fp16 KV cache of one
    sequence at the model's context (max_seq_len) or at seq_len if given."""
    header = ["model", "params", *(f"{f} GiB" for f in fmts), "context", "KV fp16 GiB"]
    rows, missing = [], False
    for name in names:
        args = get_preset(name)
        cells = [name, _short_count(count_parameters(args))]
        for f in fmts:
            try:
                cells.append(_gib(weight_bytes(args, f)))
            except BlockSizeError:
                cells.append("n/a")
                missing = True
        length = args.max_seq_len if seq_len is None else seq_len
        cells += [str(length), _gib(kv_cache_bytes(args, length))]
        rows.append(cells)
    notes = ["GiB = 2**30 bytes. Weights: matrices in the format, norms in fp32 when quantized.",
             "KV cache: K and V of every layer in fp16, one sequence of `context` tokens."]
    if missing:
        notes.append("n/a: a row length is not a multiple of the format's block size.")
    return _table(header, rows) + "\n" + "\n".join(notes)


def _theta(theta: float) -> str:
    return str(int(theta)) if float(theta).is_integer() else f"{theta:g}"


def family_table(names: Sequence[str] = FAMILY) -> str:
    """Per model: the shape, RoPE, tying, and the computed parameter count beside the
    published one ("-" where PUBLISHED_PARAMS has none)."""
    header = ["model", "dim", "layers", "heads", "kv", "hidden", "vocab", "context", "theta",
              "scaling", "tied", "params", "published"]
    rows = []
    for name in names:
        a = get_preset(name)
        s = a.rope_scaling
        published = PUBLISHED_PARAMS.get(name)
        rows.append([name, str(a.dim), str(a.n_layers), str(a.n_heads), str(a.n_kv_heads),
                     str(a.ffn_hidden_dim), str(a.vocab_size), str(a.max_seq_len), _theta(a.rope_theta),
                     "-" if s is None else f"{s.type} x{s.factor:g}", "yes" if a.tie_embeddings else "no",
                     f"{count_parameters(a):,}", "-" if published is None else f"{published:,}"])
    return _table(header, rows)
