"""Tests for minillama/distributed.py and `minillama train --nproc N`: data parallel on CPUs.

Every run is on 127.0.0.1, on a port picked free, with a time limit on the whole run
(--max-seconds, spawn's timeout) and on every wait of the process group (--dist-timeout),
so no test can hang; torchrun and spawn stop every process of a failed run.

The equivalence test. N processes with B / N rows each follow the trajectory of one process
with all B rows: the same mean gradient, except that DDP's all-reduce adds the ranks' sums
in another order than one process's backward does. That reordering changes float32 sums by
a few ulp, so losses and weights agree to TRAJECTORY_ATOL = 1e-4 after 6 AdamW steps
(measured: 1.4e-6 for the losses and 2.7e-6 for the weights; Adam's update divides by the
square root of the second moment, which amplifies such differences a little each step).
Gradients by hand and by DDP after one backward agree with one process's to GRAD_ATOL = 1e-6.
"""

import json
import os
import socket
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from minillama import distributed as D
from minillama.pretrained import COURSE_MODEL

TRAJECTORY_ATOL = 1e-4
GRAD_ATOL = 1e-6
RUN = ["--preset", "course", "--dim", "64", "--n-layers", "2",
       "--tokenizer", str(COURSE_MODEL / "tokenizer.model"), "--corpus-mb", "0.3", "--steps", "6",
       "--batch-size", "8", "--seq-len", "32", "--warmup", "2",
       "--eval-every", "3", "--bf16", "off", "--threads", "1", "--dist-timeout", "60"]


def train(out, *extra, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "minillama", "train", *RUN, "--out", str(out), *extra]
    e = dict(os.environ, TQDM_DISABLE="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=e)


def history(out) -> list[dict]:
    return json.loads((out / "checkpoint" / "history.json").read_text())


def weights(out) -> dict[str, np.ndarray]:
    return load_file(out / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    r = train(out)
    assert r.returncode == 0, r.stderr
    return out


def test_rank_rows_partition_the_batch():
    x = torch.arange(12).reshape(6, 2)
    parts = [D.rank_rows(x, r, 3) for r in range(3)]
    assert [p[:, 0].tolist() for p in parts] == [[0, 6], [2, 8], [4, 10]]  # rows r, r + 3
    assert sorted(torch.cat(parts)[:, 0].tolist()) == x[:, 0].tolist()
    with pytest.raises(ValueError, match="rank 3 is outside 0..2"):
        D.rank_rows(x, 3, 3)


@pytest.mark.parametrize("batch, accum, nproc, message", [
    (8, 1, 16, "--nproc 16 is larger than the global batch of 8 rows"),
    (8, 1, 3, "--batch-size 8 is not divisible by --nproc 3.*try --batch-size 9"),
    (8, 4, 4, "each of the 4 processes gets 2 rows, not divisible by --grad-accum 4"),
    (8, 1, 0, "--nproc must be at least 1"),
])
def test_check_world_says_what_to_change(batch, accum, nproc, message):
    with pytest.raises(ValueError, match=message):
        D.check_world(batch, accum, nproc)
    D.check_world(8, 2, 2)  # 4 rows each, 2 micro-batches of 2


def test_two_processes_follow_one_process(single, tmp_path):
    r = train(tmp_path, "--nproc", "2", "--max-seconds", "240")
    assert r.returncode == 0, r.stderr
    assert "4 rows in each of 2 processes" in r.stdout
    assert r.stdout.count("test loss") == 1  # rank 0 alone prints
    one, two = history(single), history(tmp_path)
    assert [h["step"] for h in two] == list(range(1, 7))
    np.testing.assert_allclose([h["train_loss"] for h in two], [h["train_loss"] for h in one],
                               atol=TRAJECTORY_ATOL, rtol=0)
    np.testing.assert_allclose([h["val_loss"] for h in two if "val_loss" in h],
                               [h["val_loss"] for h in one if "val_loss" in h], atol=TRAJECTORY_ATOL,
                               rtol=0)
    a, b = weights(single), weights(tmp_path)
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=TRAJECTORY_ATOL, rtol=0, err_msg=name)
    assert json.loads((tmp_path / "summary.json").read_text())["processes"] == 2


def test_zero_and_grad_accumulation_follow_one_process_and_resume(single, tmp_path):
    """ZeRO (sharded AdamW state) with 2 micro-batches per rank, split into two sessions by
    --stop-after and --resume (the consolidated optimizer state is what resumes): the same
    trajectory again."""
    r = train(tmp_path, "--nproc", "2", "--zero", "--grad-accum", "2", "--stop-after", "3",
              "--max-seconds", "240")
    assert r.returncode == 0, r.stderr
    r = train(tmp_path, "--nproc", "2", "--zero", "--grad-accum", "2", "--resume", "--max-seconds", "240")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose([h["train_loss"] for h in history(tmp_path)],
                               [h["train_loss"] for h in history(single)], atol=TRAJECTORY_ATOL, rtol=0)
    a, b = weights(single), weights(tmp_path)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=TRAJECTORY_ATOL, rtol=0, err_msg=name)


def test_a_failing_rank_is_named_and_every_process_ends(tmp_path):
    r = train(tmp_path, "--nproc", "2", "--max-seconds", "120", env={"MINILLAMA_FAIL_RANK": "1"})
    assert r.returncode == 2
    assert "error: rank 1 of 2 failed: RuntimeError: failing on purpose" in r.stderr
    assert "the data-parallel run failed" in r.stderr
    assert not (tmp_path / "model").exists()


def test_bad_input_is_refused_before_any_process_starts(tmp_path):
    r = train(tmp_path, "--nproc", "16")
    assert r.returncode == 2 and "larger than the global batch of 8 rows" in r.stderr
    assert "torch.distributed" not in r.stderr  # refused by us, before torchrun ran
    with socket.socket() as s:
        s.bind((D.LOOPBACK, 0))
        s.listen()
        r = train(tmp_path, "--nproc", "2", "--port", str(s.getsockname()[1]))
    assert r.returncode == 2 and "is in use" in r.stderr and "leave it out to get a free one" in r.stderr


def test_the_whole_run_has_a_time_limit(tmp_path):
    """A run past --max-seconds is stopped, every process of it (the group is killed)."""
    r = train(tmp_path, "--nproc", "2", "--max-seconds", "0.5")
    assert r.returncode == 2 and "did not finish in 0.5 s" in r.stderr


def test_allreduce_by_hand():
    out = D.spawn(D.allreduce_sum, 2, args=([1.0, 2.0, 3.0],), timeout=120)
    assert out == [[3.0, 6.0, 9.0]] * 2  # rank r sends values * (r + 1): 1x + 2x


@pytest.mark.parametrize("manual", [True, False], ids=["by hand", "DDP"])
def test_averaged_gradients_equal_one_process_on_the_whole_batch(manual):
    grads = D.spawn(D.average_gradients, 2, args=(7, 8, manual), timeout=120)
    ref = D.full_batch_gradients(7, 8)
    for rank_grads in grads:
        assert set(rank_grads) == set(ref)
        for name, g in ref.items():
            torch.testing.assert_close(rank_grads[name], g, atol=GRAD_ATOL, rtol=0)


def test_spawn_names_the_failing_rank_and_refuses_notebook_functions():
    with pytest.raises(RuntimeError, match="a worker failed: rank [01]: ValueError: too many dimensions"):
        D.spawn(D.allreduce_sum, 2, args=(["not a number"],), timeout=60)

    def local(rank, world):
        return rank

    local.__module__ = "__main__"
    with pytest.raises(ValueError, match="defined in __main__"):
        D.spawn(local, 2)


def test_zero_shrinks_the_optimizer_state_per_rank():
    sizes = D.spawn(D.optimizer_memory, 2, args=(), timeout=120)
    plain, zero = sizes[0]["plain"], [s["zero"] for s in sizes]
    assert plain == 2 * 4 * sizes[0]["parameters"]  # Adam: two float32 moments per parameter
    assert sum(zero) == plain  # the shards cover every parameter once
    assert max(zero) < 0.6 * plain  # and each rank holds about half


def test_time_steps_reports_each_ranks_share():
    """Timings themselves are not checked (benchmark material); what they describe is."""
    out = D.spawn(D.time_steps, 2, args=(2, 8, 16, 32), timeout=120)
    dim, hidden, kv = 32, swiglu_width(32), 16  # 4 heads of 8; 2 kv heads of 8
    # tied embeddings (counted once), 4 layers of attention, SwiGLU and 2 norms, the final norm
    params = 4096 * dim + 4 * (dim * dim * 2 + dim * kv * 2 + 3 * dim * hidden + 2 * dim) + dim
    for r in out:
        assert r["rows"] == 4 and r["gradient_bytes"] == 4 * params
        assert r["compute_s"] > 0 and r["comm_s"] > 0


def swiglu_width(dim: int) -> int:
    """Meta's SwiGLU width by hand: 2/3 of 4 dim, rounded up to a multiple of 32 (ModelArgs' default)."""
    return -(-int(2 * 4 * dim / 3) // 32) * 32
