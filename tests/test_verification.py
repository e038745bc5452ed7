"""The InsightFace verification protocol: distances, k-fold accuracy, VAL@FAR, the table artifact."""

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold

from trainables.tasks.recognition.verification import (_threshold_at_far, embed_with_flip, pair_distances, plot_roc,
                                     recompute_accuracy, tar_at_far, ten_fold_accuracy, verification_table)

THRESHOLDS = np.arange(0, 4, 0.01)


def _insightface_calculate_roc(dist, issame, n_folds=10):
    """InsightFace's calculate_roc / calculate_accuracy loop, transcribed, as the reference."""
    accuracy, best = np.zeros(n_folds), np.zeros(n_folds)
    for k, (train, test) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(np.arange(len(dist)))):
        acc_train = np.array([np.mean(np.less(dist[train], t) == issame[train]) for t in THRESHOLDS])
        best[k] = THRESHOLDS[np.argmax(acc_train)]
        accuracy[k] = np.mean(np.less(dist[test], best[k]) == issame[test])
    return accuracy, best


def _random_pairs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    issame = rng.uniform(size=n) < 0.5
    dist = np.clip(np.where(issame, rng.normal(0.9, 0.35, n), rng.normal(1.6, 0.35, n)), 0, 4)
    return dist, issame


def test_pair_distances_sum_the_flip_then_normalise():
    left, right = np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([[3.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(pair_distances(left, right), [0.0, 4.0])
    # (1,0) + flip (0,1) normalises to (1,1)/sqrt2, the same direction as (5,5).
    dist = pair_distances(np.array([[1.0, 0.0]]), np.array([[5.0, 5.0]]), np.array([[0.0, 1.0]]), None)
    np.testing.assert_allclose(dist, [0.0], atol=1e-12)


def test_matches_insightface_loop_on_random_pairs():
    dist, issame = _random_pairs()
    result = ten_fold_accuracy(dist, issame)
    accuracy, best = _insightface_calculate_roc(dist, issame)
    np.testing.assert_allclose(result["fold_accuracies"], accuracy)
    np.testing.assert_allclose(result["best_thresholds"], best)
    assert result["accuracy"] == pytest.approx(accuracy.mean())
    assert result["accuracy_std"] == pytest.approx(accuracy.std())
    np.testing.assert_array_equal(result["fold"], np.repeat(np.arange(10), 60))


def test_perfectly_separable_gives_one_with_thresholds_between():
    rng = np.random.default_rng(1)
    issame = np.tile([True, False], 100)
    dist = np.where(issame, rng.uniform(0.1, 0.9, 200), rng.uniform(1.5, 3.0, 200))
    result = ten_fold_accuracy(dist, issame)
    assert result["accuracy"] == 1.0 and result["accuracy_std"] == 0.0
    assert np.all(result["best_thresholds"] > dist[issame].max())
    assert np.all(result["best_thresholds"] <= dist[~issame].min())


def test_each_fold_gets_the_threshold_of_the_other_folds():
    # Folds 0-4 separate at 0.3 | 0.7, folds 5-9 at 1.3 | 1.7. Held out from the first group, the nine
    # training folds favour the second group's threshold (5 folds against 4) and vice versa, so every
    # held-out fold is classified with the other group's threshold and scores 0.5. A threshold chosen
    # with the held-out fold in view would score 0.75 overall.
    folds = np.repeat(np.arange(10), 20)
    issame = np.tile(np.repeat([True, False], 10), 10)
    low = folds < 5
    dist = np.where(low, np.where(issame, 0.3, 0.7), np.where(issame, 1.3, 1.7))
    result = ten_fold_accuracy(dist, issame)
    np.testing.assert_allclose(result["best_thresholds"], [1.31] * 5 + [0.31] * 5)
    assert result["accuracy"] == pytest.approx(0.5)
    in_sample = max(np.mean((dist < t) == issame) for t in THRESHOLDS)
    assert in_sample == pytest.approx(0.75)


def test_corrupting_the_held_out_fold_does_not_move_its_threshold():
    dist, issame = _random_pairs()
    before = ten_fold_accuracy(dist, issame)
    corrupted = issame.copy()
    corrupted[before["fold"] == 3] = ~corrupted[before["fold"] == 3]
    after = ten_fold_accuracy(dist, corrupted)
    assert after["best_thresholds"][3] == before["best_thresholds"][3]
    assert after["fold_accuracies"][3] == pytest.approx(1.0 - before["fold_accuracies"][3])


def test_table_recomputes_the_reported_accuracy():
    dist, issame = _random_pairs(seed=2)
    result = ten_fold_accuracy(dist, issame)
    table = verification_table(dist, issame, result["fold"])
    assert list(table.columns) == ["distance", "issame", "fold"]
    assert recompute_accuracy(table) == pytest.approx(result["accuracy"], abs=1e-12)
    shuffled = table.sample(frac=1.0, random_state=0)
    assert recompute_accuracy(shuffled) == pytest.approx(result["accuracy"], abs=1e-12)


def test_threshold_interpolation_for_the_target_far():
    far_curve = np.array([0.0, 0.0, 0.0005, 0.002, 0.01])
    assert _threshold_at_far(far_curve, np.arange(5.0), 1e-3) == pytest.approx(2 + 0.5 / 1.5)
    # On a plateau it keeps the largest threshold with that FAR.
    assert _threshold_at_far(np.array([0.0, 0.001, 0.001, 0.003]), np.arange(4.0), 1e-3) == 2.0


def test_tar_at_far_separable_and_indistinguishable():
    rng = np.random.default_rng(3)
    issame = np.tile([True, False], 2000)
    separable = np.where(issame, rng.uniform(0.1, 0.9, 4000), rng.uniform(1.5, 3.0, 4000))
    result = tar_at_far(separable, issame)
    assert result["tar"] == 1.0 and result["far"] <= 2e-3
    same_as_chance = rng.uniform(0, 4, 4000)
    result = tar_at_far(same_as_chance, issame)
    assert result["tar"] < 0.01 and result["far"] < 0.01


def test_embed_with_flip_and_plot(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    images = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    emb, flip = embed_with_flip(model, [images[:4], images[4:]])
    x = (images.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        np.testing.assert_allclose(emb, model(x).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(flip, model(x.flip(3)).numpy(), rtol=1e-5, atol=1e-6)
    dist, issame = _random_pairs(seed=4)
    result = ten_fold_accuracy(dist, issame)
    path = plot_roc({"lfw": verification_table(dist, issame, result["fold"])}, tmp_path / "roc.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
