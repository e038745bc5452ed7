"""Face verification (LFW / CFP-FP / AgeDB-30) exactly as InsightFace computes it.

1. Each image's embedding is summed with its horizontal flip's embedding, then L2-normalised.
2. A pair's distance is the squared L2 distance (in [0, 4]); "same" when dist < threshold.
3. The pairs are split by KFold(10, shuffle=False). Each fold's threshold is the one of
   arange(0, 4, 0.01) with the best accuracy on the OTHER nine folds (the first such threshold on a
   tie, as np.argmax picks), and the fold's accuracy is measured with it on the held-out fold.
4. Accuracy is the mean and (population) std over the folds; VAL@FAR=1e-3 is computed the same way
   with thresholds arange(0, 4, 0.001) chosen for the target FAR on the training folds.
The core is numpy; only `embed_with_flip` touches torch. Counting uses sorted distances and
searchsorted, which counts `dist < t` exactly as InsightFace's np.less does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


def embed_with_flip(model, batches: Iterable, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                    device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of uint8 image batches (N, 3, H, W) and of their horizontal flips, as float32 numpy."""
    import torch

    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    plain, flipped = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                x = (torch.as_tensor(batch).to(device).float() / 255.0 - mean_t) / std_t
                plain.append(model(x).float().cpu())
                flipped.append(model(torch.flip(x, dims=[3])).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(plain).numpy(), torch.cat(flipped).numpy()


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    # sklearn.preprocessing.normalize semantics: a zero vector stays zero instead of becoming NaN.
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


def pair_distances(emb_left: np.ndarray, emb_right: np.ndarray, emb_left_flip: np.ndarray | None = None,
                   emb_right_flip: np.ndarray | None = None) -> np.ndarray:
    """Squared L2 distance of each pair after (embedding + flip embedding) and L2 normalisation."""
    left = np.asarray(emb_left, dtype=np.float64)
    right = np.asarray(emb_right, dtype=np.float64)
    if emb_left_flip is not None:
        left = left + np.asarray(emb_left_flip, dtype=np.float64)
    if emb_right_flip is not None:
        right = right + np.asarray(emb_right_flip, dtype=np.float64)
    return np.sum(np.square(_l2_normalize(left) - _l2_normalize(right)), axis=1)


def kfold_index(n_pairs: int, n_folds: int = 10) -> np.ndarray:
    """The fold of each pair under sklearn's KFold(n_folds, shuffle=False), as InsightFace splits."""
    fold = np.empty(n_pairs, dtype=np.int64)
    for k, (_, test) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(np.arange(n_pairs))):
        fold[test] = k
    return fold


def _count_below(dist: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold t, how many of `dist` are < t."""
    return np.searchsorted(np.sort(dist), thresholds, side="left")


def _fold_accuracy(dist: np.ndarray, issame: np.ndarray, fold: np.ndarray, thresholds: np.ndarray) -> dict:
    folds = np.unique(fold)
    # correct[t, k]: pairs of fold k classified right at threshold t (same below it, different at/above).
    correct = np.stack([
        _count_below(dist[(fold == k) & issame], thresholds)
        + (np.sum((fold == k) & ~issame) - _count_below(dist[(fold == k) & ~issame], thresholds))
        for k in folds
    ], axis=1)
    sizes = np.array([np.sum(fold == k) for k in folds])
    train_correct = correct.sum(axis=1, keepdims=True) - correct  # the other folds only
    best = np.argmax(train_correct / (len(dist) - sizes), axis=0)
    accuracies = correct[best, np.arange(len(folds))] / sizes
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "fold_accuracies": accuracies,
        "best_thresholds": thresholds[best],
    }


def ten_fold_accuracy(distances, issame, thresholds: np.ndarray = ACCURACY_THRESHOLDS, n_folds: int = 10) -> dict:
    """InsightFace's k-fold verification accuracy.

    Returns accuracy (mean over folds), accuracy_std, fold_accuracies, best_thresholds (one per fold,
    chosen on the other folds) and fold (the fold index of each pair, for `verification_table`).
    """
    dist = np.asarray(distances, dtype=np.float64)
    same = np.asarray(issame, dtype=bool)
    fold = kfold_index(len(dist), n_folds)
    return {**_fold_accuracy(dist, same, fold, np.asarray(thresholds, dtype=np.float64)), "fold": fold}


def _threshold_at_far(far_curve: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """Linear interpolation of the threshold at which the (non-decreasing) FAR curve reaches `target`.

    InsightFace calls scipy's interp1d(far, thresholds, kind="slinear"), which current scipy rejects
    because the curve has plateaus. This interpolates between the last threshold whose FAR is <= target
    and the next one, which is what that call computes on a plateau-free curve.
    """
    j = int(np.searchsorted(far_curve, target, side="right")) - 1
    if j >= len(far_curve) - 1:
        return float(thresholds[-1])
    f0, f1 = far_curve[j], far_curve[j + 1]
    return float(thresholds[j] + (target - f0) * (thresholds[j + 1] - thresholds[j]) / (f1 - f0))


def _val_far(dist: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float]:
    accept = dist < threshold
    n_same, n_diff = np.sum(same), np.sum(~same)
    val = np.sum(accept & same) / n_same if n_same else 0.0
    far = np.sum(accept & ~same) / n_diff if n_diff else 0.0
    return float(val), float(far)


def tar_at_far(distances, issame, far: float = 1e-3, thresholds: np.ndarray = VAL_THRESHOLDS,
               n_folds: int = 10) -> dict:
    """InsightFace's VAL@FAR: per fold, the threshold reaching FAR=`far` on the training folds
    (0 when they never reach it), evaluated on the held-out fold.

    Returns tar (mean over folds), tar_std, far (mean achieved FAR) and the per-fold thresholds.
    """
    dist = np.asarray(distances, dtype=np.float64)
    same = np.asarray(issame, dtype=bool)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    fold = kfold_index(len(dist), n_folds)
    vals, fars, chosen = [], [], []
    for k in range(n_folds):
        train_diff = dist[(fold != k) & ~same]
        far_curve = _count_below(train_diff, thresholds) / max(len(train_diff), 1)
        threshold = _threshold_at_far(far_curve, thresholds, far) if far_curve.max() >= far else 0.0
        val_k, far_k = _val_far(dist[fold == k], same[fold == k], threshold)
        vals.append(val_k)
        fars.append(far_k)
        chosen.append(threshold)
    return {"tar": float(np.mean(vals)), "tar_std": float(np.std(vals)), "far": float(np.mean(fars)),
            "thresholds": np.array(chosen)}


def verification_table(distances, issame, folds) -> pd.DataFrame:
    """One row per pair (distance, issame, fold): the `verification/<target>.parquet` artifact."""
    return pd.DataFrame({
        "distance": np.asarray(distances, dtype=np.float64),
        "issame": np.asarray(issame, dtype=bool),
        "fold": np.asarray(folds, dtype=np.int64),
    })


def recompute_accuracy(table: pd.DataFrame, thresholds: np.ndarray = ACCURACY_THRESHOLDS) -> float:
    """The k-fold accuracy from a verification table alone (its own fold column)."""
    return _fold_accuracy(table["distance"].to_numpy(np.float64), table["issame"].to_numpy(bool),
                          table["fold"].to_numpy(np.int64), np.asarray(thresholds, dtype=np.float64))["accuracy"]


def pooled_threshold(table: pd.DataFrame, thresholds: np.ndarray = ACCURACY_THRESHOLDS) -> tuple[float, float]:
    """(threshold, accuracy): the distance threshold of `thresholds` with the best accuracy over every pair of
    the table (all folds pooled), picked as the 10-fold protocol picks each fold's (first on a tie, `dist <
    threshold` is "same"). This is the decision threshold a served model uses."""
    dist, same = table["distance"].to_numpy(np.float64), table["issame"].to_numpy(bool)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    correct = _count_below(dist[same], thresholds) + (np.sum(~same) - _count_below(dist[~same], thresholds))
    best = int(np.argmax(correct))
    return float(thresholds[best]), float(correct[best] / max(len(dist), 1))


def decision_threshold(tables: dict[str, pd.DataFrame]) -> dict:
    """The exported decision rule, from the verification set with the most pairs (by name on a tie):
    its pooled best-accuracy distance threshold, and the same threshold on the cosine similarity of the
    L2-normalised embeddings (squared L2 distance d = 2 - 2 cos, so d < t exactly when cos > 1 - t / 2)."""
    target = min(tables, key=lambda name: (-len(tables[name]), name))
    distance, accuracy = pooled_threshold(tables[target])
    return {"target": target, "pairs": int(len(tables[target])), "distance": distance,
            "similarity": 1.0 - distance / 2.0, "accuracy": accuracy,
            "rule": "same person when cosine similarity > similarity (squared L2 distance < distance)"}


def plot_roc(tables: dict[str, pd.DataFrame], path) -> Path:
    """ROC curves (TPR against FAR on a log axis), one per verification table, saved to `path`."""
    from sklearn.metrics import roc_curve

    from trainables.plotting import new_figure

    fig = new_figure((5, 4))
    ax = fig.add_subplot()
    floor = 1.0
    for name, table in tables.items():
        same = table["issame"].to_numpy(bool)
        fpr, tpr, _ = roc_curve(same, -table["distance"].to_numpy(np.float64))
        floor = min(floor, 1.0 / max(np.sum(~same), 1))
        # FAR = 0 cannot sit on a log axis; it is drawn at the smallest FAR the set can measure.
        ax.plot(np.maximum(fpr, 1.0 / max(np.sum(~same), 1)), tpr, label=name)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TPR)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
