"""Attribute metrics agree with scikit-learn; threshold calibration lands where it should."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
)

from trainables.errors import UserError
from trainables.tasks.attributes.metrics import (
    METRIC_NAMES,
    THRESHOLD_STRATEGIES,
    apply_policy,
    attribute_confusion,
    attribute_metrics,
    calibrate_thresholds,
    majority_accuracy,
    metrics_from_confusion,
    per_attribute_metrics,
)


def sklearn_metrics(scores, labels, thresholds):
    pred = scores >= np.broadcast_to(thresholds, scores.shape[1:])
    cols = range(labels.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balanced_accuracy_score warns on single-class columns
        return {
            "mean_accuracy": np.mean([accuracy_score(labels[:, a], pred[:, a]) for a in cols]),
            "macro_precision": np.mean([precision_score(labels[:, a], pred[:, a], zero_division=0) for a in cols]),
            "macro_recall": np.mean([recall_score(labels[:, a], pred[:, a], zero_division=0) for a in cols]),
            "macro_f1": np.mean([f1_score(labels[:, a], pred[:, a], zero_division=0) for a in cols]),
            "balanced_accuracy": np.mean([balanced_accuracy_score(labels[:, a], pred[:, a]) for a in cols]),
        }


def degenerate_data(seed, n=60):
    rng = np.random.default_rng(seed)
    scores = rng.random((n, 9))
    labels = (rng.random((n, 9)) < rng.uniform(0.05, 0.6, 9)).astype(np.int64)
    labels[:, 0] = 0  # all-negative labels, some predicted positive
    labels[:, 1] = 1  # all-positive labels
    scores[:, 2] = 0.1  # no predicted positives
    labels[:, 3] = 0
    scores[:, 3] = 0.1  # all-negative labels and no predicted positives
    labels[:, 4] = 1
    scores[:, 4] = 0.9  # all-positive labels, all predicted positive
    labels[:, 5] = 0
    scores[:, 5] = 0.9  # all-negative labels, all predicted positive
    return scores, labels


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("thresholds", ["scalar", "vector"])
def test_metrics_agree_with_sklearn(seed, thresholds):
    scores, labels = degenerate_data(seed)
    t = 0.5 if thresholds == "scalar" else np.random.default_rng(seed).uniform(0.2, 0.8, scores.shape[1])
    ours = attribute_metrics(scores, labels, t)
    assert set(ours) == set(METRIC_NAMES)
    expected = sklearn_metrics(scores, labels, t)
    for name in METRIC_NAMES:
        assert ours[name] == pytest.approx(expected[name], abs=1e-6), name


def test_per_attribute_rows_agree_with_sklearn():
    scores, labels = degenerate_data(7)
    names = [f"attr{i}" for i in range(scores.shape[1])]
    table = per_attribute_metrics(scores, labels, 0.5, names)
    assert list(table.columns) == [
        "name", "positive_rate", "accuracy", "precision", "recall", "f1", "balanced_accuracy"
    ]
    assert list(table["name"]) == names
    pred = scores >= 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a, row in table.iterrows():
            assert row.positive_rate == pytest.approx(labels[:, a].mean())
            assert row.accuracy == pytest.approx(accuracy_score(labels[:, a], pred[:, a]))
            assert row.precision == pytest.approx(precision_score(labels[:, a], pred[:, a], zero_division=0))
            assert row.recall == pytest.approx(recall_score(labels[:, a], pred[:, a], zero_division=0))
            assert row.f1 == pytest.approx(f1_score(labels[:, a], pred[:, a], zero_division=0))
            assert row.balanced_accuracy == pytest.approx(balanced_accuracy_score(labels[:, a], pred[:, a]))


def test_confusion_counts_and_summing_across_shards():
    scores = np.array([[0.9, 0.2], [0.5, 0.7], [0.1, 0.4]])
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    conf = attribute_confusion(scores, labels, 0.5)  # 0.5 itself counts as positive
    assert conf.dtype == np.int64
    assert conf.tolist() == [[1, 1, 1, 0], [1, 0, 1, 1]]
    halves = attribute_confusion(scores[:2], labels[:2], 0.5) + attribute_confusion(scores[2:], labels[2:], 0.5)
    assert metrics_from_confusion(halves) == metrics_from_confusion(conf)


def test_rejects_minus_one_labels():
    with pytest.raises(ValueError, match="0/1"):
        attribute_confusion(np.zeros((2, 1)), np.array([[1], [-1]]), 0.5)


def test_majority_accuracy_hand_example():
    labels = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])  # rates 0.75 and 0.25
    assert majority_accuracy(labels) == pytest.approx(0.75)
    assert majority_accuracy(np.array([[1, 0, 1], [1, 1, 0]])) == pytest.approx((1 + 0.5 + 0.5) / 3)


def constructed_validation():
    rng = np.random.default_rng(0)
    n = 400
    # Attribute 0: separable, negatives in [0.05, 0.3], positives in [0.6, 0.95].
    y0 = rng.random(n) < 0.4
    s0 = np.where(y0, rng.uniform(0.6, 0.95, n), rng.uniform(0.05, 0.3, n))
    # Attribute 1: rare (5%) and under-confident, positives scored around 0.3, negatives around 0.1.
    y1 = rng.random(n) < 0.05
    s1 = np.clip(np.where(y1, rng.normal(0.3, 0.05, n), rng.normal(0.1, 0.05, n)), 0, 1)
    return np.stack([s0, s1], 1), np.stack([y0, y1], 1).astype(int)


@pytest.mark.parametrize("strategy", ["f1_opt", "acc_opt"])
def test_opt_strategies_land_between_separable_classes(strategy):
    scores, labels = constructed_validation()
    t = calibrate_thresholds(strategy, scores, labels)
    pos, neg = scores[labels[:, 0] == 1, 0], scores[labels[:, 0] == 0, 0]
    assert neg.max() < t[0] < pos.min()
    # Only one cut between distinct scores separates the classes; it sits at their midpoint.
    assert t[0] == pytest.approx((neg.max() + pos.min()) / 2)
    assert attribute_metrics(scores[:, :1], labels[:, :1], t[:1])["mean_accuracy"] == 1.0


def test_opt_threshold_is_a_midpoint_and_tie_breaks_toward_half():
    scores = np.array([[0.1], [0.2], [0.8], [0.9]])
    labels = np.array([[0], [0], [1], [1]])
    assert calibrate_thresholds("f1_opt", scores, labels)[0] == pytest.approx(0.5)
    scores = np.array([[0.1], [0.2], [0.3], [0.4]])
    assert calibrate_thresholds("acc_opt", scores, labels)[0] == pytest.approx(0.25)


def test_f1_opt_beats_fixed_on_imbalanced_attribute():
    scores, labels = constructed_validation()
    fixed = calibrate_thresholds("fixed", scores, labels)
    tuned = calibrate_thresholds("f1_opt", scores, labels)
    assert fixed.tolist() == [0.5, 0.5]
    f1 = lambda t: per_attribute_metrics(scores, labels, t, ["a", "b"])["f1"][1]
    assert f1(fixed) == 0.0  # nothing scores above 0.5
    assert f1(tuned) > 0.8
    assert 0.1 < tuned[1] < 0.3


def test_opt_matches_brute_force_over_every_threshold():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((50, 6)), 1)  # many ties
    labels = (rng.random((50, 6)) < 0.3).astype(int)
    labels[:, 0] = 0
    scores[:, 1] = 1.0
    candidates = np.linspace(-0.05, 1.05, 221)
    for strategy, key in [("f1_opt", "macro_f1"), ("acc_opt", "mean_accuracy")]:
        t = calibrate_thresholds(strategy, scores, labels)
        for a in range(scores.shape[1]):
            best = max(attribute_metrics(scores[:, [a]], labels[:, [a]], c)[key] for c in candidates)
            got = attribute_metrics(scores[:, [a]], labels[:, [a]], t[a])[key]
            assert got == pytest.approx(best, abs=1e-12), (strategy, a)


def test_acc_opt_predicts_nothing_when_top_score_is_one_and_all_negative():
    scores = np.array([[1.0], [0.3]])
    t = calibrate_thresholds("acc_opt", scores, np.array([[0], [0]]))
    assert t[0] > 1.0
    assert attribute_metrics(scores, np.array([[0], [0]]), t)["mean_accuracy"] == 1.0


def test_prior_strategy_returns_train_prior():
    scores, labels = constructed_validation()
    prior = np.array([0.42, 0.05])
    assert calibrate_thresholds("prior", scores, labels, train_prior=prior).tolist() == prior.tolist()
    with pytest.raises(ValueError, match="train_prior"):
        calibrate_thresholds("prior", scores, labels)


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(UserError, match="known: " + ", ".join(THRESHOLD_STRATEGIES)):
        calibrate_thresholds("median", np.zeros((2, 1)), np.zeros((2, 1)))


def test_apply_policy_arithmetic_and_clipping():
    base = np.array([0.1, 0.9, 0.5])
    assert apply_policy(base, 0.0, 0.0) == pytest.approx(base)
    assert apply_policy(base, 1.0, 0.0) == pytest.approx([0.5, 0.5, 0.5])
    assert apply_policy(base, 0.5, 0.1) == pytest.approx([0.4, 0.8, 0.6])
    assert apply_policy(base, 0.0, -1.0).tolist() == [1e-4] * 3
    assert apply_policy(base, 0.0, 1.0).tolist() == [1 - 1e-4] * 3


def _per_attribute_f1_and_accuracy(scores, labels, thresholds):
    """(F1, accuracy) of each attribute, counted directly from the predictions (no code under test)."""
    pred = scores >= thresholds
    tp = (pred & (labels == 1)).sum(axis=0)
    fp = (pred & (labels == 0)).sum(axis=0)
    fn = (~pred & (labels == 1)).sum(axis=0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return f1, (pred == (labels == 1)).mean(axis=0)


def test_calibration_is_optimal_on_celeba_sized_validation():
    """On a CelebA-sized validation set (20k faces x 40 attributes, 20% positive, overlapping scores),
    every attribute's f1_opt threshold scores an F1 at least that of every threshold on a fine grid, and
    its acc_opt threshold an accuracy at least that of every grid threshold; both beat 0.5 somewhere."""
    rng = np.random.default_rng(0)
    labels = (rng.random((20_000, 40)) < rng.uniform(0.05, 0.5, 40)).astype(int)
    scores = np.clip(labels * 0.3 + rng.random((20_000, 40)) * 0.7, 0, 1)
    f1_opt = _per_attribute_f1_and_accuracy(scores, labels, calibrate_thresholds("f1_opt", scores, labels))[0]
    acc_opt = _per_attribute_f1_and_accuracy(scores, labels, calibrate_thresholds("acc_opt", scores, labels))[1]
    grid = [_per_attribute_f1_and_accuracy(scores, labels, t) for t in np.linspace(0, 1, 101)]
    best_f1 = np.max([f1 for f1, _ in grid], axis=0)
    best_accuracy = np.max([accuracy for _, accuracy in grid], axis=0)
    assert np.all(f1_opt >= best_f1 - 1e-12), np.flatnonzero(f1_opt < best_f1 - 1e-12)
    assert np.all(acc_opt >= best_accuracy - 1e-12), np.flatnonzero(acc_opt < best_accuracy - 1e-12)
    at_half = _per_attribute_f1_and_accuracy(scores, labels, 0.5)
    assert f1_opt.mean() > at_half[0].mean() + 0.01 and acc_opt.mean() > at_half[1].mean() + 0.01
