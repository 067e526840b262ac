"""Data-parallel training with torch.distributed on CPUs (gloo), and the lesson's workers.

    minillama train --nproc 2 --batch-size 32 ...      # launches 2 workers through torchrun
    torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
        -m minillama train --batch-size 32 ...         # the same on two machines (see lesson 14)

How a step is shared. A run's global batch is a pure function of (seed, step)
(`train.get_batch`). Rank r of N takes its rows r, r + N, r + 2N, ... (`rank_rows`), computes
the mean loss of its B / N rows, and DistributedDataParallel averages the gradients over
the ranks during backward (an all-reduce). The mean of N equal-sized means is the mean over
the whole batch, so N processes with B / N rows each take the same steps as one process
with all B rows: the same losses and weights, up to the order in which floats are summed.
Every rank then applies the same update (or, with ZeRO, its shard of it) and stays in step.

Processes. `launch` starts torch's own launcher (`python -m torch.distributed.run`) on
127.0.0.1 with a port checked free, in its own process group, and kills the whole group if
the run outlives `max_seconds`. Inside a worker, `init` joins the gloo process group with
a timeout, so a rank that never arrives (or a collective that never completes) raises
instead of hanging. Rank 0 alone logs, evaluates and writes files.

The lesson's workers (`allreduce_sum`, `average_gradients`, `ddp_gradients`, run by
`spawn`) live here because a spawned process imports its function by module and name: a
function defined in a notebook cannot be found by the child.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
INIT_TIMEOUT = 120.0  # seconds a rank waits for the others at init and in every collective


# ---------------------------------------------------------------------------------------
# Sharing a batch
# ---------------------------------------------------------------------------------------


def rank_rows(batch, rank: int, world: int):
    """Rows rank, rank + world, ... of a global batch (a tensor or array, rows first)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside 0..{world - 1}")
    return batch[rank::world]


def check_world(batch_size: int, grad_accum: int, nproc: int) -> None:
    """What a data-parallel run needs of its batch: every rank gets the same number of rows,
    which its micro-batches divide. ValueError saying what to change, before anything runs."""
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    if nproc > batch_size:
        raise ValueError(f"--nproc {nproc} is larger than the global batch of {batch_size} rows: "
                         "every process needs at least one row (use fewer processes or a larger "
                         "--batch-size)")
    if batch_size % nproc:
        raise ValueError(f"--batch-size {batch_size} is not divisible by --nproc {nproc}: every "
                         f"process must get the same number of rows (try --batch-size "
                         f"{batch_size + (-batch_size) % nproc})")
    if (batch_size // nproc) % grad_accum:
        raise ValueError(f"each of the {nproc} processes gets {batch_size // nproc} rows, not divisible "
                         f"by --grad-accum {grad_accum}")


# ---------------------------------------------------------------------------------------
# Ports and processes
# ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def check_port(port: int, host: str = LOOPBACK) -> None:
    """ValueError if port cannot be bound on host (another program holds it)."""
    if not 1024 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1024..65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise ValueError(f"port {port} on {host} is in use ({e.strerror}): pass another --port, "
                             "or leave it out to get a free one") from None


def threads_per_process(nproc: int) -> int:
    """The cores this process may use, shared out: at least one thread per process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // nproc)


def launch(module_argv: list[str], nproc: int, port: int | None = None,
           max_seconds: float | None = None, env: dict | None = None) -> int:
    """Run `python -m <module_argv>` in nproc processes through torch.distributed.run on
    127.0.0.1; returns its exit code. The whole process group is killed after max_seconds
    (then TimeoutError). Workers see WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT."""
    port = free_port() if port is None else port
    check_port(port)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--master-addr", LOOPBACK, "--master-port", str(port), "--max-restarts", "0",
           "-m", *module_argv]
    env = dict(os.environ if env is None else env)
    env.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))  # torchrun's default is 1
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=max_seconds)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise TimeoutError(f"the distributed run did not finish in {max_seconds:g} s; all its "
                           "processes were stopped") from None
    except BaseException:
        _kill_group(proc)  # Ctrl-C: leave no worker behind
        raise


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# ---------------------------------------------------------------------------------------
# Inside a worker
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Where this process stands: rank r of world processes."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def in_worker() -> bool:
    """True in a process started by torchrun (or any launcher that sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init(timeout: float = INIT_TIMEOUT) -> World:
    """Join the gloo process group torchrun's environment describes (a timeout on every
    wait), or World(0, 1) outside a launcher."""
    import torch.distributed as dist

    if not in_worker():
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
    return world


def finish() -> None:
    """Leave the process group together: a rank that closes its connections while another
    is still working can make gloo abort that other process."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def fail_message(world: World, e: BaseException) -> str:
    """The line a failing rank prints, so that the launcher's output names it."""
    return f"error: rank {world.rank} of {world.world} failed: {type(e).__name__}: {e}"


def mean_over_ranks(value: float, world: World) -> float:
    """The average of a number over all ranks (an all-reduce of one float)."""
    if not world.distributed:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world.world


def optimizer_state_bytes(opt) -> int:
    """Bytes of tensors this rank's optimizer holds (Adam's moments: 2 per parameter)."""
    import torch

    inner = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer wraps its local shard's optimizer
    return sum(v.numel() * v.element_size() for s in inner.state.values() for v in s.values()
               if isinstance(v, torch.Tensor) and v.dim() > 0)


# ---------------------------------------------------------------------------------------
# The lesson's workers: spawned processes on 127.0.0.1
# ---------------------------------------------------------------------------------------


def _entry(rank: int, fn, world: int, port: int, timeout: float, out: str, args: tuple) -> None:
    """What each spawned process runs: join the group, run fn, save its result for the parent."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://{LOOPBACK}:{port}", rank=rank,
                                world_size=world, timeout=datetime.timedelta(seconds=timeout))
        result = fn(rank, world, *args)
        torch.save(result, Path(out) / f"rank{rank}.pt")
        finish()
    except BaseException as e:
        (Path(out) / f"rank{rank}.error").write_text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        raise


def spawn(fn, world: int = 2, args: tuple = (), timeout: float = 60.0) -> list:
    """Run fn(rank, world, *args) in `world` fresh processes joined by gloo on a free
    loopback port; returns each rank's result (tensors, numbers, lists, dicts). A rank that
    fails, or a run past timeout seconds, raises RuntimeError / TimeoutError naming the rank;
    every process is stopped first. fn must be importable (defined in a module)."""
    import tempfile

    import torch
    import torch.multiprocessing as mp

    if getattr(fn, "__module__", "__main__") == "__main__":
        raise ValueError(f"{fn.__name__} is defined in __main__ (a notebook or script): spawned "
                         "processes cannot import it; put it in a module such as minillama.distributed")
    with tempfile.TemporaryDirectory() as out:
        ctx = mp.start_processes(_entry, args=(fn, world, free_port(), timeout, out, args), nprocs=world,
                                 join=False, start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world} processes did not finish in {timeout:g} s")
        except mp.ProcessRaisedException:
            errors = sorted(Path(out).glob("rank*.error"))
            first = errors[0] if errors else None
            what = (f"rank {first.stem[4:]}: {first.read_text().splitlines()[0]}" if first
                    else "a rank raised")
            raise RuntimeError(f"a worker failed: {what}") from None
        except mp.ProcessExitedException as e:
            raise RuntimeError(f"a worker failed: rank {e.error_index} exited with code "
                               f"{e.exit_code}") from None
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                p.join()
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=True) for r in range(world)]


def allreduce_sum(rank: int, world: int, values: list[float]) -> list[float]:
    """Each rank contributes values * (rank + 1); returns what all_reduce(SUM) gives it."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64) * (rank + 1)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def _small_model_and_batch(seed: int, rows: int):
    import torch

    from minillama.config import ModelArgs
    from minillama.model import Llama

    torch.manual_seed(seed)
    model = Llama(ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=16))
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randint(0, 64, (rows, 17), generator=g)
    return model, x[:, :-1], x[:, 1:]


def average_gradients(rank: int, world: int, seed: int, rows: int, manual: bool = True) -> dict:
    """One backward pass on this rank's rows of a batch, gradients then averaged over the
    ranks: by hand (all_reduce SUM, divide by world) or by DistributedDataParallel."""
    import torch
    import torch.distributed as dist

    from minillama.train import next_token_loss

    model, x, y = _small_model_and_batch(seed, rows)
    x, y = rank_rows(x, rank, world), rank_rows(y, rank, world)
    net = model if manual else torch.nn.parallel.DistributedDataParallel(model)
    next_token_loss(net(x), y).backward()
    if manual:
        for p in model.parameters():
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def full_batch_gradients(seed: int, rows: int) -> dict:
    """The same gradients in one process, from the whole batch (the reference)."""
    from minillama.train import next_token_loss

    model, x, y = _small_model_and_batch(seed, rows)
    next_token_loss(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def optimizer_memory(rank: int, world: int) -> dict:
    """Bytes of AdamW state on this rank after one step: a plain AdamW (every rank holds all
    of it) against a ZeroRedundancyOptimizer (each rank its share); and the parameter count."""
    from minillama.train import TrainConfig, make_optimizer, next_token_loss

    model, x, y = _small_model_and_batch(0, 4)
    out = {"parameters": sum(p.numel() for p in model.parameters())}
    for kind in ("plain", "zero"):
        opt = make_optimizer(model, TrainConfig(), zero=kind == "zero")
        next_token_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        out[kind] = optimizer_state_bytes(opt)
    return out


def time_steps(rank: int, world: int, steps: int = 5, batch: int = 16, seq_len: int = 64,
               dim: int = 128) -> dict:
    """Seconds per training step of a small Llama on this rank's batch / world rows, split
    into computing (forward and backward) and communicating (averaging the gradients with
    all_reduce, as DDP does); medians over steps, after one warm-up step."""
    import statistics

    import torch
    import torch.distributed as dist

    from minillama.config import ModelArgs
    from minillama.model import Llama
    from minillama.train import next_token_loss

    torch.manual_seed(0)
    args = ModelArgs(dim=dim, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=4096, max_seq_len=seq_len)
    model = Llama(args)
    g = torch.Generator().manual_seed(1)
    xy = torch.randint(0, 4096, (batch, seq_len + 1), generator=g)
    x, y = rank_rows(xy[:, :-1], rank, world), rank_rows(xy[:, 1:], rank, world)
    compute, comm = [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        model.zero_grad()
        next_token_loss(model(x), y).backward()
        t1 = time.perf_counter()
        if world > 1:
            flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
            dist.all_reduce(flat)
            flat /= world
        t2 = time.perf_counter()
        compute.append(t1 - t0)
        comm.append(t2 - t1)
    n_bytes = 4 * sum(p.numel() for p in model.parameters())
    return {"compute_s": statistics.median(compute[1:]), "comm_s": statistics.median(comm[1:]),
            "rows": len(x), "gradient_bytes": n_bytes}
