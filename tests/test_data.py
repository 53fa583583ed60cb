"""A fine-tune budget in images: ``with_train_subset`` keeps every class in its proportion and nothing else."""

from __future__ import annotations

from collections import Counter

import pytest

from edgeresnet.data import load_data
from edgeresnet.data.sources import with_train_subset
from edgeresnet.errors import UserError


def test_train_subset_is_stratified_seeded_and_leaves_val_and_test_alone():
    splits = load_data("digits", 8, seed=0)
    full = Counter(s.label for s in splits.samples("train"))
    cut = with_train_subset(splits, 300, seed=1)
    kept = Counter(s.label for s in cut.samples("train"))
    assert abs(sum(kept.values()) - 300) <= len(full)  # one rounding per class at most
    for label, count in full.items():  # each class keeps its share of the train split, to one image
        assert abs(kept[label] - count * 300 / sum(full.values())) <= 1
    ids = {id(s) for s in splits.samples("train")}
    assert all(id(s) in ids for s in cut.samples("train"))  # a subset, not new samples
    assert cut.samples("val") is splits.samples("val") and cut.samples("test") is splits.samples("test")
    again = with_train_subset(splits, 300, seed=1)
    assert [id(s) for s in again.samples("train")] == [id(s) for s in cut.samples("train")]
    assert with_train_subset(splits, 10**6) is splits  # a budget above the split is the whole split
    with pytest.raises(UserError, match="--finetune-images 0: must be at least 1"):
        with_train_subset(splits, 0)
