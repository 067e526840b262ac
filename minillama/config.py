"""The model configuration: one dataclass with Meta's field names, plus named presets.

    from minillama.config import ModelArgs, get_preset
    args = get_preset("stories15M")
    small = dataclasses.replace(args, n_layers=2)   # configs are frozen: derive, don't mutate

`ModelArgs` describes the shape of a Llama model and nothing else (no batch size, no
device, no training settings). Both dataclasses are frozen, so a preset can be shared
without one lesson's edits leaking into another.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------
# RoPE scaling
# ---------------------------------------------------------------------------------------

# type -> what it does, and the transformers `rope_type` that computes the same frequencies
ROPE_SCALING_TYPES = {
    "linear": "position interpolation: every frequency divided by factor (transformers 'linear')",
    "ntk": "static NTK-aware: theta * factor ** (d / (d - 2)) (no transformers equivalent)",
    "dynamic": "dynamic NTK: the NTK base grows with the current length (transformers 'dynamic')",
    "llama3": "Llama 3.1: low frequencies / factor, high kept, a smooth ramp between "
    "(transformers 'llama3')",
    "yarn": "YaRN: per-frequency ramp between interpolation and extrapolation, plus an "
    "attention factor on cos and sin (transformers 'yarn')",
}

# the types whose formula needs the context length the model was pretrained with
_NEEDS_ORIGINAL_LENGTH = ("dynamic", "llama3", "yarn")


@dataclass(frozen=True)
class RopeScaling:
    """How RoPE frequencies are stretched for contexts longer than pretraining (lesson 12)."""

    type: str  # one of ROPE_SCALING_TYPES
    factor: float  # how many times longer the context becomes; 1.0 changes nothing
    # pretraining context length: dynamic, llama3 and yarn measure wavelengths against it
    original_max_position_embeddings: int | None = None
    low_freq_factor: float = 1.0  # llama3: Meta's Llama 3.1 value
    high_freq_factor: float = 4.0  # llama3: Meta's Llama 3.1 value
    beta_fast: float = 32.0  # yarn: the paper's (and transformers') default
    beta_slow: float = 1.0  # yarn: the paper's (and transformers') default
    attention_factor: float | None = None  # yarn: None -> 0.1 * ln(factor) + 1, the paper's
    truncate: bool = True  # yarn: round the ramp's ends to whole dims, as transformers does

    def __post_init__(self) -> None:
        if self.type not in ROPE_SCALING_TYPES:
            raise ValueError(
                f"unknown rope scaling type {self.type!r}; known: {sorted(ROPE_SCALING_TYPES)}"
            )
        _check_number("rope_scaling.factor", self.factor, minimum=1.0)
        if self.type in _NEEDS_ORIGINAL_LENGTH:
            if self.original_max_position_embeddings is None:
                raise ValueError(
                    f"rope scaling {self.type!r} needs original_max_position_embeddings "
                    "(the context length the model was pretrained with)"
                )
        if self.original_max_position_embeddings is not None:
            _check_int("rope_scaling.original_max_position_embeddings",
                       self.original_max_position_embeddings, self)
        if self.type == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ValueError(
                f"rope scaling 'llama3' needs high_freq_factor > low_freq_factor, got "
                f"{self.high_freq_factor} and {self.low_freq_factor}"
            )
        if self.attention_factor is not None:
            _check_number("rope_scaling.attention_factor", self.attention_factor)


# ---------------------------------------------------------------------------------------
# ModelArgs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelArgs:
    """The shape of a Llama model, with Meta's field names. Defaults are the course model."""

    dim: int = 256  # course model: small enough to train on a 2-core CPU
    n_layers: int = 6  # course model: depth helps stories more than width at this size
    n_heads: int = 8  # head_dim 32, a common small-model head size
    n_kv_heads: int | None = 4  # grouped-query attention, as in Llama 2 70B and Llama 3
    vocab_size: int = 4096  # the course BPE tokenizer's size (lesson 01)
    hidden_dim: int | None = None  # None -> Meta's rule, see ffn_hidden_dim
    multiple_of: int = 32  # llama2.c's small models round the SwiGLU width to 32
    ffn_dim_multiplier: float | None = None  # Llama 2 70B and Llama 3 use 1.3
    norm_eps: float = 1e-5  # Llama 2's value (transformers' LlamaConfig defaults to 1e-6)
    rope_theta: float = 10000.0  # the RoPE paper's and Llama 2's base; Llama 3 uses 500000
    rope_scaling: RopeScaling | None = None  # None: plain RoPE; a dict is converted
    max_seq_len: int = 512  # longest sequence: RoPE table and KV-cache length
    tie_embeddings: bool = True  # llama2.c ties them: saves vocab_size * dim parameters

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "max_seq_len"):
            _check_int(name, getattr(self, name), self)
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)  # Meta: None means MHA
        _check_int("n_kv_heads", self.n_kv_heads, self)
        if self.hidden_dim is not None:
            _check_int("hidden_dim", self.hidden_dim, self)
        if self.ffn_dim_multiplier is not None:
            _check_number("ffn_dim_multiplier", self.ffn_dim_multiplier)
        _check_number("norm_eps", self.norm_eps)
        _check_number("rope_theta", self.rope_theta)
        if not isinstance(self.tie_embeddings, bool):
            raise TypeError(f"tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim = dim / n_heads = {self.head_dim} must be even: RoPE rotates pairs"
            )
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", _scaling_from_dict(self.rope_scaling))
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise TypeError(
                f"rope_scaling must be None, a RopeScaling or a dict, got {self.rope_scaling!r}"
            )

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.dim // self.n_heads

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head (1 = MHA, n_heads = MQA)."""
        return self.n_heads // self.n_kv_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """SwiGLU width: hidden_dim if given, else Meta's rule (2/3 of 4*dim, scaled, rounded up)."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)  # 2/3 keeps SwiGLU's 3 matrices at 8*dim^2
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)


def weight_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every weight's Meta name and shape, in Meta's order; no output.weight when tied."""
    dim, hd, hidden = args.dim, args.head_dim, args.ffn_hidden_dim
    layer = {  # per-layer name -> shape
        "attention.wq.weight": (args.n_heads * hd, dim),
        "attention.wk.weight": (args.n_kv_heads * hd, dim),
        "attention.wv.weight": (args.n_kv_heads * hd, dim),
        "attention.wo.weight": (dim, args.n_heads * hd),
        "feed_forward.w1.weight": (hidden, dim), "feed_forward.w2.weight": (dim, hidden),
        "feed_forward.w3.weight": (hidden, dim),
        "attention_norm.weight": (dim,), "ffn_norm.weight": (dim,),
    }
    shapes = {"tok_embeddings.weight": (args.vocab_size, dim)}
    for l in range(args.n_layers):
        shapes.update({f"layers.{l}.{k}": v for k, v in layer.items()})
    shapes["norm.weight"] = (dim,)
    if not args.tie_embeddings:
        shapes["output.weight"] = (args.vocab_size, dim)
    return shapes


def _check_int(name: str, value: object, owner: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    object.__setattr__(owner, name.split(".")[-1], int(value))  # numpy ints -> int


def _check_number(name: str, value: object, minimum: float = 0.0) -> None:
    """A real number > 0 (minimum 0.0) or >= minimum; NaN fails both."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    ok = value > 0 if minimum == 0.0 else value >= minimum
    if not ok:
        bound = "positive" if minimum == 0.0 else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _scaling_from_dict(d: dict) -> RopeScaling:
    known = {f.name for f in dataclasses.fields(RopeScaling)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown rope_scaling keys {sorted(unknown)}; accepted: {sorted(known)}")
    if "type" not in d:
        raise ValueError(f"rope_scaling needs a 'type', one of {sorted(ROPE_SCALING_TYPES)}")
    return RopeScaling(**d)


# ---------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------

# Sources. Meta's params.json: dim, n_layers, n_heads, n_kv_heads, multiple_of,
# ffn_dim_multiplier, norm_eps, rope_theta (Llama 2's says vocab_size -1: the tokenizer's).
# Hugging Face config.json: vocab_size, max_position_embeddings, rope_scaling,
# tie_word_embeddings and intermediate_size (= ffn_hidden_dim, checked in tests/test_config.py).
_LLAMA2 = dict(vocab_size=32000, multiple_of=256, norm_eps=1e-5, max_seq_len=4096,
               tie_embeddings=False)
_LLAMA3 = dict(vocab_size=128256, multiple_of=1024, ffn_dim_multiplier=1.3, norm_eps=1e-5,
               rope_theta=500000.0, tie_embeddings=False)
_STORIES = dict(vocab_size=32000, multiple_of=32, norm_eps=1e-5, tie_embeddings=True)

PRESETS: dict[str, ModelArgs] = {
    # ~5.5M parameters (embeddings 1M of them); sized to train on 2 CPU cores in under an
    # hour at max_seq_len 512 -- an estimate, measured in lesson 06
    "course": ModelArgs(),
    # llama2.c's TinyStories models (Karpathy): shared classifier, MHA
    "stories15M": ModelArgs(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, hidden_dim=768,
                            max_seq_len=256, **_STORIES),
    "stories42M": ModelArgs(dim=512, n_layers=8, n_heads=8, n_kv_heads=8, hidden_dim=1376,
                            max_seq_len=1024, **_STORIES),
    "stories110M": ModelArgs(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, hidden_dim=2048,
                             max_seq_len=1024, **_STORIES),
    # Meta's Llama 2 params.json shapes; the FFN width comes from Meta's rule
    # (11008, 13824, 28672); context 4096 (HF max_position_embeddings)
    "llama2-7b": ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, **_LLAMA2),
    "llama2-13b": ModelArgs(dim=5120, n_layers=40, n_heads=40, n_kv_heads=40, **_LLAMA2),
    "llama2-70b": ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                            ffn_dim_multiplier=1.3, **{**_LLAMA2, "multiple_of": 4096}),
    # Code Llama 7B: Llama 2 7B's shape; params.json rope_theta 1e6; HF config.json
    # (codellama/CodeLlama-7b-hf) vocab_size 32016 (16 infilling tokens added),
    # max_position_embeddings 16384
    "codellama-7b": ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                              rope_theta=1e6, **{**_LLAMA2, "vocab_size": 32016,
                                                 "max_seq_len": 16384}),
    # TinyLlama 1.1B (not Meta's): HF config.json (TinyLlama/TinyLlama-1.1B-Chat-v1.0),
    # intermediate_size 5632 (Meta's rule with multiple_of 256 gives the same), GQA 32/4
    "tinyllama-1.1b": ModelArgs(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, hidden_dim=5632,
                                vocab_size=32000, multiple_of=256, norm_eps=1e-5, max_seq_len=2048,
                                tie_embeddings=False),
    # Llama 3 8B and Llama 3.1 8B (the latter with Llama 3.1 RoPE scaling to 128K)
    "llama3-8b": ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, max_seq_len=8192,
                           **_LLAMA3),
    "llama3.1-8b": ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, max_seq_len=131072,
                             rope_scaling=RopeScaling("llama3", factor=8.0,
                                                      original_max_position_embeddings=8192),
                             **_LLAMA3),
    # Llama 3.2 1B: params.json ffn_dim_multiplier 1.5, multiple_of 256 (-> 8192);
    # HF config.json rope_scaling llama3 factor 32 (low 1, high 4, original 8192),
    # max_position_embeddings 131072, tie_word_embeddings true
    "llama3.2-1b": ModelArgs(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, max_seq_len=131072,
                             rope_scaling=RopeScaling("llama3", factor=32.0, low_freq_factor=1.0,
                                                      high_freq_factor=4.0,
                                                      original_max_position_embeddings=8192),
                             **{**_LLAMA3, "multiple_of": 256, "ffn_dim_multiplier": 1.5,
                                "tie_embeddings": True}),
}


def get_preset(name: str) -> ModelArgs:
    """The named preset's ModelArgs (frozen; derive variants with dataclasses.replace)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
