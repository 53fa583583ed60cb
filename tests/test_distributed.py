"""Distributed data-parallel training: torchrun's environment, the launcher, and a real 2-process gloo run.

The real run: ``edgeresnet train --nproc 2`` launches ``torchrun --nproc-per-node 2 -m edgeresnet train``
(2 CPU processes, gloo) for 3 optimizer steps of ResNet18 (small stem) on digits at 16 px, batch 8 per
process, no shuffling, no augmentation. By construction DDP then computes exactly what one process
computes with gradient accumulation over 2 micro-batches of 8 when micro-batch 1 holds rank 0's images
and micro-batch 2 rank 1's (``DistributedSampler`` deals images out in turn): per-process BatchNorm
statistics included, gradients averaged. That single-process run is the reference.

Tolerance: every parameter within 1e-5 absolute. Measured: 0.0, bitwise equal (the all-reduced mean
(g0 + g1) / 2 and the accumulated g0 / 2 + g1 / 2 round alike, halving is exact), while the parameters
moved up to 0.13 from their initial values; one process with batch 16 instead differs by 0.15, which is
why the reference keeps per-process BatchNorm statistics. BatchNorm *running* statistics are not
compared: DDP keeps rank 0's (it broadcasts rank 0's buffers before each forward), the reference has seen
both micro-batches.
"""

from __future__ import annotations

import json
import os

import pytest

from edgeresnet.errors import UserError

TOLERANCE = 1e-5
TRAIN_FLAGS = ["--data", "digits", "--image-size", "16", "--small-stem", "--epochs", "1", "--max-steps", "3",
               "--no-augment", "--no-shuffle", "--schedule", "constant", "--warmup-epochs", "0", "--seed", "0"]


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


# -- a real 2-process run ---------------------------------------------------------------------------------------


def _reference(splits, world: int, batch: int):
    """One process, gradient accumulation over ``world`` micro-batches ordered as DistributedSampler deals them."""
    import dataclasses

    import torch

    from edgeresnet.config import TrainRecipe
    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.train import fit, seed_everything

    train = splits.splits["train"]
    block = world * batch
    ordered = []
    for start in range(0, len(train) - len(train) % block, block):
        chunk = train[start:start + block]
        for rank in range(world):
            ordered += chunk[rank::world]
    reordered = dataclasses.replace(splits, splits={**splits.splits, "train": ordered})
    recipe = TrainRecipe(image_size=16, small_stem=True, epochs=1, max_steps=3, augment=False, shuffle=False,
                         schedule="constant", warmup_epochs=0, seed=0, batch_size=batch, accumulate=world, device="cpu")
    spec = ModelSpec("resnet18", splits.num_classes, small_stem=True)
    seed_everything(0)
    torch.set_num_threads(1)
    return fit(build_model(spec), reordered, recipe, None, progress=False, spec=spec).model


def test_two_gloo_processes_match_one_process(tmp_path, capsys):
    import torch

    from edgeresnet.cli.main import main
    from edgeresnet.data import load_data
    from edgeresnet.models import load_checkpoint

    out = tmp_path / "ddp"
    env_before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        with pytest.raises(SystemExit) as done:
            main(["train", *TRAIN_FLAGS, "--batch-size", "8", "--nproc", "2", "--device", "cpu", "--out", str(out),
                  "--no-progress", "--json", str(tmp_path / "summary.json")])
    finally:
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
    assert (done.value.code or 0) == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["distributed"]["world_size"] == 2 and summary["steps"] == 3
    ddp = load_checkpoint(out / "last.pt")["state_dict"]

    splits = load_data("digits", 16, seed=0)
    reference = _reference(splits, world=2, batch=8)
    diffs = {name: float((param.detach() - ddp[name]).abs().max()) for name, param in reference.named_parameters()}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= TOLERANCE, f"{worst} differs by {diffs[worst]:.3g}"
    moved = max(float((p.detach() - q.detach()).abs().max()) for p, q in
                zip(reference.parameters(), _untrained(splits.num_classes).parameters()))
    assert moved > 100 * TOLERANCE  # the runs trained: the comparison is not between two untouched models

    # the metrics rank 0 logged are the all-reduced ones: they match one process evaluating the saved weights
    from edgeresnet.evaluate import evaluate_model_file

    val = evaluate_model_file(out / "last.pt", "digits", "val", device="cpu")
    assert summary["history"][-1]["val_acc"] == pytest.approx(val["top1"], abs=1e-6)
    assert val["n"] == len(splits.splits["val"])
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in reference.modules())


def _untrained(num_classes: int):
    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.train import seed_everything

    seed_everything(0)
    return build_model(ModelSpec("resnet18", num_classes, small_stem=True))


def test_sync_bn_on_cpu_is_refused_in_one_line(tmp_path, capsys):
    from edgeresnet.cli.main import main

    with pytest.raises(SystemExit) as err:
        main(["train", *TRAIN_FLAGS, "--nproc", "2", "--sync-bn", "--device", "cpu", "--out", str(tmp_path / "x"),
              "--no-progress"])
    assert err.value.code == 2
    stderr = capsys.readouterr().err
    assert "--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only" in stderr and stderr.count("\n") == 1
