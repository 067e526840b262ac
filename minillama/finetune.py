"""Instruction tuning with LoRA or QLoRA (lesson 11): `minillama finetune`.

    model, tok = load_model()                          # the shipped story model (torch)
    cfg = FinetuneConfig(method="lora", steps=400)     # or method="qlora": an NF4 base
    history = finetune(model, tok, cfg)                # adapters only; a progress bar
    print(follow_score(model, tok, eval_requests(50), cfg.template))

The data are `minillama.instruct`'s pairs (a request, the story that answers it) in the
Alpaca or the Llama 2 chat template; the loss is the next-token cross-entropy on the
answer's tokens only (`masked_loss`: the prompt is given, not learned). The score is the
share of held-out requests (unseen name-animal-place triples, half of them in unseen
phrasings) whose greedy answer names the requested name, animal and place; it is decoded
with the Numba engine on the merged weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minillama import instruct, lora

ANSWER_TOKENS = 200  # greedy tokens per scored answer: the name, pet and place come early


@dataclass
class FinetuneConfig:
    """What `finetune` trains: the method, the adapter, the data and the optimiser."""

    method: str = "lora"  # "lora", or "qlora" (the frozen base in NF4)
    template: str = "chat"  # "chat" (Llama 2) or "alpaca"
    system: str | None = None  # chat: a system prompt for every example
    # defaults measured on the shipped model (2 threads, AMD EPYC): r 16, lr 3e-3, answers
    # cut at 64 tokens: 7% of held-out requests followed at step 150, 90% at 300, 100% at
    # 600 (40 requests, half in unseen phrasings), about 0.85 s a step
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: str | tuple[str, ...] = "all-linear"
    rslora: bool = False
    steps: int = 400
    batch_size: int = 8
    lr: float = 3e-3
    warmup: int = 20
    n_pairs: int = 4000  # distinct training pairs drawn from the generator
    answer_tokens: int | None = 64  # cut answers after this many tokens (None: whole stories)
    whole_share: float = 0.25  # ... except this share of the pairs, kept whole with their EOS
    seed: int = 0

    def __post_init__(self):
        if self.method not in ("lora", "qlora"):
            raise ValueError(f"method must be 'lora' or 'qlora', got {self.method!r}")
        if self.template not in instruct.TEMPLATES:
            raise ValueError(f"template must be one of {instruct.TEMPLATES}, got {self.template!r}")
        for name in ("steps", "batch_size", "n_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def lora_config(self) -> lora.LoRAConfig:
        return lora.LoRAConfig(r=self.r, alpha=self.alpha, dropout=self.dropout,
                               targets=self.targets, rslora=self.rslora)


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions where mask is 1: logits (B, T, V), targets and
    mask (B, T). The prompt's positions (mask 0) add nothing, not even to the mean's count."""
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    m = mask.flatten().to(losses.dtype)
    return (losses * m).sum() / m.sum().clamp(min=1)


def encode_pairs(tok, pairs, template: str, system: str | None = None) -> list[instruct.Tokens]:
    """Each pair as ids and a loss mask in the template."""
    return [instruct.template_ids(tok, p.instruction, p.response, template, system) for p in pairs]


def cut_answer(e: instruct.Tokens, n: int) -> instruct.Tokens:
    """e with its answer cut after n tokens (and so without its EOS): the name, the pet
    and the place come in a story's first sentences, and a shorter example costs less."""
    start = e.mask.index(1) if 1 in e.mask else len(e.ids)
    return instruct.Tokens(e.ids[:start + n], e.mask[:start + n])


def collate(examples: list[instruct.Tokens], pad_id: int = 0):
    """(x, y, mask) tensors (B, T): inputs, next-token targets and the targets' loss mask,
    right-padded to the longest example (padding has mask 0; attention is causal, so it
    never reaches a real position)."""
    T = max(len(e.ids) for e in examples) - 1
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y, m = x.clone(), torch.zeros((len(examples), T))
    for i, e in enumerate(examples):
        n = len(e.ids) - 1
        x[i, :n] = torch.tensor(e.ids[:-1])
        y[i, :n] = torch.tensor(e.ids[1:])
        m[i, :n] = torch.tensor(e.mask[1:], dtype=torch.float32)
    return x, y, m


def lr_at(step: int, cfg: FinetuneConfig) -> float:
    """Linear warmup, then cosine down to 10% of cfg.lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, t))))


def prepare(model, cfg: FinetuneConfig):
    """model (a Llama) with its base in NF4 if cfg.method is qlora, and adapters added."""
    if cfg.method == "qlora":
        lora.quantize_base_nf4(model)
    return lora.add_lora(model, cfg.lora_config())


def finetune(model, tok, cfg: FinetuneConfig, progress: bool = True, log=None) -> list[dict]:
    """Train model's adapters (prepare() is called if it has none) on cfg.n_pairs pairs;
    returns the history, one dict per step: step, loss, lr, seconds (cumulative)."""
    from tqdm.auto import tqdm

    if not lora.lora_layers(model):
        prepare(model, cfg)
    max_len = model.args.max_seq_len
    examples = [e for e in encode_pairs(tok, instruct.instruction_pairs(cfg.n_pairs, cfg.seed),
                                        cfg.template, cfg.system) if len(e.ids) <= max_len]
    if cfg.answer_tokens is not None:  # every 1 / whole_share-th pair stays whole
        every = round(1 / cfg.whole_share) if cfg.whole_share > 0 else 0
        examples = [e if every and i % every == 0 else cut_answer(e, cfg.answer_tokens)
                    for i, e in enumerate(examples)]
    if not examples:
        raise ValueError(f"no training example fits max_seq_len {max_len}")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    history, t0 = [], time.perf_counter()
    model.train()
    bar = tqdm(range(cfg.steps), desc=f"{cfg.method} r={cfg.r}", disable=not progress)
    for step in bar:
        batch = [examples[i] for i in rng.integers(0, len(examples), cfg.batch_size)]
        x, y, m = collate(batch)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = masked_loss(model(x), y, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.append(dict(step=step + 1, loss=float(loss.detach()), lr=lr_at(step, cfg),
                            seconds=time.perf_counter() - t0))
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
        if log is not None:
            log(history[-1])
    model.eval()
    return history


def merged_engine(model):
    """The Numba engine on model's merged weights (adapters added, an NF4 base dequantized)."""
    from minillama.engine import Engine

    return Engine.from_state_dict(model.args, lora.merged_state_dict(model))


def answers(engine, tok, requests, template: str, system: str | None = None,
            max_new_tokens: int = ANSWER_TOKENS) -> list[str]:
    """Greedy answers of an Engine to each request's instruction in the template."""
    out = []
    for r in requests:
        prompt = instruct.template_ids(tok, r.instruction, None, template, system).ids
        n = min(max_new_tokens, engine.args.max_seq_len - len(prompt))
        ids = engine.generate(prompt, n, temperature=0.0, stop_ids=[tok.eos_id])
        out.append(tok.decode(ids))
    return out


def follow_score(model_or_engine, tok, requests, template: str, system: str | None = None) -> float:
    """Share of requests whose greedy answer names the requested name, animal and place."""
    engine = model_or_engine if hasattr(model_or_engine, "step") else merged_engine(model_or_engine)
    return instruct.score(answers(engine, tok, requests, template, system), requests)


def write_run(out: str | Path, model, tok_path: str | Path, cfg: FinetuneConfig, history: list[dict],
              score: dict | None = None) -> Path:
    """out/adapter (peft's files), out/loss.csv, out/loss.png and out/run.json."""
    import json

    out = Path(out)
    lora.save_adapter(model, out / "adapter", base_model=str(tok_path))
    lines = ["step,loss,lr,seconds"] + [f"{h['step']},{h['loss']:.5f},{h['lr']:.6g},{h['seconds']:.2f}"
                                         for h in history]
    (out / "loss.csv").write_text("\n".join(lines) + "\n")
    (out / "run.json").write_text(json.dumps({"config": asdict(cfg), "score": score,
                                              "seconds": history[-1]["seconds"] if history else 0.0,
                                              "trainable": lora.trainable_report(model)},
                                             indent=2, default=str) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        steps, losses = [h["step"] for h in history], [h["loss"] for h in history]
        ax.plot(steps, losses, lw=0.8)
        ax.set(xlabel="step", ylabel="answer loss (nats/token)",
               title=f"{cfg.method}: r={cfg.r}, {cfg.template}")
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=110)
        plt.close(fig)
    except ImportError:
        pass
    return out
