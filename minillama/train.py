"""Training a small Llama on a token stream: batches, AdamW, warmup + cosine, clipping,
gradient accumulation, evaluation, checkpoints and an exact resume, in one process or in
several (data parallel, `minillama.distributed`).

A run's batches are a pure function of (seed, step), and a checkpoint holds the model,
the optimizer state and the step, so a resumed run continues the same loss curve. With N
processes, rank r trains on rows r, r + N, ... of the same global batch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minillama.config import ModelArgs
from minillama.model import Llama


@dataclass
class TrainConfig:
    """Optimisation settings for one run (the model's shape lives in ModelArgs)."""

    steps: int = 2000
    batch_size: int = 32  # sequences per optimizer step (split into grad_accum micro-batches)
    seq_len: int = 256  # tokens per sequence; at most the model's max_seq_len
    grad_accum: int = 1  # micro-batches per step: same maths, less memory
    lr: float = 2e-3  # peak learning rate: small models tolerate a high one
    min_lr: float = 2e-4  # the cosine ends here (lr / 10, as in Chinchilla)
    warmup: int = 100  # linear warmup steps: Adam's early estimates are noisy
    weight_decay: float = 0.1  # on matrices only; norms and embeddings are not decayed
    betas: tuple[float, float] = (0.9, 0.95)  # Llama 2's values
    grad_clip: float = 1.0  # max global gradient norm (Llama 2's value)
    eval_every: int = 200
    eval_batches: int = 16
    ckpt_every: int = 500
    seed: int = 0
    # bfloat16 autocast: matmuls in bf16, weights and optimizer state in float32. On CPUs with
    # AMX or AVX512-BF16 it is several times faster; elsewhere it can be slower.
    bf16: bool = False
    extra: dict = field(default_factory=dict)  # free-form notes saved with the run


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


def tokenize_stories(tokenizer, stories) -> np.ndarray:
    """One uint16/int32 stream: BOS story EOS BOS story EOS ..."""
    ids: list[int] = []
    for s in stories:
        ids += tokenizer.encode(getattr(s, "text", s), bos=True, eos=True)
    return np.asarray(ids, dtype=np.uint16 if tokenizer.vocab_size <= 65536 else np.int32)


def get_batch(tokens: np.ndarray, batch_size: int, seq_len: int, seed: int,
              step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows for this step: inputs x and next-token targets y, each (batch, seq_len)."""
    if len(tokens) < seq_len + 1:
        raise ValueError(f"the token stream has {len(tokens)} tokens, fewer than one window "
                         f"of seq_len + 1 = {seq_len + 1}")
    rng = np.random.default_rng([seed, step])  # the same step always gets the same batch
    starts = rng.integers(0, len(tokens) - seq_len, size=batch_size)
    windows = np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64)
    xy = torch.from_numpy(windows)  # (batch, seq_len + 1)
    return xy[:, :-1], xy[:, 1:]


def eval_batches(tokens: np.ndarray, n: int, batch_size: int, seq_len: int):
    """Evenly spaced, non-overlapping windows for a stable validation loss."""
    n_windows = min(n * batch_size, (len(tokens) - 1) // seq_len)
    if n_windows == 0:
        raise ValueError(f"the evaluation split has {len(tokens)} tokens, fewer than one window "
                         f"of seq_len + 1 = {seq_len + 1}")
    starts = np.linspace(0, len(tokens) - seq_len - 1, n_windows).astype(np.int64)
    for i in range(0, n_windows, batch_size):
        w = np.stack([tokens[s : s + seq_len + 1] for s in starts[i : i + batch_size]])
        xy = torch.from_numpy(w.astype(np.int64))
        yield xy[:, :-1], xy[:, 1:]


# ---------------------------------------------------------------------------------------
# loss, schedule, optimizer
# ---------------------------------------------------------------------------------------


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (bsz, seqlen, vocab) against targets (bsz, seqlen)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup from 0 to lr over cfg.warmup steps, then cosine decay to min_lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, zero: bool = False) -> torch.optim.Optimizer:
    """AdamW with weight decay on 2-D weight matrices only (not norms, not embeddings). zero:
    torch's ZeroRedundancyOptimizer, each rank of a process group keeping the AdamW state
    of its share of the parameters only (ZeRO stage 1)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_matrix = p.dim() >= 2 and "tok_embeddings" not in name
        (decay if is_matrix else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if zero:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


@torch.no_grad()
def evaluate(model: Llama, tokens: np.ndarray, cfg: TrainConfig) -> float:
    """Mean next-token loss over evenly spaced windows of tokens (bf16 if cfg.bf16)."""
    was_training = model.training
    model.eval()
    losses = []
    for x, y in eval_batches(tokens, cfg.eval_batches, cfg.batch_size, cfg.seq_len):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(x)
        losses.append(next_token_loss(logits.float(), y).item())
    model.train(was_training)
    return float(np.mean(losses))


def train_step(model: Llama, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               cfg: TrainConfig, lr: float) -> tuple[float, float]:
    """One optimizer step over grad_accum micro-batches; returns (loss, grad norm). model
    may be wrapped in DistributedDataParallel: its gradients are then averaged over the ranks
    once, in the last micro-batch's backward (the others run under no_sync)."""
    import contextlib

    for group in opt.param_groups:
        group["lr"] = lr
    total = 0.0
    micro = list(zip(x.chunk(cfg.grad_accum), y.chunk(cfg.grad_accum)))
    for i, (xm, ym) in enumerate(micro):
        last = i == len(micro) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = model(xm)
            loss = next_token_loss(logits.float(), ym) / cfg.grad_accum
            loss.backward()
        total += loss.item()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total, float(norm)


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------


def save_checkpoint(path: Path, model: Llama, opt: torch.optim.Optimizer, step: int,
                    cfg: TrainConfig, history: list[dict], optimizer_state: dict | None = None) -> None:
    """model in HF format + trainer_state.pt (optimizer tensors, loadable weights_only);
    optimizer_state replaces opt.state_dict() (a ZeRO optimizer's, consolidated on rank 0)."""
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(tmp)
    state = opt.state_dict() if optimizer_state is None else optimizer_state
    torch.save({"optimizer": state, "step": step}, tmp / "trainer_state.pt")
    (tmp / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    (tmp / "history.json").write_text(json.dumps(history))
    if path.exists():
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    tmp.rename(path)  # a crash mid-write never leaves a half checkpoint


def load_checkpoint(path: Path, model: Llama, opt: torch.optim.Optimizer) -> tuple[int, list]:
    """Restore weights and optimizer state saved by save_checkpoint; returns (step, history)."""
    from minillama.formats.hf import load_hf_weights

    if not (path / "trainer_state.pt").exists():
        raise FileNotFoundError(f"{path}: no trainer_state.pt, so not a training checkpoint")
    load_hf_weights(model, path)
    state = torch.load(path / "trainer_state.pt", weights_only=True)
    opt.load_state_dict(state["optimizer"])
    return int(state["step"]), json.loads((path / "history.json").read_text())


def check_output_dir(out: Path) -> None:
    """Fail now, not after an hour of training, if out cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write to the output folder {out}: {e.strerror}") from None


def check_config(args: ModelArgs, cfg: TrainConfig) -> None:
    """Settings that cannot work together, raised before any data is prepared."""
    if cfg.seq_len > args.max_seq_len:
        raise ValueError(f"seq_len {cfg.seq_len} exceeds the model's max_seq_len {args.max_seq_len}")
    if cfg.batch_size % cfg.grad_accum:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by grad_accum {cfg.grad_accum}")
    if cfg.steps <= 0 or cfg.warmup < 0:
        raise ValueError(f"steps must be > 0 and warmup >= 0, got {cfg.steps} and {cfg.warmup}")


def check_data(args: ModelArgs, cfg: TrainConfig, tokenizer, train: np.ndarray,
               val: np.ndarray) -> None:
    """A tokenizer that does not fit the model, or splits too small for one window."""
    if tokenizer.vocab_size != args.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} pieces but the model's "
                         f"vocab_size is {args.vocab_size}: pass a matching --vocab-size")
    need = cfg.seq_len + 1
    for name, toks in (("training", train), ("validation", val)):
        if len(toks) < need:
            raise ValueError(f"the {name} split has {len(toks)} tokens; it needs at least "
                             f"seq_len + 1 = {need}: give a larger corpus")


def write_curves(out: Path, history: list[dict]) -> None:
    """loss.csv and loss.png from the run's history."""
    if not history:
        return
    keys = sorted({k for h in history for k in h}, key=lambda k: (k != "step", k))
    with open(out / "loss.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    from matplotlib.figure import Figure  # not pyplot: leave a notebook's backend alone

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    steps = [h["step"] for h in history if "train_loss" in h]
    ax.plot(steps, [h["train_loss"] for h in history if "train_loss" in h], label="train", lw=1)
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)


def train(model: Llama, train_tokens: np.ndarray, val_tokens: np.ndarray, cfg: TrainConfig,
          out: Path | None = None, resume: bool = False, progress: bool = True,
          stop_after: int | None = None, world=None, zero: bool = False) -> list[dict]:
    """Train model in place for cfg.steps; checkpoints to out/checkpoint. Returns the history.

    stop_after ends this session at that step (with a checkpoint) without changing the
    schedule, so a long run can be split across sessions with resume=True.

    world (a `distributed.World` of an initialised process group): this process is one rank
    of a data-parallel run. It trains on its rows of each global batch through
    DistributedDataParallel (zero: with a ZeroRedundancyOptimizer); the losses logged are the
    means over all ranks; only rank 0 shows progress, evaluates and writes checkpoints.
    """
    from tqdm.auto import tqdm

    from minillama.distributed import World, mean_over_ranks, rank_rows

    world = world or World()
    if world.distributed:
        from minillama.distributed import check_world

        check_world(cfg.batch_size, cfg.grad_accum, world.world)
    if zero and not world.distributed:
        raise ValueError("zero=True shards the optimizer over a process group: it needs world > 1")
    torch.manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg, zero=zero)
    start, history = 0, []
    ckpt = out / "checkpoint" if out is not None else None
    if resume:
        if ckpt is None or not ckpt.exists():
            raise FileNotFoundError(f"nothing to resume: {ckpt} does not exist")
        start, history = load_checkpoint(ckpt, model, opt)
    model.train()
    net = model
    if world.distributed:  # after loading: DDP broadcasts rank 0's weights to every rank
        net = torch.nn.parallel.DistributedDataParallel(model)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    # pass `disable` only to switch the bar off: otherwise tqdm honours TQDM_DISABLE
    show = progress and world.is_main
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc="training",
               **({} if show else {"disable": True}))
    tokens_per_step = cfg.batch_size * cfg.seq_len
    for step in bar:
        t0 = time.perf_counter()
        x, y = get_batch(train_tokens, cfg.batch_size, cfg.seq_len, cfg.seed, step)
        if world.distributed:
            x, y = rank_rows(x, world.rank, world.world), rank_rows(y, world.rank, world.world)
        lr = lr_at(step, cfg)
        loss, norm = train_step(net, opt, x, y, cfg, lr)
        loss = mean_over_ranks(loss, world)  # this rank's loss is the mean of its rows only
        tps = tokens_per_step / (time.perf_counter() - t0)
        row = {"step": step + 1, "train_loss": loss, "lr": lr, "grad_norm": norm,
               "tokens_per_s": round(tps)}
        if world.is_main and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            row["val_loss"] = evaluate(model, val_tokens, cfg)
        history.append(row)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", tok_s=f"{tps:,.0f}")
        if ckpt is not None and ((step + 1) % cfg.ckpt_every == 0 or step + 1 == end):
            state = None
            if zero:  # every rank sends its shard of the optimizer state to rank 0
                opt.consolidate_state_dict(to=0)
                state = opt.state_dict() if world.is_main else None
            if world.is_main:
                save_checkpoint(ckpt, model, opt, step + 1, cfg, history, state)
                write_curves(out, history)
    return history


def bf16_is_fast() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AMX or AVX512-BF16)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def default_threads() -> int:
    """All cores this process may use (torch's default can exceed the cgroup's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
