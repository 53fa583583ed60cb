"""Structured pruning: a genuinely smaller dense model, coupling respected, TAO's policy knobs honoured."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeresnet.compress.flops import count_costs
from edgeresnet.compress.importance import filter_scores, merge_scores
from edgeresnet.compress.prune import PruneSettings, prune_model
from edgeresnet.compress.prune_plan import keep_count
from edgeresnet.errors import UserError
from edgeresnet.models import ModelSpec, build_model, load_checkpoint, make_checkpoint, model_from_checkpoint

pytestmark = pytest.mark.usefixtures("torch_single_thread")


SIZE = 32


@pytest.fixture(scope="module")
def digits_batch():
    from edgeresnet.data import load_data

    images, labels = load_data("digits", SIZE).arrays("test", limit=24)
    return torch.from_numpy(images), labels


def _model(seed: int = 0, small_stem: bool = False):
    """The recipe default (standard stem at 32 px, 37 MMACs) keeps the tests fast; the small stem is covered too."""
    torch.manual_seed(seed)
    return build_model(ModelSpec("resnet18", 10, small_stem=small_stem)).eval()


def _widths(model):
    return {n: m.weight.shape for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear,
                                                                                    torch.nn.BatchNorm2d))}


# -- policy arithmetic --------------------------------------------------------------------------------
def test_keep_count_rounds_to_granularity_and_respects_min_filters():
    assert keep_count(64, 32, 8, 16) == 32
    assert keep_count(64, 44.8, 8, 16) == 48  # nearest multiple of 8
    assert keep_count(64, 43.0, 8, 16, round_up=True) == 48  # TAO's threshold mode rounds up
    assert keep_count(64, 3, 8, 16) == 16  # never below --min-filters
    assert keep_count(64, 3, 8, 20) == 24  # min-filters not a multiple: next multiple above it
    assert keep_count(12, 3, 8, 16) == 12  # narrower than min-filters: the layer stays whole
    assert keep_count(64, 70, 8, 16) == 64
    assert keep_count(64, 33, 1, 1) == 33  # granularity 1 disables rounding


def test_l1_and_l2_rank_filters_differently():
    weight = torch.tensor([[3.0, 0, 0, 0], [1.0, 1, 1, 1]]).view(2, 4, 1, 1)
    assert filter_scores(weight, "l2").argmax() == 0
    assert filter_scores(weight, "l1").argmax() == 1


def test_equalization_criteria_match_tao_definitions():
    stats = torch.tensor([[1.0, 0.2, 0.5], [0.25, 0.8, 0.5]])
    assert torch.allclose(merge_scores(stats, "union"), torch.tensor([1.0, 0.8, 0.5]))
    assert torch.allclose(merge_scores(stats, "intersection"), torch.tensor([0.25, 0.2, 0.5]))
    assert torch.allclose(merge_scores(stats, "arithmetic_mean"), torch.tensor([0.625, 0.5, 0.5]))
    assert torch.allclose(merge_scores(stats, "geometric_mean"), torch.tensor([0.5, 0.4, 0.5]))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"ratio": 1.5}, "--ratio 1.5"), ({"ratio": 0.0}, "--ratio 0.0"), ({"flops": 1.0}, "--flops 1.0"),
    ({"threshold": 0.0}, "--threshold"), ({"ratio": 0.5, "granularity": 0}, "--granularity 0"),
    ({"ratio": 0.5, "min_filters": 0}, "--min-filters 0"), ({}, "no pruning target"),
    ({"ratio": 0.5, "flops": 0.5}, "alternatives"), ({"ratio": 0.5, "equalization": "max"}, "--equalization max"),
])
def test_bad_settings_are_one_line_user_errors(kwargs, fragment):
    with pytest.raises(UserError) as info:
        PruneSettings(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


# -- surgery ------------------------------------------------------------------------------------------
def test_ratio_prune_is_smaller_dense_runs_and_keeps_coupling(digits_batch):
    model = _model()
    images, _ = digits_batch
    result = prune_model(model, PruneSettings(ratio=0.5), SIZE)
    pruned = result.model.eval()
    assert result.after.params < 0.3 * result.before.params and result.after.macs < 0.3 * result.before.macs
    assert pruned(images).shape == (len(images), 10)
    widths = _widths(pruned)
    assert widths["fc.weight" if "fc.weight" in widths else "fc"] [0] == 10  # classifier outputs untouched
    for group in result.graph.groups:  # every coupled conv/bn keeps the same channels
        outs = {widths[p][0] for p in group.producers} | {widths[n][0] for n in group.norms}
        ins = {widths[c][1] for c, _kind in group.consumers}
        assert outs == ins and len(outs) == 1
    assert widths["layer1.0.conv1"][0] == 32 and widths["layer4.1.conv2"][0] == 256
    assert not any(isinstance(m, torch.nn.utils.parametrize.ParametrizationList) for m in pruned.modules())  # no masks


def test_pruned_weights_are_the_kept_filters_and_zero_channels_change_nothing(digits_batch):
    """Silence every odd channel (zero filters, zero BN affine): pruning them must not change the output."""
    images, _ = digits_batch
    model = _model(1)
    result0 = prune_model(model, PruneSettings(ratio=0.5), SIZE)
    with torch.no_grad():
        for group in result0.graph.groups:
            odd = torch.arange(1, group.channels, 2)
            for name in group.producers:
                model.get_submodule(name).weight[odd] = 0
            for name in group.norms:
                model.get_submodule(name).weight[odd] = 0
                model.get_submodule(name).bias[odd] = 0
    result = prune_model(model, PruneSettings(ratio=0.5, granularity=1, min_filters=1), SIZE)
    for plan in result.plan.groups:
        assert plan.keep == list(range(0, plan.channels, 2))  # the zero (lowest-norm) filters went
    conv = result.model.get_submodule("layer2.0.conv1")
    keep_out = result.plan.groups[[g.index for g in result.graph.groups
                                   if "layer2.0.conv1" in g.producers][0]].keep
    keep_in = result.plan.groups[result.graph.group_of_producer("conv1").index].keep
    original = model.get_submodule("layer2.0.conv1").weight
    assert torch.equal(conv.weight, original[keep_out][:, keep_in])
    with torch.no_grad():
        assert torch.allclose(result.model.eval()(images), model(images), atol=1e-5)


def test_granularity_and_min_filters_are_respected():
    result = prune_model(_model(), PruneSettings(ratio=0.9, granularity=16, min_filters=32), SIZE)
    for plan in result.plan.groups:
        assert len(plan.keep) % 16 == 0 and len(plan.keep) >= 32
    odd = prune_model(_model(), PruneSettings(ratio=0.4, granularity=3, min_filters=5), SIZE)
    assert all(len(p.keep) % 3 == 0 for p in odd.plan.groups)


def test_flops_target_is_met_closely():
    result = prune_model(_model(), PruneSettings(flops=0.5), SIZE)
    kept = result.after.macs / result.before.macs
    assert 0.45 <= kept <= 0.5
    assert result.plan.estimated_macs == result.after.macs  # the search's arithmetic equals a real count
    with pytest.raises(UserError, match="unreachable"):
        prune_model(_model(), PruneSettings(flops=0.01, min_filters=64), SIZE)


def test_threshold_keeps_filters_above_normalised_norm():
    model = _model(2)
    with torch.no_grad():  # layer1.0.conv1: filters 0..15 strong, the rest at 10 % of the max norm
        w = model.layer1[0].conv1.weight
        w.copy_(torch.ones_like(w))
        w[16:] *= 0.1
    result = prune_model(model, PruneSettings(threshold=0.5), SIZE)
    plan = [p for p in result.plan.groups if "layer1.0.conv1" in p.producers][0]
    assert plan.keep == list(range(16))


def test_pruned_checkpoint_round_trips_and_exports(tmp_path, digits_batch):
    import onnxruntime as ort

    from edgeresnet.compress.measure import export_onnx_file
    from edgeresnet.data import load_data

    images, _ = digits_batch
    spec = ModelSpec("resnet18", 10, small_stem=True)
    pruned = prune_model(_model(small_stem=True), PruneSettings(ratio=0.6, equalization="geometric_mean"),
                         SIZE).model.eval()
    preprocess = load_data("digits", SIZE).preprocess
    path = tmp_path / "pruned.pt"
    torch.save(make_checkpoint(pruned, spec, preprocess.to_dict()), path)
    loaded, loaded_spec = model_from_checkpoint(load_checkpoint(path), path)
    assert loaded_spec == spec
    with torch.no_grad():
        expected = pruned(images).numpy()
        assert np.allclose(loaded(images).numpy(), expected, atol=1e-5)
    assert count_costs(loaded, SIZE).params == count_costs(pruned, SIZE).params
    onnx_path = export_onnx_file(loaded, preprocess, tmp_path / "pruned.onnx", exporter="torchscript")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images[:1].numpy()})[0]
    assert np.allclose(got, expected[:1], atol=1e-3)


def test_batchnorm_recalibration_measures_the_pruned_features(digits_batch):
    from edgeresnet.compress.prune import recalibrate_batchnorm

    images, _ = digits_batch
    pruned = prune_model(_model(3), PruneSettings(ratio=0.5), SIZE).model.eval()
    weights = {k: v.clone() for k, v in pruned.state_dict().items() if "running" not in k and "batches" not in k}
    assert recalibrate_batchnorm(pruned, images.numpy(), batch_size=len(images)) == len(images)
    assert not pruned.training and pruned.bn1.momentum == 0.1  # mode and momentum restored
    with torch.no_grad():  # one batch: the running mean is exactly the batch mean of what bn1 sees
        expected = pruned.conv1(images).mean((0, 2, 3))
    assert torch.allclose(pruned.bn1.running_mean, expected, atol=1e-5)
    assert all(torch.equal(v, pruned.state_dict()[k]) for k, v in weights.items())  # no weight moved
