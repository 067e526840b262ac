"""minillama.train and `minillama train`: schedule, optimizer groups, batches, accumulation,
exact resume, and the checks that stop a run before it starts."""

import copy
import math
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from minillama.config import ModelArgs
from minillama.model import Llama
from minillama.train import (
    TrainConfig,
    check_config,
    check_data,
    check_output_dir,
    get_batch,
    lr_at,
    make_optimizer,
    next_token_loss,
    train,
    train_step,
    write_curves,
)

TINY = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=32)


def _tokens(n=5000, seed=0):
    # a learnable stream: mostly counting up mod 64, with some noise
    rng = np.random.default_rng(seed)
    t = np.arange(n) % 64
    noise = rng.random(n) < 0.1
    t[noise] = rng.integers(0, 64, noise.sum())
    return t.astype(np.uint16)


def test_lr_schedule_by_hand():
    cfg = TrainConfig(steps=110, warmup=10, lr=1e-3, min_lr=1e-4)
    assert lr_at(0, cfg) == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak
    assert lr_at(9, cfg) == pytest.approx(1e-3)  # warmup ends at the peak
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # cosine starts at the peak
    assert lr_at(60, cfg) == pytest.approx((1e-3 + 1e-4) / 2)  # halfway: the mean
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    assert lr_at(500, cfg) == pytest.approx(1e-4)  # past the end: stays at min_lr
    # a quarter of the way: min + (max - min) * (1 + cos(pi/4)) / 2
    assert lr_at(35, cfg) == pytest.approx(1e-4 + 9e-4 * (1 + math.cos(math.pi / 4)) / 2)


def test_weight_decay_only_on_matrices():
    model = Llama(TINY)
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    # per layer: wq wk wv wo w1 w2 w3 are decayed; 2 norms per layer + final norm and the
    # (tied) embedding are not
    assert len(decay["params"]) == 7 * TINY.n_layers
    assert len(no_decay["params"]) == 2 * TINY.n_layers + 2
    assert all(p.dim() == 2 for p in decay["params"])


def test_batches_are_shifted_and_reproducible():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(tokens, 4, 16, seed=3, step=7)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))
    x2, _ = get_batch(tokens, 4, 16, seed=3, step=7)
    x3, _ = get_batch(tokens, 4, 16, seed=3, step=8)
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    with pytest.raises(ValueError, match="fewer than one window"):
        get_batch(tokens[:10], 4, 16, 0, 0)


def test_loss_is_cross_entropy_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
    targets = torch.tensor([[0, 2]])
    expected = -(math.log(0.5) + math.log(0.8)) / 2
    assert next_token_loss(logits, targets).item() == pytest.approx(expected, abs=1e-6)


def test_gradient_accumulation_matches_one_big_batch():
    torch.manual_seed(0)
    a = Llama(TINY)
    b = copy.deepcopy(a)
    x, y = get_batch(_tokens(), 8, 16, seed=0, step=0)
    cfg1, cfg4 = TrainConfig(grad_accum=1), TrainConfig(grad_accum=4)
    la, _ = train_step(a, make_optimizer(a, cfg1), x, y, cfg1, lr=1e-3)
    lb, _ = train_step(b, make_optimizer(b, cfg4), x, y, cfg4, lr=1e-3)
    assert la == pytest.approx(lb, abs=1e-5)  # mean of 4 equal-size chunk means
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)  # float32 summation order


def test_training_lowers_the_loss_and_resume_is_exact(tmp_path):
    tokens, val = _tokens(20000, 0), _tokens(3000, 1)
    cfg = TrainConfig(steps=40, batch_size=8, seq_len=16, warmup=5, lr=3e-3, min_lr=3e-4,
                      eval_every=20, eval_batches=4, ckpt_every=100)
    torch.manual_seed(0)
    straight = train(Llama(TINY), tokens, val, cfg, out=tmp_path / "a", progress=False)
    assert straight[-1]["val_loss"] < straight[0]["train_loss"] - 1.0  # it learns to count
    # the same run split in two sessions: stop at step 20, resume in a fresh process's model
    torch.manual_seed(0)
    first = train(Llama(TINY), tokens, val, cfg, out=tmp_path / "b", progress=False, stop_after=20)
    assert first[-1]["step"] == 20
    assert (tmp_path / "b" / "checkpoint" / "trainer_state.pt").exists()
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = train(Llama(TINY), tokens, val, cfg, out=tmp_path / "b", resume=True, progress=False)
    assert [r["step"] for r in resumed] == list(range(1, 41))
    for r, s in zip(resumed, straight):
        # bitwise-equal maths on one machine; 1e-6 leaves room for nothing but noise
        assert r["train_loss"] == pytest.approx(s["train_loss"], rel=0, abs=1e-6), r["step"]
    assert resumed[-1]["val_loss"] == pytest.approx(straight[-1]["val_loss"], abs=1e-6)
    assert (tmp_path / "a" / "loss.csv").exists() and (tmp_path / "a" / "loss.png").exists()


def test_run_checks_fail_before_training(tmp_path):
    tokens = _tokens(1000)

    class Tok:
        vocab_size = 100

    with pytest.raises(ValueError, match="tokenizer has 100 pieces but the model's vocab_size is 64"):
        check_data(TINY, TrainConfig(seq_len=16), Tok(), tokens, tokens)
    Tok.vocab_size = 64
    with pytest.raises(ValueError, match="validation split has 5 tokens; it needs at least"):
        check_data(TINY, TrainConfig(seq_len=16), Tok(), tokens, tokens[:5])
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 32"):
        check_config(TINY, TrainConfig(seq_len=64))
    with pytest.raises(ValueError, match="batch_size 10 must be divisible by grad_accum 4"):
        check_config(TINY, TrainConfig(seq_len=16, batch_size=10, grad_accum=4))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write to the output folder"):
        check_output_dir(blocker / "run")


def test_write_curves(tmp_path):
    write_curves(tmp_path, [{"step": 1, "train_loss": 3.0}, {"step": 2, "train_loss": 2.5,
                                                             "val_loss": 2.6}])
    lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,train_loss,val_loss" and lines[2] == "2,2.5,2.6"
    assert (tmp_path / "loss.png").stat().st_size > 1000


@pytest.mark.parametrize("argv, msg", [
    (["--corpus-mb", "0.2"], "the text supports only"),
    (["--out", "/proc/nope"], "cannot write to the output folder"),
    (["--seq-len", "4096"], "exceeds the model's max_seq_len 512"),
])
def test_cli_stops_at_once_with_a_message(tmp_path, argv, msg):
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "minillama", "train", "--out", str(tmp_path / "run"),
           "--corpus-mb", "1.5", "--steps", "1", *argv]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and "Traceback" not in r.stderr
    assert time.perf_counter() - t0 < 120
