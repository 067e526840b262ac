"""LoRA and QLoRA adapters for the course's Llama (lesson 11), in peft's on-disk format.

    cfg = LoRAConfig(r=8, alpha=16, targets="all-linear")     # or ("wq", "wv"), ("q_proj", ...)
    add_lora(model, cfg)                 # wraps the target Linears; only the adapters train
    print(trainable_report(model))       # "trainable 40,960 of 5,560,320 parameters (0.74%)"
    save_adapter(model, "out/adapter")   # adapter_config.json + adapter_model.safetensors (peft)
    load_adapter(model, "out/adapter")   # a peft adapter (or ours) onto a plain model
    engine = Engine.from_state_dict(model.args, merged_state_dict(model))   # runs merged

    quantize_base_nf4(model)             # QLoRA: the frozen base in NF4, then add_lora
    print(memory_report(model))

A LoRA layer computes `base(x) + scaling * B (A dropout(x))` with A (r, in) and B (out, r):
B starts at zero, so a fresh adapter changes nothing; A starts as peft's does (kaiming-
uniform with a = sqrt(5)). `scaling = alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
`merge()` adds `scaling * B A` into a float32 base weight and `unmerge()` takes it out.

QLoRA's base (`NF4Linear`) keeps each weight as NF4 codes and block absmaxes
(`minillama.quant.nf4_quantize`, bitsandbytes' bytes) and dequantizes it on the fly, in the
forward pass and again in the backward pass, so no float32 copy of a frozen matrix stays in
memory; the adapters are float32.

Names. Targets are given by Meta's names (wq wk wv wo w1 w2 w3), transformers' (q_proj
k_proj v_proj o_proj gate_proj down_proj up_proj), or "all-linear" (every one of them; the
classifier is never a target, as in peft). The adapter file uses transformers' names, so
it loads in peft onto the transformers export of the same base (`Llama.save_pretrained`).
HF stores wq and wk with their rows permuted for its rotate-half RoPE
(`formats.hf.permute_meta_to_hf`); a row permutation of W = B A is the same permutation of
B's rows, so B of q_proj and k_proj is permuted on save and load, and A never is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minillama import quant
from minillama.formats.hf import permute_hf_to_meta, permute_meta_to_hf, rope_heads

META_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
HF_NAMES = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj",
            "w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
_FROM_HF = {v: k for k, v in HF_NAMES.items()}
_BLOCK = {"wq": "attention", "wk": "attention", "wv": "attention", "wo": "attention",
          "w1": "feed_forward", "w2": "feed_forward", "w3": "feed_forward"}
_HF_BLOCK = {"attention": "self_attn", "feed_forward": "mlp"}
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"


def resolve_targets(targets: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """"all-linear", or Meta / transformers module names (or paths ending in one) -> Meta
    names, in META_TARGETS order."""
    if isinstance(targets, str):
        targets = META_TARGETS if targets == "all-linear" else (targets,)
    out = set()
    for t in targets:
        t = t.rsplit(".", 1)[-1]  # peft may write full paths: model.layers.0.self_attn.q_proj
        if t in META_TARGETS:
            out.add(t)
        elif t in _FROM_HF:
            out.add(_FROM_HF[t])
        else:
            raise ValueError(f"unknown LoRA target {t!r}; accepted: 'all-linear', "
                             f"{', '.join(META_TARGETS)} or {', '.join(HF_NAMES.values())}")
    if not out:
        raise ValueError("no LoRA targets given; accepted: 'all-linear' or module names such as wq, wv")
    return tuple(t for t in META_TARGETS if t in out)


@dataclass
class LoRAConfig:
    """What add_lora injects: rank r, alpha, dropout on the adapter's input, the targets."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] | str = ("wq", "wv")
    rslora: bool = False  # scaling alpha / sqrt(r) instead of alpha / r
    layers: tuple[int, ...] | None = field(default=None)  # None: every layer

    def __post_init__(self):
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        self.targets = resolve_targets(self.targets)

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)


# ---------------------------------------------------------------------------------------
# The layers
# ---------------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """base(x) + scaling * B (A dropout(x)); base frozen (an nn.Linear or an NF4Linear)."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0,
                 rslora: bool = False):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        out_features, in_features = base.weight.shape if isinstance(base, nn.Linear) else base.shape
        self.lora_A = nn.Parameter(torch.empty(r, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as peft (nn.Linear's default)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.r, self.alpha, self.rslora = r, alpha, rslora
        self.scaling = alpha / (math.sqrt(r) if rslora else r)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """scaling * B A: (out, in), what merging adds to the base weight."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def merge(self) -> None:
        """Add the adapter into the base weight (float32 bases only): forward then skips it."""
        if self.merged:
            return
        if not isinstance(self.base, nn.Linear):
            raise TypeError("merge() needs a float32 base; for an NF4 base (QLoRA) use "
                            "merged_state_dict(model), which dequantizes the base first")
        with torch.no_grad():
            self.base.weight += self.delta_weight()
        self.merged = True

    def unmerge(self) -> None:
        """Take the adapter back out of the base weight."""
        if not self.merged:
            return
        with torch.no_grad():
            self.base.weight -= self.delta_weight()
        self.merged = False


class _NF4Matmul(torch.autograd.Function):
    """x @ dequant(W).T, dequantizing W again in backward instead of keeping it."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return F.linear(x, layer.dequantize())

    @staticmethod
    def backward(ctx, grad):
        return grad @ ctx.layer.dequantize(), None  # dL/dx = grad W; W itself is frozen


class NF4Linear(nn.Module):
    """A frozen Linear stored as NF4 (64-value blocks, float32 absmax), dequantized on use."""

    def __init__(self, weight: torch.Tensor, name: str = "w"):
        super().__init__()
        q = quant.nf4_quantize(weight.detach().cpu().float().numpy(), name=name)
        self.shape = tuple(weight.shape)  # (out, in)
        self.register_buffer("packed", torch.from_numpy(q.packed.reshape(-1).copy()))  # uint8
        self.register_buffer("absmax", torch.from_numpy(q.absmax.reshape(-1).copy()))  # float32
        self.register_buffer("codes", torch.from_numpy(quant.NF4_CODES.copy()))

    def dequantize(self) -> torch.Tensor:
        """float32 (out, in): NF4_CODES[code] * absmax of its block, as quant.nf4_dequantize."""
        p = self.packed.long()
        idx = torch.stack([p >> 4, p & 15], dim=-1).reshape(-1, 64)  # (n_blocks, 64)
        return (self.codes[idx] * self.absmax[:, None]).reshape(self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NF4Matmul.apply(x, self)

    def extra_repr(self) -> str:
        return f"out_features={self.shape[0]}, in_features={self.shape[1]}, nf4"


# ---------------------------------------------------------------------------------------
# Injecting, counting, merging
# ---------------------------------------------------------------------------------------


def _modules(model, layers=None):
    """(layer index, Meta kind, parent module) for every matrix kind of every layer."""
    for i, layer in enumerate(model.layers):
        if layers is not None and i not in layers:
            continue
        for kind in META_TARGETS:
            yield i, kind, getattr(layer, _BLOCK[kind])


def add_lora(model, cfg: LoRAConfig):
    """Wrap cfg.targets of model (a Llama) in LoRALinear and freeze every other parameter;
    returns model. A second call raises: unload or reload the model first."""
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("model already has LoRA adapters; use a fresh model (or merge_and_unload)")
    for p in model.parameters():
        p.requires_grad_(False)
    for _, kind, parent in _modules(model, cfg.layers):
        if kind in cfg.targets:
            setattr(parent, kind, LoRALinear(getattr(parent, kind), cfg.r, cfg.alpha, cfg.dropout,
                                             cfg.rslora))
    model.lora_config = cfg
    return model


def lora_layers(model) -> dict[str, LoRALinear]:
    """Meta-style name ('layers.0.attention.wq') -> its LoRALinear."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def trainable_report(model) -> str:
    """How many parameters train, of how many (a base's NF4 values counted as parameters)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    total += sum(math.prod(m.shape) for m in model.modules() if isinstance(m, NF4Linear))
    return f"trainable {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)"


def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """A plain Meta-named float32 state dict with every adapter added in (NF4 bases
    dequantized): for Engine.from_state_dict, Llama.load_state_dict or saving."""
    out = {name: t.detach().clone() for name, t in model.state_dict().items()
           if ".lora_" not in name and ".base." not in name
           and not name.endswith((".packed", ".absmax", ".codes"))}
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            base = m.base.weight.detach() if isinstance(m.base, nn.Linear) else m.base.dequantize()
            out[name + ".weight"] = base.clone() if m.merged else base + m.delta_weight().detach()
        elif isinstance(m, NF4Linear) and not name.endswith(".base"):  # an NF4 base without adapter
            out[name + ".weight"] = m.dequantize()
    return out


def merge_and_unload(model):
    """Replace every LoRALinear (and bare NF4Linear) by a plain float32 Linear holding base +
    adapter; returns model."""
    sd = merged_state_dict(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRALinear | NF4Linear) and not name.endswith(".base"):
            parent_name, kind = name.rsplit(".", 1)
            w = sd[name + ".weight"]
            linear = nn.Linear(w.shape[1], w.shape[0], bias=False)
            linear.weight = nn.Parameter(w)
            setattr(model.get_submodule(parent_name), kind, linear)
    return model


def quantize_base_nf4(model, kinds: tuple[str, ...] | str = "all-linear"):
    """QLoRA's base: every matrix of `kinds` in every layer becomes a frozen NF4Linear
    (the embedding and the classifier stay float32); returns model. Row lengths must be
    multiples of 64 (NF4's block)."""
    for i, kind, parent in _modules(model):
        if kind in resolve_targets(kinds):
            lin = getattr(parent, kind)
            setattr(parent, kind, NF4Linear(lin.weight, name=f"layers.{i}.{_BLOCK[kind]}.{kind}.weight"))
    return model


def memory_report(model) -> dict[str, int]:
    """Bytes held by the model's parts: float32 parameters that do not train, NF4 bases
    (codes and absmaxes), the adapters, and the AdamW state of the adapters (two moments)."""
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    adapters = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    nf4 = sum(m.packed.numel() + 4 * m.absmax.numel() for m in model.modules() if isinstance(m, NF4Linear))
    return {"frozen float32": frozen, "NF4 base": nf4, "adapters": adapters, "AdamW state": 2 * adapters}


# ---------------------------------------------------------------------------------------
# peft's files
# ---------------------------------------------------------------------------------------


def _peft_key(layer: int, kind: str, ab: str) -> str:
    module = f"{_HF_BLOCK[_BLOCK[kind]]}.{HF_NAMES[kind]}"
    return f"base_model.model.model.layers.{layer}.{module}.lora_{ab}.weight"


def _rope_heads(kind: str, args) -> int | None:
    return rope_heads(f"layers.0.attention.{kind}.weight", args)  # wq, wk: HF permutes their rows


def save_adapter(model, path: str | Path, base_model: str | None = None) -> Path:
    """Write model's adapters in peft's format to directory path; returns it."""
    from safetensors.torch import save_file

    cfg: LoRAConfig = model.lora_config
    tensors = {}
    for name, m in lora_layers(model).items():
        _, layer, _, kind = name.split(".")
        b = m.lora_B.detach()
        heads = _rope_heads(kind, model.args)
        if heads is not None:
            b = permute_meta_to_hf(b, heads)
        tensors[_peft_key(int(layer), kind, "A")] = m.lora_A.detach().contiguous()
        tensors[_peft_key(int(layer), kind, "B")] = b.contiguous()
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": cfg.r, "lora_alpha": cfg.alpha,
              "lora_dropout": cfg.dropout, "target_modules": sorted(HF_NAMES[t] for t in cfg.targets),
              "use_rslora": cfg.rslora, "bias": "none", "fan_in_fan_out": False,
              "inference_mode": True, "init_lora_weights": True,
              "layers_to_transform": None if cfg.layers is None else list(cfg.layers),
              "base_model_name_or_path": base_model, "modules_to_save": None}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path / WEIGHTS_FILE, metadata={"format": "pt"})
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def read_adapter_config(path: str | Path) -> LoRAConfig:
    """A peft adapter_config.json -> LoRAConfig, refusing what this module cannot run."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {path}: not a peft adapter directory")
    c = json.loads(file.read_text())
    if c.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{file}: peft_type {c.get('peft_type')!r}; only LORA adapters are supported")
    for key, ok in [("bias", "none"), ("fan_in_fan_out", False), ("use_dora", False)]:
        if c.get(key, ok) not in (ok, None):
            raise ValueError(f"{file}: {key}={c[key]!r} is not supported (accepted: {ok!r})")
    for key in ("modules_to_save", "rank_pattern", "alpha_pattern"):
        if c.get(key):
            raise ValueError(f"{file}: {key}={c[key]!r} is not supported (accepted: empty)")
    targets = c.get("target_modules")
    if isinstance(targets, str) and targets != "all-linear":
        raise ValueError(f"{file}: target_modules as a regex ({targets!r}) is not supported; "
                         "give a list of module names")
    layers = c.get("layers_to_transform")
    return LoRAConfig(r=int(c["r"]), alpha=float(c.get("lora_alpha", c["r"])),
                      dropout=float(c.get("lora_dropout", 0.0)), targets=targets,
                      rslora=bool(c.get("use_rslora", False)),
                      layers=None if layers is None else
                      tuple([layers] if isinstance(layers, int) else layers))


def load_adapter(model, path: str | Path):
    """Inject the adapter at path (peft's format) into model (a plain Llama, or one with an
    NF4 base) and load its weights; returns model. Every tensor name and shape is checked."""
    from minillama.formats.safetensors import read_safetensors

    cfg = read_adapter_config(path)
    add_lora(model, cfg)
    tensors = dict(read_safetensors(Path(path) / WEIGHTS_FILE))
    # peft writes "...q_proj.lora_A.weight"; older files may carry the adapter name
    tensors = {k.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B."): v
               for k, v in tensors.items()}
    expected = {}
    for name, m in lora_layers(model).items():
        _, layer, _, kind = name.split(".")
        expected[_peft_key(int(layer), kind, "A")] = (m, "A", kind)
        expected[_peft_key(int(layer), kind, "B")] = (m, "B", kind)
    unknown = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    if unknown or missing:
        raise ValueError(f"{path}: adapter tensors do not match its config (r={cfg.r}, targets "
                         f"{', '.join(cfg.targets)}): unknown {unknown[:3]}, missing {missing[:3]}")
    for key, (m, ab, kind) in expected.items():
        param = m.lora_A if ab == "A" else m.lora_B
        value = tensors[key]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
        t = torch.from_numpy(np.array(value, dtype=np.float32))  # a copy: the file is a read-only map
        heads = _rope_heads(kind, model.args)
        if ab == "B" and heads is not None:
            t = permute_hf_to_meta(t, heads)
        with torch.no_grad():
            param.copy_(t)
    return model
