"""Hugging Face transformers' Llama format: config.json plus safetensors, sharded or not.

    args = read_hf_config(path)            # config.json -> ModelArgs
    load_hf_weights(model, path)           # *.safetensors -> a Llama built from args
    save_hf(model, path)                   # a directory AutoModelForCausalLM loads

(`Llama.from_pretrained` and `Llama.save_pretrained` call these.)

Two things differ from Meta's layout besides the config keys:
- the names, translated in one table, `HF_TO_META`;
- wq and wk: transformers applies RoPE in its rotate-half form, pairing features
  (i, i + head_dim/2) where Meta pairs (2i, 2i+1), so its conversion script stores each
  head's rows of wq and wk reordered (`permute_meta_to_hf`, undone by `permute_hf_to_meta`).

Only safetensors are read: pickled `pytorch_model.bin` files can run code when loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from minillama.config import ModelArgs, RopeScaling, weight_shapes
from minillama.formats.safetensors import SafetensorsError, read_safetensors

# transformers' name -> ours; {i} is the layer index
HF_TO_META = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "layers.{i}.attention.wq.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "layers.{i}.attention.wk.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "layers.{i}.attention.wv.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "layers.{i}.attention.wo.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "layers.{i}.feed_forward.w1.weight",
    "model.layers.{i}.mlp.down_proj.weight": "layers.{i}.feed_forward.w2.weight",
    "model.layers.{i}.mlp.up_proj.weight": "layers.{i}.feed_forward.w3.weight",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.attention_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.ffn_norm.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}


def _compile(table: dict[str, str]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(re.escape(src).replace(r"\{i\}", r"(\d+)") + "$"), dst)
            for src, dst in table.items()]


_TO_META = _compile(HF_TO_META)
_TO_HF = _compile({v: k for k, v in HF_TO_META.items()})


def _translate(name: str, rules: list[tuple[re.Pattern, str]], what: str) -> str:
    for pattern, target in rules:
        m = pattern.match(name)
        if m:
            return target.replace("{i}", m.group(1)) if m.groups() else target
    known = HF_TO_META if what == "transformers" else HF_TO_META.values()
    raise ValueError(f"unknown {what} tensor {name!r}: not a Llama weight (known: "
                     f"{', '.join(known)})")


def hf_to_meta_name(name: str) -> str:
    """'model.layers.3.mlp.up_proj.weight' -> 'layers.3.feed_forward.w3.weight'."""
    return _translate(name, _TO_META, "transformers")


def meta_to_hf_name(name: str) -> str:
    """'layers.3.feed_forward.w3.weight' -> 'model.layers.3.mlp.up_proj.weight'."""
    return _translate(name, _TO_HF, "minillama")


def permute_meta_to_hf(w, n_heads: int):
    """Reorder each head's rows of wq/wk (n_heads * head_dim, dim) from Meta's interleaved
    pairs (2i, 2i+1) to HF's halves (i, i + head_dim/2). A torch tensor or a NumPy array."""
    rows, dim = w.shape
    head_dim = rows // n_heads
    w = w.reshape(n_heads, head_dim // 2, 2, dim)  # row 2i + c of a head -> [i, c]
    return w.swapaxes(1, 2).reshape(rows, dim)  # -> row c * head_dim/2 + i


def permute_hf_to_meta(w, n_heads: int):
    """The inverse of permute_meta_to_hf: HF's halves back to Meta's interleaved pairs."""
    rows, dim = w.shape
    head_dim = rows // n_heads
    w = w.reshape(n_heads, 2, head_dim // 2, dim)  # row c * head_dim/2 + i of a head -> [c, i]
    return w.swapaxes(1, 2).reshape(rows, dim)  # -> row 2i + c


# ---------------------------------------------------------------------------------------
# config.json <-> ModelArgs
# ---------------------------------------------------------------------------------------

_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "vocab_size")
# HF's rope_parameters keys -> RopeScaling fields (rope_theta and rope_type are handled apart)
_ROPE_KEYS = {"factor": "factor", "original_max_position_embeddings":
              "original_max_position_embeddings", "low_freq_factor": "low_freq_factor",
              "high_freq_factor": "high_freq_factor", "beta_fast": "beta_fast",
              "beta_slow": "beta_slow", "attention_factor": "attention_factor",
              "truncate": "truncate"}
_HF_ROPE_TYPES = {"linear": "linear", "dynamic": "dynamic", "llama3": "llama3", "yarn": "yarn"}


def config_from_hf(cfg: dict) -> ModelArgs:
    """A transformers LlamaConfig dict (v4 or v5 rope keys) -> ModelArgs; rejects what we
    don't implement (biases, other activations, head_dim != hidden/heads, partial RoPE)."""
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"config.json lacks {missing}, needed to build a Llama")
    if cfg.get("model_type", "llama") != "llama":
        raise ValueError(f"config.json has model_type {cfg['model_type']!r}, expected 'llama'")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported: Llama uses 'silu'")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ValueError(f"{key}=true is not supported: Llama's linear layers have no bias")
    dim, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
    if cfg.get("head_dim") is not None and cfg["head_dim"] * n_heads != dim:
        raise ValueError(
            f"head_dim {cfg['head_dim']} != hidden_size / num_attention_heads = {dim} / "
            f"{n_heads}: minillama needs head_dim * n_heads == dim"
        )
    theta, scaling = _rope_from_hf(cfg)
    return ModelArgs(
        dim=dim,
        n_layers=cfg["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
        vocab_size=cfg["vocab_size"],
        hidden_dim=cfg["intermediate_size"],
        norm_eps=cfg.get("rms_norm_eps", 1e-6),  # LlamaConfig's defaults for absent keys
        rope_theta=theta,
        rope_scaling=scaling,
        max_seq_len=_max_seq_len_from_hf(cfg, scaling),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )


def _rope_from_hf(cfg: dict) -> tuple[float, RopeScaling | None]:
    # transformers 5 writes rope_parameters; 4.x wrote rope_theta plus rope_scaling
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    if params.pop("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not supported: Llama rotates whole heads")
    if rope_type == "default":
        return theta, None
    if rope_type not in _HF_ROPE_TYPES:
        raise ValueError(f"rope_type {rope_type!r} is not supported; supported: "
                         f"{['default', *_HF_ROPE_TYPES]}")
    unknown = set(params) - set(_ROPE_KEYS)
    if unknown:
        raise ValueError(f"rope_parameters keys {sorted(unknown)} are not supported for "
                         f"rope_type {rope_type!r}")
    fields = {_ROPE_KEYS[k]: v for k, v in params.items() if v is not None}
    if rope_type in ("dynamic", "yarn", "llama3"):
        # transformers measures "dynamic" against max_position_embeddings, and fills in the
        # others' original length from it when absent
        fields.setdefault("original_max_position_embeddings",
                          cfg.get("max_position_embeddings", 2048))
    return theta, RopeScaling(type=_HF_ROPE_TYPES[rope_type], **fields)


def _max_seq_len_from_hf(cfg: dict, scaling: RopeScaling | None) -> int:
    max_positions = cfg.get("max_position_embeddings", 2048)  # LlamaConfig's default
    if scaling is not None and scaling.type == "dynamic":
        # transformers' max_position_embeddings is where dynamic scaling *starts*; it has no
        # upper limit, and we need one for the RoPE table and the cache: factor times longer
        return int(max_positions * scaling.factor)
    return max_positions


def config_to_hf(args: ModelArgs, dtype="float32") -> dict:
    """ModelArgs -> a config.json dict that transformers' LlamaConfig reads."""
    rope = {"rope_type": "default", "rope_theta": args.rope_theta}
    max_positions = args.max_seq_len
    s = args.rope_scaling
    if s is not None:
        if s.type == "ntk":
            raise ValueError(
                "rope scaling 'ntk' (static NTK-aware) has no transformers rope_type; use "
                "'dynamic', or fold it into rope_theta = theta * factor ** (d / (d - 2))"
            )
        rope.update(rope_type=s.type, factor=s.factor)
        if s.type == "dynamic":
            # where transformers starts scaling; our longer max_seq_len has no HF key
            max_positions = s.original_max_position_embeddings
        if s.type in ("llama3", "yarn"):
            rope["original_max_position_embeddings"] = s.original_max_position_embeddings
        if s.type == "llama3":
            rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor)
        if s.type == "yarn":
            rope.update(beta_fast=s.beta_fast, beta_slow=s.beta_slow, truncate=s.truncate)
            if s.attention_factor is not None:
                rope["attention_factor"] = float(s.attention_factor)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.ffn_hidden_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads,
        "head_dim": args.head_dim,
        "vocab_size": args.vocab_size,
        "rms_norm_eps": args.norm_eps,
        "max_position_embeddings": max_positions,
        "tie_word_embeddings": args.tie_embeddings,
        "rope_parameters": rope,
        "rope_theta": args.rope_theta,  # transformers 4.x reads this key
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "dtype": str(dtype).removeprefix("torch."),
    }


def read_hf_config(path: str | Path) -> ModelArgs:
    """Read path/config.json into ModelArgs."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"no config.json in {path}: not a transformers model directory")
    try:
        cfg = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    return config_from_hf(cfg)


# ---------------------------------------------------------------------------------------
# safetensors: reading (one file or shards with an index) and writing
# ---------------------------------------------------------------------------------------

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def iter_safetensors(path: str | Path, maps: list | None = None) -> Iterator[tuple[str, np.ndarray, str]]:
    """Yield (name, NumPy array, file name) for every tensor of a transformers directory:
    read-only views of each file's memory map (bfloat16 widened to float32); each file's
    FileMap is appended to maps if given."""
    path = Path(path)
    if (path / INDEX_FILE).is_file():
        weight_map = json.loads((path / INDEX_FILE).read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{path / INDEX_FILE} has no 'weight_map' object")
        files = sorted(set(weight_map.values()))
    elif (path / SINGLE_FILE).is_file():
        weight_map, files = None, [SINGLE_FILE]
    else:
        raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {path} (only safetensors "
                                "are read: pickled .bin files can run code)")
    seen = set()
    for file in files:
        if not (path / file).is_file():
            raise FileNotFoundError(f"shard {file} listed in {INDEX_FILE} is missing from {path}")
        try:
            tensors = read_safetensors(path / file, maps)
            for name, array in tensors:
                if weight_map is not None and weight_map.get(name) != file:
                    raise ValueError(f"tensor {name!r} is in {file} but {INDEX_FILE} maps it "
                                     f"to {weight_map.get(name)!r}")
                seen.add(name)
                yield name, array, file
        except SafetensorsError as e:
            raise ValueError(f"cannot read {path / file}: {e}") from None
    if weight_map is not None and set(weight_map) - seen:
        raise ValueError(f"tensors {sorted(set(weight_map) - seen)} are listed in {INDEX_FILE} "
                         "but in none of the shards")


def read_hf_state_dict(path: str | Path, args: ModelArgs, maps: list | None = None
                       ) -> dict[str, np.ndarray]:
    """A transformers directory's tensors under Meta's names and in Meta's rotary layout
    (NumPy, file dtype; views of memory maps, which are appended to maps if given), every
    name and shape checked against args. Tied: no output.weight."""
    expected = weight_shapes(args)
    sd, lm_head = {}, None
    for hf_name, array, file in iter_safetensors(path, maps):
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # old checkpoints saved the RoPE table; it is recomputed, not learned
        try:
            name = hf_to_meta_name(hf_name)
        except ValueError as e:
            raise ValueError(f"{e} (in {file})") from None
        if args.tie_embeddings and name == "output.weight":
            lm_head = (array, file)
            continue
        if name not in expected:
            raise ValueError(f"unexpected tensor {hf_name!r} in {file}: config.json has "
                             f"n_layers={args.n_layers}")
        if name in sd:
            raise ValueError(f"tensor {hf_name!r} appears twice (again in {file})")
        if tuple(array.shape) != expected[name]:
            raise ValueError(f"tensor {hf_name!r} in {file} has shape {tuple(array.shape)}, "
                             f"expected {expected[name]} from config.json")
        heads = rope_heads(name, args)
        sd[name] = array if heads is None else permute_hf_to_meta(array, heads)
    missing = [f"{meta_to_hf_name(n)} {shape}" for n, shape in expected.items() if n not in sd]
    if missing:
        raise ValueError(f"{path} is missing tensors (name, expected shape): {', '.join(missing)}")
    if lm_head is not None:
        array, file = lm_head
        emb = sd["tok_embeddings.weight"]
        if array.shape != emb.shape or not np.array_equal(array.astype(np.float32),
                                                           emb.astype(np.float32)):
            raise ValueError(f"tensor 'lm_head.weight' in {file} differs from "
                             "'model.embed_tokens.weight' but config.json ties them")
    return sd


def load_hf_weights(model, path: str | Path) -> None:
    """Copy a transformers directory's tensors into model (a Llama), checking every name and shape."""
    import torch

    sd = read_hf_state_dict(path, model.args)
    targets = model.state_dict()  # our name -> tensor sharing storage with the parameter
    with torch.no_grad():
        for name, array in sd.items():
            targets[name].copy_(torch.from_numpy(np.array(array)))  # a writable copy


def rope_heads(name: str, args: ModelArgs) -> int | None:
    """The number of heads in a tensor whose rows HF permutes (wq, wk); None for others."""
    if name.endswith("attention.wq.weight"):
        return args.n_heads
    if name.endswith("attention.wk.weight"):
        return args.n_kv_heads
    return None


def save_hf(model, path: str | Path, max_shard_size: int | None = None) -> None:
    """Write model (a Llama) as config.json + safetensors; shards of at most max_shard_size
    bytes (plus an index) if given."""
    write_hf(path, model.args, model.state_dict(), str(model.tok_embeddings.weight.dtype),
             max_shard_size)


def write_hf(path: str | Path, args: ModelArgs, state_dict, dtype: str | None = None,
             max_shard_size: int | None = None) -> None:
    """Write Meta-named tensors (torch or NumPy) as a directory transformers loads:
    config.json + safetensors (sharded with an index past max_shard_size bytes). dtype:
    "float32", "float16" or "bfloat16" (torch tensors only), default the tensors' own."""
    import torch
    from safetensors.torch import save_file

    def as_torch(t):
        t = t if isinstance(t, torch.Tensor) else torch.from_numpy(np.array(t))  # a writable copy
        return t if dtype is None else t.to(getattr(torch, dtype.removeprefix("torch.")))

    if dtype is not None and dtype.removeprefix("torch.") not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype is {dtype!r}; accepted: float32, float16, bfloat16")
    first = as_torch(state_dict["tok_embeddings.weight"])
    config = config_to_hf(args, first.dtype)  # may refuse: check first
    expected = weight_shapes(args)
    tensors = {}
    for name, tensor in state_dict.items():
        if args.tie_embeddings and name == "output.weight":
            continue  # transformers re-ties lm_head to embed_tokens
        if name not in expected or tuple(tensor.shape) != expected[name]:
            raise ValueError(f"tensor {name} {tuple(tensor.shape)} does not match the config "
                             f"(expected {expected.get(name, 'no such tensor')})")
        tensor = as_torch(tensor)
        heads = rope_heads(name, args)
        if heads is not None:
            tensor = permute_meta_to_hf(tensor, heads)
        tensors[meta_to_hf_name(name)] = tensor.detach().to("cpu").contiguous()
    missing = set(expected) - set(state_dict)
    if missing:
        raise ValueError(f"the state dict lacks {sorted(missing)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for stale in [path / SINGLE_FILE, path / INDEX_FILE, *path.glob("model-*-of-*.safetensors")]:
        stale.unlink(missing_ok=True)  # a leftover index or shard would shadow the new file
    shards = _split(tensors, max_shard_size)
    metadata = {"format": "pt"}  # transformers refuses safetensors without it
    if len(shards) == 1:
        save_file(shards[0], path / SINGLE_FILE, metadata=metadata)
    else:
        weight_map = {}
        for k, shard in enumerate(shards, start=1):
            file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, path / file, metadata=metadata)
            weight_map.update(dict.fromkeys(shard, file))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _split(tensors: dict, max_bytes: int | None) -> list[dict]:
    """Group tensors, in order, into shards of at most max_bytes (one tensor may exceed it)."""
    if max_bytes is None:
        return [tensors]
    if max_bytes <= 0:
        raise ValueError(f"max_shard_size must be a positive number of bytes, got {max_bytes}")
    shards, size = [{}], 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards
