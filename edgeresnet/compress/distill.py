"""Knowledge distillation as a loss function for the shared training loop.

``Distiller.loss_fn(logits, labels, images)`` plugs into ``train.fit(..., loss_fn=...)``:

    loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels)
           [+ beta * mean over stages of MSE(adapter(student stage output), teacher stage output)]

(Hinton et al. 2015: the T^2 factor keeps the soft-target gradients on the scale of the hard-label ones as T
changes.) The teacher runs in eval mode under ``no_grad`` with ``requires_grad`` off, so no gradient and no
BN-statistics update ever reaches it. The optional feature loss compares stage outputs (``layer1..layer4``
for ResNets), captured by forward hooks; where the student is narrower (a pruned student, ResNet-18 vs 50) a
learned 1x1 conv maps the student's channels to the teacher's. The adapters train with the student (they
live beside the student in one module, ``Distiller.trainable()``, so the optimizer sees them) and are dropped
afterwards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from edgeresnet.errors import UserError

DEFAULT_STAGES = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class DistillSettings:
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the soft (teacher) term; 1 - alpha goes to the hard labels
    feature_loss: bool = False
    feature_weight: float = 1.0
    stages: tuple[str, ...] = DEFAULT_STAGES

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise UserError(f"--temperature {self.temperature}: must be positive (typical 2-8)")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"--alpha {self.alpha}: must be in [0, 1] (weight of the teacher term)")
        if self.feature_weight < 0:
            raise UserError(f"--feature-weight {self.feature_weight}: must be non-negative")

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "alpha": self.alpha, "feature_loss": self.feature_loss,
                "feature_weight": self.feature_weight, "stages": list(self.stages) if self.feature_loss else []}


def kd_loss(student_logits: Any, teacher_logits: Any, labels: Any, temperature: float, alpha: float) -> Any:
    """Hinton's distillation loss: soft KL (times T^2) weighted by alpha against hard-label cross-entropy."""
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits.detach() / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    if alpha >= 1.0:
        return soft
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


def output_classes(model: Any) -> int:
    """Width of the last linear layer: the class count of a classifier."""
    import torch.nn as nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError("model has no linear classifier; distillation needs a classifier")
    return int(linears[-1].out_features)


def check_compatible(teacher: Any, student: Any, teacher_name: str = "--teacher") -> None:
    t, s = output_classes(teacher), output_classes(student)
    if t != s:
        raise UserError(f"{teacher_name}: teacher has {t} classes but the student has {s}; use a teacher trained on "
                        "the same classes")


def _student_with_adapters_cls() -> Any:
    import torch.nn as nn

    class _StudentWithAdapters(nn.Module):
        """The student plus the feature adapters, so one optimizer trains both; forward is the student's."""

        def __init__(self, student: nn.Module, adapters: nn.ModuleDict) -> None:
            super().__init__()
            self.student = student
            self.adapters = adapters

        def forward(self, x: Any) -> Any:
            return self.student(x)

    return _StudentWithAdapters


class Distiller:
    """Holds the frozen teacher, the hooks and the adapters; ``loss_fn`` is what ``fit`` calls."""

    def __init__(self, teacher: Any, student: Any, settings: DistillSettings, image_size: int) -> None:
        import torch
        import torch.nn as nn

        check_compatible(teacher, student)
        self.settings = settings
        # a private frozen copy: the caller's model (often the very model that was just pruned, and pruned
        # again at the next sweep level) keeps its mode and its requires_grad flags
        self.teacher = copy.deepcopy(teacher).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = student
        self._student_feats: dict[str, Any] = {}
        self._teacher_feats: dict[str, Any] = {}
        self._handles: list[Any] = []
        self.adapters = nn.ModuleDict()
        self.last_terms: dict[str, float] = {}
        if not settings.feature_loss:
            return
        s_mods, t_mods = dict(student.named_modules()), dict(self.teacher.named_modules())
        missing = [s for s in settings.stages if s not in s_mods or s not in t_mods]
        if missing:
            raise UserError(f"--feature-loss: stage(s) {', '.join(missing)} not found in both models; feature "
                            "distillation needs ResNet stage names (layer1..layer4)")
        for stage in settings.stages:
            self._handles.append(s_mods[stage].register_forward_hook(self._store(self._student_feats, stage)))
            self._handles.append(t_mods[stage].register_forward_hook(self._store(self._teacher_feats, stage)))
        # one probe pass to learn each stage's widths, then 1x1 adapters where they differ
        device = next(student.parameters()).device
        was = student.training
        student.eval()
        with torch.no_grad():
            probe = torch.zeros(1, 3, image_size, image_size, device=device)
            student(probe)
            self.teacher.to(device)(probe)
        student.train(was)
        for stage in settings.stages:
            s_ch, t_ch = self._student_feats[stage].shape[1], self._teacher_feats[stage].shape[1]
            if s_ch != t_ch:
                adapter = nn.Conv2d(s_ch, t_ch, kernel_size=1, bias=False).to(device)
                self.adapters[stage.replace(".", "_")] = adapter
        self._student_feats.clear()
        self._teacher_feats.clear()

    @staticmethod
    def _store(target: dict[str, Any], name: str) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            target[name] = output
        return hook

    def trainable(self) -> Any:
        """What to hand to ``fit``: the student itself, or student + adapters when adapters must learn."""
        if len(self.adapters) == 0:
            return self.student
        return _student_with_adapters_cls()(self.student, self.adapters)

    def teacher_logits(self, images: Any) -> Any:
        import torch

        if self.teacher.training:
            self.teacher.eval()
        param = next(self.teacher.parameters())
        if param.device != images.device:
            self.teacher.to(images.device)
        with torch.no_grad():
            return self.teacher(images)

    def loss_fn(self, logits: Any, labels: Any, images: Any) -> Any:
        """``fit``'s criterion: the student has just run on ``images`` (its stage outputs are in the hooks)."""
        import torch.nn.functional as F

        student_feats = dict(self._student_feats)
        t_logits = self.teacher_logits(images)
        loss = kd_loss(logits, t_logits, labels, self.settings.temperature, self.settings.alpha)
        self.last_terms = {"kd": float(loss.detach())}
        if self.settings.feature_loss and self.settings.feature_weight > 0:
            terms = []
            for stage in self.settings.stages:
                s, t = student_feats.get(stage), self._teacher_feats.get(stage)
                if s is None or t is None:
                    continue
                key = stage.replace(".", "_")
                if key in self.adapters:
                    s = self.adapters[key](s)
                if s.shape[-2:] != t.shape[-2:]:
                    s = F.adaptive_avg_pool2d(s, t.shape[-2:])
                terms.append(F.mse_loss(s, t.detach()))
            if terms:
                feat = sum(terms) / len(terms)
                self.last_terms["feature"] = float(feat.detach())
                loss = loss + self.settings.feature_weight * feat
        self._student_feats.clear()
        self._teacher_feats.clear()
        return loss

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> Distiller:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
