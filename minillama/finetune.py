"""Instruction tuning with LoRA or QLoRA (lesson 11): `minillama finetune`.

    model, tok = load_model()                          # the shipped story model (torch)
    cfg = FinetuneConfig(method="lora", steps=600)     # or method="qlora": an NF4 base
    history = finetune(model, tok, cfg)                # adapters only; a progress bar
    print(follow_score(model, tok, eval_requests(50), cfg.template))

The data are `minillama.instruct`'s pairs (a request, the story that answers it) in the
Alpaca or the Llama 2 chat template; the loss is the next-token cross-entropy on the
answer's tokens only (`masked_loss`: the prompt is given, not learned). The score is the
share of held-out requests (unseen name-animal-place triples, half of them in unseen
phrasings) whose greedy answer names the requested name, animal and place; it is decoded
with the Numba engine on the merged weights.

With `seq_len` (lesson 12, `minillama finetune --seq-len 1024 --rope-scaling linear:4`) the
data are instead windows of seq_len tokens of stories, every token learnt, and optionally
passkey documents (`minillama.longctx.batch_sampler`); `with_config_context` gives the
model the longer window and the scaled RoPE first, and `load_tuned` does the same when it
loads such an adapter.
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
    # defaults measured on the shipped model (2 threads, AMD EPYC Zen 4): r 16, lr 3e-3,
    # answers cut at 64 tokens, a quarter of the batches two-turn chats: of 120 held-out
    # requests (half in unseen phrasings) LoRA followed 98% after 600 steps (92% as a chat's
    # second message; 42% without two-turn batches), QLoRA 97% (98%), about 0.7 s a step
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: str | tuple[str, ...] = "all-linear"
    rslora: bool = False
    steps: int = 600
    batch_size: int = 8
    lr: float = 3e-3
    warmup: int = 20
    n_pairs: int = 4000  # distinct training pairs drawn from the generator
    answer_tokens: int | None = 64  # cut answers after this many tokens (None: whole stories)
    whole_share: float = 0.25  # ... except this share of the batches: whole stories with their EOS
    two_turn_share: float = 0.25  # chat: this share of the batches are two-turn conversations
    seed: int = 0
    # long context (lesson 12): with seq_len, the data are windows of seq_len tokens of
    # joined stories instead of instruction pairs, the model's RoPE scaled by rope_scaling
    # ("linear:4": see longctx.parse_scaling) and its window made seq_len
    seq_len: int | None = None
    rope_scaling: str | None = None
    passkey_share: float = 0.0  # long context: this share of the batches are passkey documents

    def __post_init__(self):
        if self.method not in ("lora", "qlora"):
            raise ValueError(f"method must be 'lora' or 'qlora', got {self.method!r}")
        if self.template not in instruct.TEMPLATES:
            raise ValueError(f"template must be one of {instruct.TEMPLATES}, got {self.template!r}")
        for name in ("steps", "batch_size", "n_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seq_len is not None and self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2 tokens or None (instruction data), got {self.seq_len}")
        if self.seq_len is None and (self.rope_scaling is not None or self.passkey_share):
            raise ValueError("rope_scaling and passkey_share need seq_len (a long-context fine-tune)")
        if self.rope_scaling is not None:
            from minillama.longctx import parse_scaling

            parse_scaling(self.rope_scaling)  # says what is wrong with it, if anything
        for name in ("whole_share", "two_turn_share", "passkey_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a share of the batches in [0, 1], got {getattr(self, name)}")
        if self.answer_tokens is not None and self.answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1 or None (whole answers), got {self.answer_tokens}")

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


def encode_two_turn(tok, pairs, system: str | None = None) -> list[instruct.Tokens]:
    """Two-turn chats, one per pair: the previous pair's request and whole story as the
    first turn (mask 0: context, not learnt), then this pair's request and story (mask 1).
    So the model learns to answer the latest request, not the first one it sees."""
    out = []
    for prev, cur in zip(pairs[-1:] + pairs[:-1], pairs):
        first = instruct.chat_ids(tok, [(prev.instruction, prev.response)], system)
        both = instruct.chat_ids(tok, [(prev.instruction, prev.response), (cur.instruction, cur.response)],
                                 system)
        n = len(first.ids)
        out.append(instruct.Tokens(both.ids, [0] * n + both.mask[n:]))
    return out


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


def batch_sampler(examples: list[instruct.Tokens], cfg: FinetuneConfig,
                  two_turn: list[instruct.Tokens] | None = None, max_len: int | None = None):
    """step -> cfg.batch_size examples drawn at random (seeded by cfg.seed, in step order).
    Answers are cut after cfg.answer_tokens, except in every round(1 / whole_share)-th
    batch, of whole stories with their EOS; with two_turn (chat), every
    round(1 / two_turn_share)-th batch (half a cycle later) is of two-turn chats, their
    second answer cut. Examples longer than max_len are left out. (A batch is padded to
    its longest example, so the kinds are not mixed: one whole story or one two-turn chat
    would pad all eight to its length, twice the time a step or more.)"""
    rng = np.random.default_rng(cfg.seed)

    def fit(pool):
        return [e for e in pool if max_len is None or len(e.ids) <= max_len]

    if cfg.answer_tokens is None:
        pools = {"one": fit(examples), "two": fit(two_turn or [])}
        every_whole = 0
    else:
        pools = {"one": fit([cut_answer(e, cfg.answer_tokens) for e in examples]), "whole": fit(examples),
                 "two": fit([cut_answer(e, cfg.answer_tokens) for e in two_turn or []])}
        every_whole = round(1 / cfg.whole_share) if cfg.whole_share > 0 else 0
    every_two = round(1 / cfg.two_turn_share) if two_turn and cfg.two_turn_share > 0 else 0
    for kind, pool in pools.items():
        if not pool and (kind == "one" or (kind == "whole" and every_whole) or (kind == "two" and every_two)):
            raise ValueError(f"no training example of kind {kind!r} fits max_seq_len {max_len}")

    def next_batch(step: int) -> list[instruct.Tokens]:
        if every_whole and step % every_whole == every_whole - 1:
            pool = pools["whole"]
        elif every_two and step % every_two == (every_two - 1) // 2:
            pool = pools["two"]
        else:
            pool = pools["one"]
        return [pool[i] for i in rng.integers(0, len(pool), cfg.batch_size)]

    return next_batch


def with_config_context(model, cfg: FinetuneConfig | dict):
    """model with the window and RoPE scaling of a long-context config (cfg.seq_len set):
    a new Llama or Engine (see longctx.with_context); model itself otherwise."""
    from minillama import longctx

    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    if get("seq_len") is None:
        return model
    return longctx.with_context(model, max(get("seq_len"), model.args.max_seq_len),
                                longctx.parse_scaling(get("rope_scaling")))


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
    model.use_sdpa(True)  # torch's fused attention: the same maths, about 12% faster a step here
    if cfg.seq_len is None:
        pairs = instruct.instruction_pairs(cfg.n_pairs, cfg.seed)
        examples = encode_pairs(tok, pairs, cfg.template, cfg.system)
        two_turn = encode_two_turn(tok, pairs, cfg.system) if cfg.template == "chat" else None
        next_batch = batch_sampler(examples, cfg, two_turn, max_len=model.args.max_seq_len)
    else:
        from minillama import longctx

        if model.args.max_seq_len < cfg.seq_len:
            raise ValueError(f"the model's window is {model.args.max_seq_len} tokens, shorter than "
                             f"seq_len {cfg.seq_len}: use with_config_context(model, cfg) first")
        next_batch = longctx.batch_sampler(tok, cfg.seq_len, cfg.batch_size, cfg.passkey_share, cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    history, t0 = [], time.perf_counter()
    model.train()
    what = f"{cfg.method} r={cfg.r}" + (f" {cfg.seq_len} tokens" if cfg.seq_len else "")
    bar = tqdm(range(cfg.steps), desc=what, disable=not progress)
    for step in bar:
        x, y, m = collate(next_batch(step))
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


def run_config(adapter: str | Path) -> dict:
    """The FinetuneConfig (as a dict) in the run.json that `write_run` puts beside the
    adapter at `adapter` (or in it, for the shipped ones); {} if there is none."""
    import json

    adapter = Path(adapter)
    for card in (adapter / "run.json", adapter.parent / "run.json"):
        if card.is_file():
            return json.loads(card.read_text()).get("config", {})
    return {}


def trained_on_nf4(adapter: str | Path) -> bool:
    """Whether the adapter at `adapter` was trained by QLoRA, on an NF4 base (its run.json)."""
    return run_config(adapter).get("method") == "qlora"


def load_tuned(adapter: str | Path, model: str | Path | None = None, nf4_base: bool | None = None):
    """(Llama, Tokenizer): the base model directory (default: the shipped model) with the
    peft adapter at `adapter` loaded, unmerged; the base in NF4 if nf4_base (None: as the
    adapter was trained, see trained_on_nf4), and with the window and RoPE scaling it was
    trained with if its run was a long-context one."""
    from minillama.pretrained import load_model

    net, tok = load_model(model)
    net = with_config_context(net, run_config(adapter))
    if nf4_base if nf4_base is not None else trained_on_nf4(adapter):
        lora.quantize_base_nf4(net)
    lora.load_adapter(net, adapter)
    return net.eval(), tok


def merged_engine(model):
    """The Numba engine on model's merged weights (adapters added, an NF4 base dequantized)."""
    from minillama.engine import Engine

    return Engine.from_state_dict(model.args, lora.merged_state_dict(model))


def answers(engine, tok, requests, template: str, system: str | None = None,
            max_new_tokens: int = ANSWER_TOKENS, turns: int = 1) -> list[str]:
    """Greedy answers of an Engine to each request's instruction in the template. turns=2
    (chat only): each request is the second message of a conversation whose first is the
    previous request (the last one's, for the first), answered by the model itself, as in
    `minillama chat`; the second answer is returned."""
    if turns not in (1, 2):
        raise ValueError(f"turns must be 1 or 2, got {turns!r}")
    if turns == 2 and template != "chat":
        raise ValueError(f"two-turn answers need the chat template, got {template!r}")

    def reply(prompt: list[int]) -> str:
        n = min(max_new_tokens, engine.args.max_seq_len - len(prompt))
        return tok.decode(engine.generate(prompt, n, temperature=0.0, stop_ids=[tok.eos_id])).strip()

    out = []
    for k, r in enumerate(requests):
        if turns == 1:
            out.append(reply(instruct.template_ids(tok, r.instruction, None, template, system).ids))
            continue
        first = requests[k - 1].instruction
        a1 = reply(instruct.chat_ids(tok, [(first, None)], system).ids)
        out.append(reply(instruct.chat_ids(tok, [(first, a1), (r.instruction, None)], system).ids))
    return out


def follow_score(model_or_engine, tok, requests, template: str, system: str | None = None,
                 turns: int = 1) -> float:
    """Share of requests whose greedy answer names the requested name, animal and place
    (turns=2: as the second message of a chat, see `answers`)."""
    engine = model_or_engine if hasattr(model_or_engine, "step") else merged_engine(model_or_engine)
    return instruct.score(answers(engine, tok, requests, template, system, turns=turns), requests)


def write_run(out: str | Path, model, tok_path: str | Path, cfg: FinetuneConfig, history: list[dict],
              score: dict | None = None) -> Path:
    """out/adapter (peft's files), out/loss.csv, out/loss.png and out/run.json."""
    import json

    from minillama.pretrained import COURSE_MODEL

    out = Path(out)
    shipped = Path(tok_path).resolve() == COURSE_MODEL.resolve()
    base = "minillama/assets/course" if shipped else str(tok_path)  # not this machine's path
    lora.save_adapter(model, out / "adapter", base_model=base)
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
        what = f"{cfg.seq_len} tokens, rope {cfg.rope_scaling or 'plain'}" if cfg.seq_len else cfg.template
        ax.set(xlabel="step", ylabel="loss (nats/token)" if cfg.seq_len else "answer loss (nats/token)",
               title=f"{cfg.method}: r={cfg.r}, {what}")
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=110)
        plt.close(fig)
    except ImportError:
        pass
    return out
