"""Distributed data-parallel training on PyTorch's own engine (``torchrun`` + ``DistributedDataParallel``).

``edgeresnet train`` runs unchanged under ``torchrun --nproc-per-node N -m edgeresnet train ...``: the
process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), NCCL on CUDA and gloo on the CPU. ``--batch-size`` is per process (PyTorch's
convention), so the global batch is N x batch. Each process reads its own share of every epoch
(``DistributedSampler``, reshuffled per epoch from the recipe's seed), gradients are averaged by DDP,
metric sums and counts are all-reduced so every rank sees the same numbers (and stops at the same
epoch), and only rank 0 logs and writes checkpoints. Outside torchrun (or with one process) nothing here
is used and training is the plain single-process loop.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TIMEOUT_ENV = "EDGERESNET_DIST_TIMEOUT_S"  # how long a rank may wait in a collective for a silent peer
DEFAULT_TIMEOUT_S = 300.0
LAUNCHED_ENV = "EDGERESNET_NPROC_LAUNCHER"  # set by --nproc: its workers leave the one-line report to it
LOST_PEER_EXIT = 3  # a worker that lost the process group because another rank died


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str  # "nccl" | "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank, "backend": self.backend}


# -- pure -------------------------------------------------------------------------------------------------


def env_ranks(environ: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's variables; ``None`` outside torchrun."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        values = ", ".join(f"{k}={env.get(k)!r}" for k in ENV_KEYS)
        raise UserError(f"torchrun environment is malformed ({values}); launch with 'torchrun --nproc-per-node N "
                        "-m edgeresnet train ...'") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(f"torchrun environment is inconsistent (RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local})")
    return rank, world, local


def backend_for(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def torchrun_args(nproc: int, train_args: Sequence[str]) -> list[str]:
    """torchrun's own arguments for ``N`` local processes of ``edgeresnet train ARGS``.

    ``--standalone``: a single-machine rendezvous on a free port, so two runs on one host never collide.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise UserError(f"--nproc {nproc}: must be a positive number of processes")
    return ["--standalone", "--nproc-per-node", str(nproc), "-m", "edgeresnet", "train", *train_args]


def launch_command(nproc: int, train_args: Sequence[str], python: str | None = None) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m edgeresnet train ARGS``: what
    ``--nproc N`` runs, as a command a user can type."""
    return [python or sys.executable, "-m", "torch.distributed.run", *torchrun_args(nproc, train_args)]


def threads_per_process(nproc: int, cpus: int | None) -> int:
    """CPU threads each of ``nproc`` processes may use without oversubscribing the machine (at least 1)."""
    return max(1, (cpus or 1) // max(nproc, 1))


def shard(n: int, rank: int, world_size: int) -> list[int]:
    """Indices ``rank, rank + W, ...`` of ``n`` items: disjoint shares, no padding (for evaluation sums)."""
    return list(range(rank, n, world_size))


# -- process group ----------------------------------------------------------------------------------------


def current() -> DistContext | None:
    """The context of an initialised process group of more than one process, else ``None``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    ranks = env_ranks()
    local = ranks[2] if ranks is not None else dist.get_rank()
    return DistContext(dist.get_rank(), dist.get_world_size(), local, str(dist.get_backend()))


def timeout_s(environ: Mapping[str, str] | None = None) -> float:
    """The process group's timeout: ``EDGERESNET_DIST_TIMEOUT_S`` seconds, else 300.

    PyTorch's defaults are 30 min for gloo and 10 min for NCCL (torch/distributed/constants.py,
    ``default_pg_timeout`` and ``default_pg_nccl_timeout``, PyTorch 2.14), so a rank whose peer
    froze or vanished on another node would wait that long in a collective; rank 0 writing a checkpoint is
    the longest legitimate wait of a healthy run, well under 300 s.
    """
    env = os.environ if environ is None else environ
    raw = env.get(TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise UserError(f"{TIMEOUT_ENV}={raw!r}: must be a positive number of seconds (default {DEFAULT_TIMEOUT_S:g})")
    return value


def init_distributed(device: str = "auto", timeout: float | None = None) -> DistContext | None:
    """Join torchrun's process group (once); ``None`` outside torchrun or with a single process.

    A collective that waits longer than ``timeout`` seconds (default ``timeout_s()``) fails instead of hanging.
    """
    import torch
    import torch.distributed as dist

    ranks = env_ranks()
    if ranks is None or ranks[1] < 2:
        return None
    seconds = timeout_s() if timeout is None else timeout
    if dist.is_available() and dist.is_initialized():
        return current()
    if not dist.is_available():
        raise UserError("torchrun: this PyTorch build has no torch.distributed; install a standard PyTorch wheel")
    from edgeresnet.train.device import resolve_device

    rank, world, local = ranks
    use_cuda = resolve_device(device).type == "cuda"
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise UserError(f"torchrun: LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) here; use "
                            f"--nproc-per-node {torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local)
    backend = backend_for("cuda" if use_cuda else "cpu")
    options: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=seconds)}
    if use_cuda:
        options["device_id"] = torch.device("cuda", local)
    dist.init_process_group(**options)
    return DistContext(rank, world, local, backend)


def cleanup(ctx: DistContext | None) -> None:
    import torch.distributed as dist

    if ctx is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# what gloo's TCP transport and torch's store say when a peer is gone or silent (PyTorch 2.x messages of
# gloo/transport/tcp/pair.cc and ProcessGroupGloo.cpp: "Connection closed by peer", "Connection reset by peer",
# "Timed out waiting ... for recv operation"); NCCL's are raised as torch.distributed.DistError subclasses
_PEER_LOSS_MARKERS = ("connection closed by peer", "connection reset by peer", "broken pipe", "timed out waiting",
                      "connection refused", "socket timeout", "transport endpoint")


def is_peer_loss(exc: BaseException) -> bool:
    """Whether ``exc`` is the process group failing (a rank died or stopped answering), not a bug of ours."""
    import torch.distributed as dist

    error_type = getattr(dist, "DistError", None)
    if error_type is not None and isinstance(exc, error_type):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _PEER_LOSS_MARKERS)


def lost_peer(ctx: DistContext, exc: BaseException) -> None:
    """End this rank after the group broke: one line of its own, or (under ``--nproc``, whose launcher names
    the rank that died) quietly with ``LOST_PEER_EXIT``."""
    if os.environ.get(LAUNCHED_ENV):
        raise SystemExit(LOST_PEER_EXIT)
    import re

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)[:160]  # gloo prefixes its source location: '[.../pair.cc:534] '
    raise UserError(f"rank {ctx.rank}: the process group broke, another rank died or stopped answering ({first}); "
                    "its node's log names it; continue with --resume from the last checkpoint",
                    exit_code=LOST_PEER_EXIT)


def barrier(ctx: DistContext | None) -> None:
    import torch.distributed as dist

    if ctx is not None:
        if ctx.backend == "nccl":
            import torch

            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _reduce_device(ctx: DistContext) -> Any:
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def all_reduce_sums(values: Sequence[float], ctx: DistContext | None) -> list[float]:
    """Element-wise sums over ranks (float64), e.g. [loss sum, correct, seen]; unchanged without a group."""
    if ctx is None:
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_reduce_device(ctx))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.cpu().tolist()]


# -- model and data ---------------------------------------------------------------------------------------


def check_sync_bn(sync_bn: bool, device: Any, ctx: DistContext | None) -> None:
    """PyTorch's SyncBatchNorm synchronises on GPUs only; on the CPU it is refused rather than silently off."""
    if sync_bn and ctx is not None and getattr(device, "type", str(device)) != "cuda":
        raise UserError("--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only; on the CPU leave it off (each process "
                        "then normalises its own batch) or train on GPUs")


def wrap_model(model: Any, ctx: DistContext, device: Any, sync_bn: bool = False) -> Any:
    """``DistributedDataParallel`` around ``model`` (with SyncBatchNorm layers when asked). Returns the wrapper;
    ``model`` itself keeps the parameters (and, converted in place, the SyncBatchNorm layers)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    check_sync_bn(sync_bn, device, ctx)
    if sync_bn:
        convert_sync_batchnorm(model)
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if getattr(device, "type", "") == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def convert_sync_batchnorm(model: Any) -> Any:
    """Swap every BatchNorm for SyncBatchNorm in place (same parameters, buffers and state-dict keys)."""
    import torch.nn as nn

    for name, child in list(model.named_children()):
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(child)
        if converted is not child:
            setattr(model, name, converted)
    return model


def revert_sync_batchnorm(module: Any) -> Any:
    """SyncBatchNorm -> BatchNorm2d (same tensors), so the trained model runs, exports and saves like any other."""
    import torch.nn as nn

    if isinstance(module, nn.SyncBatchNorm):
        plain = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            plain.weight, plain.bias = module.weight, module.bias
        plain.running_mean, plain.running_var = module.running_mean, module.running_var
        plain.num_batches_tracked = module.num_batches_tracked
        plain.train(module.training)
        return plain
    for name, child in list(module.named_children()):
        reverted = revert_sync_batchnorm(child)
        if reverted is not child:
            setattr(module, name, reverted)
    return module


def train_sampler(dataset: Any, ctx: DistContext, seed: int, shuffle: bool = True) -> Any:
    """PyTorch's ``DistributedSampler``: equal, disjoint shares per epoch (padded by repetition to be equal)."""
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed,
                              drop_last=False)


def eval_subset(dataset: Any, ctx: DistContext) -> Any:
    """This rank's disjoint share of an evaluation set (no padding, so the all-reduced sums count each image once)."""
    from torch.utils.data import Subset

    return Subset(dataset, shard(len(dataset), ctx.rank, ctx.world_size))


def sync_buffers(model: Any, ctx: DistContext | None) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) before evaluating, so every shard of the
    validation set is scored by the same model: the one rank 0 saves."""
    if ctx is None:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


# -- the --nproc convenience --------------------------------------------------------------------------------


def launch(recipe: Any, nproc: int, *, out: Any, resume: bool = False, overwrite: bool = False, progress: bool = True,
           json_out: str | None = None) -> int:
    """Run ``torchrun --standalone --nproc-per-node N -m edgeresnet train`` on ``recipe``; returns the exit code.

    Everything the processes would refuse is checked here first, so bad input stays one line instead of N.
    The effective recipe travels as a temporary ``--config`` file. torchrun runs in this process (its own
    ``parse_args``/``run``), so a failed worker ends in one line and its exit code, not torchrun's traceback.
    """
    import torch

    from edgeresnet.train.device import resolve_device
    from edgeresnet.train.outlock import HELD_ENV, OutLock

    torchrun_args(nproc, [])  # validates nproc
    if env_ranks() is not None:
        raise UserError("--nproc: this process already runs under torchrun (WORLD_SIZE is set); drop --nproc")
    timeout_s()  # a bad EDGERESNET_DIST_TIMEOUT_S: one line here, not one per worker
    from edgeresnet.data.sources import BUILTIN_SOURCES

    if recipe.data not in BUILTIN_SOURCES and not Path(recipe.data).is_dir():
        raise UserError(f"--data {recipe.data}: directory not found; pass 'digits', 'fashion-mnist' or an "
                        "ImageFolder/IDX directory")
    cuda = resolve_device(recipe.device).type == "cuda"
    if cuda and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc}: only {torch.cuda.device_count()} GPU(s) here; one process per GPU")
    check_sync_bn(recipe.sync_bn, "cuda" if cuda else "cpu", DistContext(0, nproc, 0, backend_for("cuda" if cuda
                                                                                                  else "cpu")))
    with OutLock(Path(out)):  # held for the workers: rank 0 writes under the launcher's lock
        saved = {key: os.environ.get(key) for key in (HELD_ENV, LAUNCHED_ENV)}
        os.environ[HELD_ENV], os.environ[LAUNCHED_ENV] = str(os.getpid()), "1"
        try:
            return _launch_locked(recipe, nproc, out=Path(out), resume=resume, overwrite=overwrite,
                                  progress=progress, json_out=json_out)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _launch_locked(recipe: Any, nproc: int, *, out: Any, resume: bool, overwrite: bool, progress: bool,
                   json_out: str | None) -> int:
    import tempfile

    from edgeresnet.train.job import check_out_dir
    from edgeresnet.train.recipe import recipe_to_yaml

    check_out_dir(Path(out), resume=resume, overwrite=overwrite)  # under the lock: no run can start meanwhile
    fd, name = tempfile.mkstemp(prefix="edgeresnet-recipe-", suffix=".yaml")
    os.close(fd)
    try:
        Path(name).write_text(recipe_to_yaml(recipe, f"recipe of a {nproc}-process run"), encoding="utf-8")
        args = ["--config", name, "--out", str(out), "--progress" if progress else "--no-progress"]
        args += ["--resume"] if resume else []
        args += ["--overwrite"] if overwrite else []
        args += ["--json", json_out] if json_out is not None else []
        return _run_torchrun(torchrun_args(nproc, args), nproc, Path(out))
    finally:
        Path(name).unlink(missing_ok=True)


def _run_torchrun(args: list[str], nproc: int, out: Any = None) -> int:
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if "OMP_NUM_THREADS" not in os.environ:  # torchrun would set 1; share the cores out instead
        os.environ["OMP_NUM_THREADS"] = str(threads_per_process(nproc, os.cpu_count()))
    # torchrun logs every failed worker at ERROR with a stack; the workers print their own one-line errors
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(args))
    except ChildFailedError as exc:
        message, code = failure_report({rank: f.exitcode for rank, f in exc.failures.items()}, out)
        print(f"error: {message}", file=sys.stderr)
        return code
    except Exception as exc:  # rendezvous or agent failures: one line, no traceback
        raise UserError(f"--nproc {nproc}: torchrun could not run the processes ({type(exc).__name__}: {exc})") from None
    return 0


def failure_report(exitcodes: Mapping[int, int | None], out: Any = None) -> tuple[str, int]:
    """The launcher's one line (and exit code) for failed workers, given each failed rank's exit code.

    torchrun's agent (torch/distributed/elastic/multiprocessing/api.py, PyTorch 2.x) stops the surviving
    workers with SIGTERM as soon as one fails and reports them too, a negative exit code being the signal
    (``subprocess.Popen.returncode``). So: a rank that failed with its own error (code > 0) printed its message;
    else a rank killed by another signal (SIGKILL of a preempted node, SIGSEGV, ...) is the one that died;
    ranks ending by SIGTERM or having lost the group (``LOST_PEER_EXIT``) are the others.
    """
    import signal

    own = sorted((r, c) for r, c in exitcodes.items() if c is not None and c > 0 and c != LOST_PEER_EXIT)
    if own:
        ranks = ", ".join(str(rank) for rank, _ in own)
        return f"torchrun: worker rank(s) {ranks} exited with code {own[0][1]}; see the message(s) above", own[0][1]

    def name(code: int) -> str:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"

    died = sorted((r, c) for r, c in exitcodes.items() if c is not None and c < 0 and -c != signal.SIGTERM)
    others = sorted(r for r in exitcodes if r not in dict(died))
    if not died:
        died = sorted((r, c) for r, c in exitcodes.items() if c is not None and c < 0)
        others = sorted(r for r in exitcodes if r not in dict(died))
    resume = ""
    if out is not None:
        from edgeresnet.train.state import last_good_epoch

        epoch = last_good_epoch(Path(out))
        resume = (f"; continue from {Path(out) / 'last.pt'} (epoch {epoch}) with --resume" if epoch is not None
                  else "; no checkpoint was written yet, start again")
    if died:
        what = ", ".join(f"rank {rank} ({name(code)})" for rank, code in died)
        stopped = f"; rank(s) {', '.join(map(str, others))} were stopped" if others else ""
        return f"torchrun: worker {what} died{stopped}{resume}", 1
    ranks = ", ".join(str(rank) for rank in sorted(exitcodes))
    return f"torchrun: worker rank(s) {ranks} lost the process group{resume}", 1
