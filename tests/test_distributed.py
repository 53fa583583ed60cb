"""Distributed data-parallel training: torchrun's environment, the launcher, and real 2-process gloo runs.

The real run: ``edgeresnet train --nproc 2`` launches ``torchrun --standalone --nproc-per-node 2 -m edgeresnet
train`` (2 CPU processes, gloo) for 3 optimizer steps of ResNet18 (small stem) on digits at 16 px, batch 8
per process, no shuffling, no augmentation. By construction DDP then computes exactly what one process
computes with gradient accumulation over 2 micro-batches of 8 when micro-batch 1 holds rank 0's images
and micro-batch 2 rank 1's (``DistributedSampler`` deals images out in turn): per-process BatchNorm
statistics included, gradients averaged. That single-process run is the reference.

Deterministic setup: one CPU thread in every process (``OMP_NUM_THREADS=1`` for the workers, one thread for
the reference): with two threads in the reference alone, the reductions inside the convolutions round in
another order and 3 steps grow that to 4.6e-4. Tolerance: every parameter within 1e-5 absolute. Measured:
0.0, bitwise equal (the all-reduced (g0 + g1) / 2 and the accumulated g0 / 2 + g1 / 2 round alike), while
the parameters moved up to 0.13 from their initial values. BatchNorm
*running* statistics are not compared: DDP keeps rank 0's (it broadcasts rank 0's buffers before each
forward), the reference has seen both micro-batches.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from edgeresnet.errors import UserError

TOLERANCE = 1e-5
BATCH, STEPS, WORLD = 8, 3, 2
TRAIN_FLAGS = ["--data", "digits", "--image-size", "16", "--small-stem", "--epochs", "1", "--max-steps", str(STEPS),
               "--batch-size", str(BATCH), "--no-augment", "--no-shuffle", "--schedule", "constant",
               "--warmup-epochs", "0", "--seed", "0", "--device", "cpu", "--no-progress"]


# -- pure ---------------------------------------------------------------------------------------------------


def test_env_ranks_reads_torchrun_variables():
    from edgeresnet.train.distributed import env_ranks

    assert env_ranks({}) is None
    assert env_ranks({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    with pytest.raises(UserError, match="torchrun environment is inconsistent"):
        env_ranks({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(UserError, match="torchrun environment is malformed"):
        env_ranks({"RANK": "x", "WORLD_SIZE": "2"})


def test_launch_command_and_shards():
    from edgeresnet.train.distributed import launch_command, shard

    cmd = launch_command(2, ["--epochs", "1"], python="python")
    assert cmd == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "edgeresnet",
                   "train", "--epochs", "1"]
    with pytest.raises(UserError, match="--nproc 0: must be a positive number"):
        launch_command(0, [])
    parts = [shard(7, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(7)) and parts[0] == [0, 3, 6]


def test_sync_batchnorm_round_trip_keeps_tensors():
    import torch

    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.train.distributed import convert_sync_batchnorm, revert_sync_batchnorm

    model = build_model(ModelSpec("resnet18", 10, small_stem=True))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    convert_sync_batchnorm(model)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    revert_sync_batchnorm(model)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_threads_per_process_shares_the_cores():
    from edgeresnet.train.distributed import threads_per_process

    assert threads_per_process(2, 16) == 8 and threads_per_process(2, 2) == 1 and threads_per_process(4, 2) == 1
    assert threads_per_process(2, None) == 1


# -- bad input: refused by the launcher in one line, before any process starts -----------------------------


def test_nproc_refuses_bad_counts_and_cpu_sync_bn(capsys, tmp_path, wide_terminal):
    code, _, err = run_cli(capsys, "train", "--nproc", "0", "--out", tmp_path / "a")
    assert_one_line_error(code, err, "--nproc 0: must be a positive number")
    code, _, err = run_cli(capsys, "train", "--nproc", "2", "--sync-bn", "--device", "cpu", "--out", tmp_path / "b")
    assert_one_line_error(code, err, "--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_nproc_under_torchrun_is_refused(capsys, tmp_path, monkeypatch, wide_terminal):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code, _, err = run_cli(capsys, "train", "--nproc", "2", "--out", tmp_path / "a")
    assert_one_line_error(code, err, "--nproc: this process already runs under torchrun")


# -- real 2-process gloo runs ---------------------------------------------------------------------------------


def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env_command = [sys.executable, "-m", "edgeresnet", "train", *args]
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}  # one thread per worker: see the docstring
    return subprocess.run(env_command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """``edgeresnet train --nproc 2`` for 3 steps (gloo, 2 CPU processes); its output directory."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    done = _train("--nproc", str(WORLD), "--out", str(out), "--json", str(out.parent / "summary.json"), *TRAIN_FLAGS,
                  cwd=out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return out


def _interleaved_order(n: int, world: int, batch: int) -> list[int]:
    """Rank 0's first batch, then rank 1's, ...: ``DistributedSampler(shuffle=False)``'s deal, step by step."""
    total = -(-n // world) * world
    indices = list(range(n)) + list(range(total - n))  # padded by repetition, like the sampler
    shares = [indices[rank:total:world] for rank in range(world)]
    order = []
    for start in range(0, len(shares[0]), batch):
        for share in shares:
            order += share[start:start + batch]
    return order


def _reference(tmp_path: Path):
    """One process, accumulation over the 2 ranks' micro-batches in turn: what DDP must compute."""
    import dataclasses

    from edgeresnet.data import load_data
    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.train import fit, seed_everything
    from edgeresnet.train.recipe import TrainRecipe

    splits = load_data("digits", 16, seed=0)
    train = splits.splits["train"]
    splits = dataclasses.replace(splits, splits={**splits.splits, "train": [train[i] for i in
                                                                            _interleaved_order(len(train), WORLD,
                                                                                               BATCH)]})
    recipe = TrainRecipe(image_size=16, small_stem=True, epochs=1, max_steps=STEPS, batch_size=BATCH,
                         accumulate=WORLD, augment=False, shuffle=False, schedule="constant", warmup_epochs=0.0,
                         seed=0, device="cpu")
    spec = ModelSpec("resnet18", splits.num_classes, small_stem=True)
    seed_everything(0)
    initial = build_model(spec)
    start = {k: v.clone() for k, v in initial.state_dict().items()}
    result = fit(initial, splits, recipe, None, progress=False, spec=spec)
    return result, start


def test_two_gloo_processes_match_one_process_with_accumulation(ddp_run, tmp_path, torch_single_thread):
    import torch

    from edgeresnet.models import load_checkpoint

    summary = json.loads((ddp_run.parent / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": WORLD, "backend": "gloo", "global_batch": WORLD * BATCH,
                                      "sync_bn": False}
    assert summary["steps"] == STEPS and summary["stopped"] == "max_steps"
    ddp_state = load_checkpoint(ddp_run / "best.pt")["state_dict"]
    reference, start = _reference(tmp_path)
    names = [name for name, _ in reference.model.named_parameters()]
    ref_state = reference.model.state_dict()
    worst = max(float((ddp_state[n] - ref_state[n]).abs().max()) for n in names)
    moved = max(float((ref_state[n] - start[n]).abs().max()) for n in names)
    assert worst <= TOLERANCE, f"DDP vs single process: max abs difference {worst:.3g} > {TOLERANCE}"
    assert moved > 100 * TOLERANCE  # the comparison means something: training moved the weights
    # train metrics are all-reduced over both ranks' images: the same 48 images and losses as the reference
    ddp_epoch, ref_epoch = summary["history"][0], reference.history[0]
    assert ddp_epoch["train_acc"] == pytest.approx(ref_epoch["train_acc"], abs=1e-9)
    assert ddp_epoch["train_loss"] == pytest.approx(ref_epoch["train_loss"], abs=1e-5)
    assert torch.isfinite(torch.tensor(ddp_epoch["val_loss"]))


def test_ddp_validation_counts_every_image_once(ddp_run):
    """The all-reduced validation over 2 shards equals one process validating the saved model on the whole split."""
    import torch
    from torch.utils.data import DataLoader

    from edgeresnet.data import load_data
    from edgeresnet.models import load_checkpoint, model_from_checkpoint
    from edgeresnet.train.loop import _validate

    path = ddp_run / "best.pt"
    model, _ = model_from_checkpoint(load_checkpoint(path), path)
    splits = load_data("digits", 16, seed=0)
    loss, acc = _validate(model, DataLoader(splits.dataset("val"), batch_size=256), torch.device("cpu"), None)
    recorded = json.loads((ddp_run.parent / "summary.json").read_text())["history"][0]
    assert recorded["val_acc"] == pytest.approx(acc, abs=1e-9)
    assert recorded["val_loss"] == pytest.approx(loss, rel=1e-5)


def test_ddp_run_resumes_and_rank_zero_alone_writes(ddp_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(ddp_run, out)
    flags = [f for f in TRAIN_FLAGS]
    flags[flags.index("--epochs") + 1] = "2"
    flags[flags.index("--max-steps") + 1] = str(STEPS + 2)
    done = _train("--nproc", str(WORLD), "--out", str(out), "--resume", "--json", "-", *flags, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # one JSON document: only rank 0 reported
    assert [h["epoch"] for h in summary["history"]] == [1, 2] and summary["steps"] == STEPS + 2
    assert summary["distributed"]["world_size"] == WORLD
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".json")) == \
        ["best.pt", "best.pt.json", "last.pt", "last.pt.json"]


def test_failing_workers_end_in_their_own_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _train("--nproc", str(WORLD), "--out", str(tmp_path / "run"), "--data", str(empty), "--device", "cpu",
                  cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("error: ") for line in lines), done.stderr
    assert not (tmp_path / "run").exists()
