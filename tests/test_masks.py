import numpy as np
import pytest

from pairspark.core.masks import MaskSettings, class_pairs, pair_masks, select_dims, select_dims_block
from pairspark.core.stats import ClassMoments


def test_threshold_keeps_dims_at_or_above_it_sorted():
    ratio = np.array([1.0, 1.3, 1.2, 5.0, 1.1, np.inf])
    dims = select_dims(ratio, MaskSettings(ratio_threshold=1.2, min_dims=1))
    assert dims.tolist() == [1, 2, 3, 5]
    assert dims.dtype == np.int32


def test_min_dims_tops_up_with_the_highest_ratios_and_ties_go_to_the_lower_dim():
    ratio = np.array([1.05, 1.1, 1.0, 1.1, 1.3])
    dims = select_dims(ratio, MaskSettings(ratio_threshold=1.2, min_dims=3))
    assert dims.tolist() == [1, 3, 4]
    dims = select_dims(ratio, MaskSettings(ratio_threshold=1.2, min_dims=2))
    assert dims.tolist() == [1, 4]


def test_max_dims_caps_the_best():
    ratio = np.linspace(2.0, 1.5, 10)
    assert select_dims(ratio, MaskSettings(ratio_threshold=1.2, min_dims=2, max_dims=4)).tolist() == [0, 1, 2, 3]


def test_min_dims_larger_than_dim_keeps_all():
    assert select_dims(np.ones(3), MaskSettings(min_dims=8)).tolist() == [0, 1, 2]


def test_nan_ratio_is_refused():
    with pytest.raises(ValueError):
        select_dims(np.array([1.0, np.nan]), MaskSettings())


def test_classes_without_enough_confident_items_compare_on_all_dims():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 6)), rng.normal(3, 1, (20, 6)), rng.normal(0, 1, (1, 6))])
    labels = np.array([0] * 20 + [1] * 20 + [2])  # class 2 has one item, class 3 none
    masks = pair_masks(ClassMoments.from_batch(x, labels, 4), MaskSettings(ratio_threshold=1.2, min_dims=2))
    pairs = [tuple(p) for p in class_pairs(4).tolist()]
    assert len(masks) == len(pairs) == 6
    for (a, b), dims in zip(pairs, masks):
        if 2 in (a, b) or 3 in (a, b):
            assert dims.tolist() == list(range(6))
        assert not np.isnan(dims.astype(float)).any()
    # classes 0 and 1 are separated on every dim by a mean shift of 3 sd
    assert masks[pairs.index((0, 1))].tolist() == list(range(6))


def test_constant_dimension_in_one_class_is_kept_as_perfectly_separating():
    x = np.array([[0.0, 1.0], [0.0, 2.0], [5.0, 1.5], [5.0, 1.6]])
    moments = ClassMoments.from_batch(x, np.array([0, 0, 1, 1]), 2)
    (dims,) = pair_masks(moments, MaskSettings(ratio_threshold=1.2, min_dims=1))
    assert 0 in dims.tolist()  # sd = 0 in both classes, means differ: ratio inf


@pytest.mark.parametrize("settings", [MaskSettings(1.2, 8, None), MaskSettings(1.1, 3, 5), MaskSettings(1.5, 1, 2), MaskSettings(9.0, 4, None)])
def test_block_selection_equals_the_per_pair_rule(settings):
    rng = np.random.default_rng(8)
    ratio = np.round(rng.uniform(1.0, 1.8, size=(300, 12)), 1)  # rounding makes ties
    ratio[5] = np.inf
    keep = select_dims_block(ratio, settings)
    for row, k in zip(ratio, keep):
        assert np.flatnonzero(k).tolist() == select_dims(row, settings).tolist()
