"""Distillation loss: Hinton's KD, a frozen teacher, feature adapters, and a loss that actually trains."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from edgeresnet.compress.distill import Distiller, DistillSettings, kd_loss
from edgeresnet.compress.prune import PruneSettings, prune_model
from edgeresnet.errors import UserError
from edgeresnet.models import ModelSpec, build_model

SIZE = 32


pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def batch():
    from edgeresnet.data import load_data

    images, labels = load_data("digits", SIZE).arrays("train", limit=16)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _resnet(seed: int, classes: int = 10):
    torch.manual_seed(seed)
    return build_model(ModelSpec("resnet18", classes))  # standard stem at 32 px: 37 MMACs, fast


def test_kd_loss_formula():
    s = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    t = torch.tensor([[1.0, 1.5, -0.5], [0.3, -0.2, 0.9]])
    y = torch.tensor([0, 2])
    temp, alpha = 3.0, 0.6
    p_t = F.softmax(t / temp, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / temp, 1))).sum(1).mean()
    expected = alpha * kl * temp ** 2 + (1 - alpha) * F.cross_entropy(s, y)
    assert torch.allclose(kd_loss(s, t, y, temp, alpha), expected, atol=1e-6)
    assert kd_loss(t, t, y, temp, 1.0).abs() < 1e-6  # identical logits: no soft loss


@pytest.mark.parametrize("kwargs, fragment", [({"temperature": 0}, "--temperature"), ({"alpha": 1.5}, "--alpha"),
                                              ({"feature_weight": -1}, "--feature-weight")])
def test_bad_settings(kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        DistillSettings(**kwargs)


def test_teacher_with_other_class_count_is_refused():
    with pytest.raises(UserError, match="teacher has 7 classes but the student has 10"):
        Distiller(_resnet(0, 7), _resnet(1), DistillSettings(), SIZE)


def test_teacher_gets_no_gradient_stays_in_eval_and_student_loss_decreases(batch):
    images, labels = batch
    teacher = _resnet(0)
    teacher.train()  # whatever mode it arrives in, the distiller must run it in eval
    teacher_before = copy.deepcopy(teacher.state_dict())
    student = prune_model(_resnet(1), PruneSettings(ratio=0.5), SIZE).model  # narrower: adapters needed
    settings = DistillSettings(temperature=4.0, alpha=0.7, feature_loss=True, feature_weight=0.5)
    with Distiller(teacher, student, settings, SIZE) as distiller:
        assert set(distiller.adapters) == {"layer1", "layer2", "layer3", "layer4"}
        trainable = distiller.trainable()
        assert {id(p) for p in trainable.parameters()} >= {id(p) for p in distiller.adapters.parameters()}
        optimizer = torch.optim.SGD(trainable.parameters(), lr=0.05, momentum=0.9)
        trainable.train()
        losses = []
        for _ in range(8):
            optimizer.zero_grad()
            loss = distiller.loss_fn(trainable(images), labels, images)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        frozen = distiller.teacher
        assert not frozen.training
        assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
        assert not {id(p) for p in trainable.parameters()} & {id(p) for p in frozen.parameters()}
        assert "feature" in distiller.last_terms and distiller.adapters["layer4"].weight.grad is not None
    after = frozen.state_dict()  # BN running stats untouched too: the teacher never ran in train mode
    assert all(torch.equal(teacher_before[k], after[k]) for k in after)
    # the caller's model is not changed by being used as a teacher (it may be pruned again next)
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert losses[-1] < 0.7 * losses[0]


def test_same_width_student_needs_no_adapter(batch):
    images, labels = batch
    with Distiller(_resnet(0), _resnet(1), DistillSettings(feature_loss=True), SIZE) as distiller:
        assert len(distiller.adapters) == 0 and distiller.trainable() is distiller.student
        loss = distiller.loss_fn(distiller.student(images), labels, images)
        assert loss.requires_grad and distiller.last_terms["feature"] > 0
