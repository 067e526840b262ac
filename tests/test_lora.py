"""Tests for minillama/lora.py: LoRA and QLoRA against peft, transformers and hand arithmetic.

- A LoRA layer is base(x) + scaling * (x A^T) B^T, checked against that formula; fresh
  adapters change nothing (B = 0); A's init is peft's (kaiming-uniform, a = sqrt 5: bound
  1/sqrt(in)); rsLoRA scales by alpha / sqrt(r).
- Targets: Meta names, transformers names and "all-linear" resolve to the same sets;
  unknown names are refused with the accepted ones listed.
- Only adapters train, and their count is r (in + out) per target, by hand.
- Merge / unmerge: the merged model's logits equal the adapted model's; unmerge restores
  the base weights; the merged state dict runs in the Numba engine with the same logits.
- peft: our adapter, saved in peft's format, loads with peft onto the transformers export
  of the same base and gives the same logits (unmerged and merged); an adapter made by
  peft loads here and gives peft's logits; target_modules agree as sets.
- QLoRA: NF4Linear's forward equals x @ dequant(W)^T with the dequantized W of
  minillama.quant (byte-identical to bitsandbytes, tests/test_quant.py); its input
  gradient equals autograd through that W; the NF4 base takes ~1/7 of float32's bytes.

Tolerances. Logits are O(1) (tests/helpers.randomize). minillama and transformers differ
in summation order and RoPE angles (float64 vs float32 tables): 1e-5 in
tests/test_formats_hf.py; with an adapter's extra matmul and peft's, ATOL = 1e-4.
Float32 merging rounds once per weight: 1e-4 too. The engine: 1e-4 (tests/test_engine.py).
"""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import pytest
import torch
from helpers import randomize

from minillama import lora, quant
from minillama.config import ModelArgs
from minillama.model import Llama

ATOL = 1e-4
ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, hidden_dim=128,
                 max_seq_len=32)


def model_with(targets="all-linear", r=4, alpha=8.0, seed=0, rslora=False, random_b=True):
    """A random base with adapters whose B is random too (a fresh B = 0 would test nothing)."""
    model = randomize(Llama(ARGS), seed=seed)
    lora.add_lora(model, lora.LoRAConfig(r=r, alpha=alpha, targets=targets, rslora=rslora))
    gen = torch.Generator().manual_seed(seed + 100)
    if random_b:
        with torch.no_grad():
            for m in lora.lora_layers(model).values():
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=gen) / math.sqrt(m.r))
    return model.eval()


def ids(n=12, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, ARGS.vocab_size, (2, n)))


# --- the layer ----------------------------------------------------------------------------


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_linear_is_base_plus_scaled_low_rank_product(rslora):
    torch.manual_seed(0)
    base = torch.nn.Linear(20, 12, bias=False)
    layer = lora.LoRALinear(base, r=3, alpha=6.0, rslora=rslora)
    x = torch.randn(5, 20)
    assert torch.equal(layer(x), base(x))  # B = 0: a fresh adapter changes nothing
    with torch.no_grad():
        layer.lora_B.normal_()
    scaling = 6.0 / (math.sqrt(3) if rslora else 3)
    want = x @ base.weight.T + scaling * (x @ layer.lora_A.T) @ layer.lora_B.T
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-5)
    # peft's init: kaiming_uniform_(a=sqrt(5)) on (r, in) is uniform within 1/sqrt(in)
    assert layer.lora_A.abs().max() <= 1 / math.sqrt(20) and layer.lora_A.std() > 0.05
    assert not base.weight.requires_grad


def test_dropout_only_on_the_adapter_path():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 8, bias=False)
    layer = lora.LoRALinear(base, r=2, alpha=2.0, dropout=0.5).train()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(64, 16)
    y = layer(x)
    adapter = y - base(x)  # what dropout may change
    layer.eval()
    assert not torch.allclose(y, layer(x))  # training: dropout acts
    torch.testing.assert_close(layer(x) - base(x), (x @ layer.lora_A.T) @ layer.lora_B.T)
    assert adapter.abs().sum() > 0


def test_targets_resolve_by_either_name():
    assert lora.resolve_targets("all-linear") == lora.META_TARGETS
    assert lora.resolve_targets(["q_proj", "v_proj"]) == ("wq", "wv") == lora.resolve_targets(("wv", "wq"))
    assert lora.resolve_targets(["gate_proj", "down_proj", "up_proj"]) == ("w1", "w2", "w3")
    with pytest.raises(ValueError, match="unknown LoRA target 'lm_head'; accepted: 'all-linear', wq"):
        lora.resolve_targets(["lm_head"])
    with pytest.raises(ValueError, match="rank r must be a positive integer"):
        lora.LoRAConfig(r=0)


def test_only_the_adapters_train_and_are_counted():
    model = model_with(targets=["wq", "w2"], r=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    kinds = [("attention", "wq"), ("feed_forward", "w2")]
    assert sorted(trainable) == sorted(f"layers.{i}.{b}.{k}.lora_{ab}" for i in range(2)
                                       for b, k in kinds for ab in "AB")
    by_hand = 2 * (4 * (64 + 64) + 4 * (128 + 64))  # r (in + out) per target per layer
    report = lora.trainable_report(model)
    assert report.startswith(f"trainable {by_hand:,} of ")
    total = sum(p.numel() for p in Llama(ARGS).parameters()) + by_hand
    assert f"of {total:,} parameters" in report


# --- merging ------------------------------------------------------------------------------


def test_merge_unmerge_and_the_merged_model_in_torch_and_the_engine():
    from minillama.engine import Engine

    model = model_with()
    x = ids()
    with torch.no_grad():
        adapted = model(x)
        base_wq = model.layers[0].attention.wq.base.weight.clone()
        sd = lora.merged_state_dict(model)
        for m in lora.lora_layers(model).values():
            m.merge()
        torch.testing.assert_close(model(x), adapted, rtol=0, atol=ATOL)
        for m in lora.lora_layers(model).values():
            m.unmerge()
        torch.testing.assert_close(model.layers[0].attention.wq.base.weight, base_wq, rtol=0, atol=1e-6)
        plain = Llama(ARGS)
        plain.load_state_dict(sd)  # Meta names only: strict load
        torch.testing.assert_close(plain.eval()(x), adapted, rtol=0, atol=ATOL)
    engine = Engine.from_state_dict(ARGS, sd)
    got = engine.prefill(x[0].tolist(), all_logits=True)
    np.testing.assert_allclose(got, adapted[0].numpy(), rtol=0, atol=ATOL)


# --- peft ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory):
    pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("base")
    randomize(Llama(ARGS), seed=0).save_pretrained(path)
    return path


def hf_model(path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_our_adapter_loads_in_peft_with_the_same_logits(hf_base, tmp_path):
    peft = pytest.importorskip("peft")
    model = model_with(targets=["wq", "wk", "wo", "w1", "w3"], rslora=True)  # q/k: permuted B
    lora.save_adapter(model, tmp_path / "adapter")
    pm = peft.PeftModel.from_pretrained(hf_model(hf_base), tmp_path / "adapter").eval()
    assert set(pm.peft_config["default"].target_modules) == {"q_proj", "k_proj", "o_proj", "gate_proj",
                                                             "up_proj"}
    x = ids()
    with torch.no_grad():
        ours, theirs = model(x), pm(x).logits
        torch.testing.assert_close(theirs, ours, rtol=0, atol=ATOL)
        merged = pm.merge_and_unload()(x).logits
    torch.testing.assert_close(merged, ours, rtol=0, atol=ATOL)


def test_a_peft_adapter_loads_here_with_peft_logits(hf_base, tmp_path):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=12, target_modules="all-linear", lora_dropout=0.0,
                             task_type="CAUSAL_LM")
    pm = peft.get_peft_model(hf_model(hf_base), config)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) / 2)
    pm.save_pretrained(tmp_path / "peft")
    model = lora.load_adapter(randomize(Llama(ARGS), seed=0), tmp_path / "peft").eval()
    assert model.lora_config.targets == lora.META_TARGETS  # peft's all-linear, lm_head excluded
    assert model.lora_config.scaling == 3.0
    x = ids(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pm.eval()(x).logits, rtol=0, atol=ATOL)


def test_bad_adapters_are_refused(tmp_path):
    model = model_with(targets=["wq"])
    lora.save_adapter(model, tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        lora.load_adapter(randomize(Llama(ARGS)), tmp_path)
    other = ModelArgs(**{**ARGS.__dict__, "dim": 128, "hidden_dim": 256})
    with pytest.raises(ValueError, match=r"lora_A.weight has shape \(4, 64\), expected \(4, 128\)"):
        lora.load_adapter(Llama(other), tmp_path / "a")
    cfg = (tmp_path / "a" / lora.CONFIG_FILE)
    cfg.write_text(cfg.read_text().replace('"q_proj"', '"q_proj", "v_proj"'))
    with pytest.raises(ValueError, match="missing"):
        lora.load_adapter(randomize(Llama(ARGS)), tmp_path / "a")
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        lora.add_lora(model, lora.LoRAConfig())


# --- QLoRA --------------------------------------------------------------------------------


def test_nf4_linear_forward_and_backward_use_the_dequantized_weight():
    torch.manual_seed(0)
    w = torch.randn(48, 128) / math.sqrt(128)
    layer = lora.NF4Linear(w)
    w_hat = torch.from_numpy(quant.dequantize(quant.nf4_quantize(w.numpy())))  # bnb's values
    torch.testing.assert_close(layer.dequantize(), w_hat, rtol=0, atol=0)
    x = torch.randn(3, 5, 128, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, x @ w_hat.T, rtol=0, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    x2 = x.detach().clone().requires_grad_(True)
    (x2 @ w_hat.T).backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-5)


def test_qlora_model_trains_only_adapters_and_matches_its_formula():
    model = randomize(Llama(ARGS), seed=0)
    fp32_bytes = sum(p.numel() * 4 for n, p in model.named_parameters()
                     if ".attention." in n or ".feed_forward." in n)
    lora.quantize_base_nf4(model)
    lora.add_lora(model, lora.LoRAConfig(r=4, alpha=8, targets="all-linear"))
    mem = lora.memory_report(model)
    n_weights = fp32_bytes // 4
    assert mem["NF4 base"] == n_weights * 9 // 16  # 4 bits + a float32 per 64: 4.5 bits, by hand
    layer = model.layers[1].feed_forward.w2
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 7, ARGS.hidden_dim)
    want = x @ layer.base.dequantize().T + 2.0 * (x @ layer.lora_A.T) @ layer.lora_B.T
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-5)
    loss = model(ids()).logsumexp(-1).mean()
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(".lora_" in n for n in grads)
    sd = lora.merged_state_dict(model)
    assert set(sd) == set(Llama(ARGS).state_dict())
