"""Multi-label attribute metrics and per-attribute threshold calibration.

Every metric is computed per attribute from a (tp, fp, fn, tn) confusion row and then averaged over
attributes (macro), matching scikit-learn's per-column `accuracy_score`, `precision_score`,
`recall_score`, `f1_score` (zero_division=0) and `balanced_accuracy_score`. Working from counts
rather than calling scikit-learn lets the threshold search score every candidate threshold of
every attribute at once, and lets distributed ranks sum confusions before computing metrics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.errors import UserError

METRIC_NAMES = ("mean_accuracy", "macro_f1", "balanced_accuracy", "macro_precision", "macro_recall")

# Keeps a swept threshold strictly inside (0, 1), where "score >= t" still separates something.
_THRESHOLD_CLIP = (1e-4, 1.0 - 1e-4)


def _as_scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (N, A)")
    # A CelebA-style -1/1 label would otherwise silently count as positive.
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0/1; convert -1/1 attribute labels before scoring")
    return scores, labels.astype(bool)


def attribute_confusion(scores: np.ndarray, labels: np.ndarray, thresholds) -> np.ndarray:
    """(A, 4) int64 counts [tp, fp, fn, tn]; an example is predicted positive when score >= threshold."""
    scores, labels = _as_scores_labels(scores, labels)
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), scores.shape[1:])
    pred = scores >= thresholds
    tp = np.sum(pred & labels, axis=0)
    fp = np.sum(pred & ~labels, axis=0)
    fn = np.sum(~pred & labels, axis=0)
    tn = np.sum(~pred & ~labels, axis=0)
    return np.stack([tp, fp, fn, tn], axis=1).astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and 0 where den == 0 (scikit-learn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _per_attribute(conf: np.ndarray) -> dict[str, np.ndarray]:
    conf = np.asarray(conf, dtype=np.int64)
    tp, fp, fn, tn = conf.T
    n = tp + fp + fn + tn
    pos, neg = tp + fn, fp + tn
    tpr, tnr = _safe_div(tp, pos), _safe_div(tn, neg)
    # balanced_accuracy_score averages recall over the classes present in y_true only, so a
    # column with a single true class scores that class's recall alone.
    present = (pos > 0).astype(np.float64) + (neg > 0)
    return {
        "positive_rate": _safe_div(pos, n),
        "accuracy": _safe_div(tp + tn, n),
        "precision": _safe_div(tp, tp + fp),
        "recall": tpr,
        # One division of exact integer counts: equal F1 values compare equal, which the
        # threshold search relies on for its tie-break.
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": _safe_div(tpr * (pos > 0) + tnr * (neg > 0), present),
    }


def metrics_from_confusion(conf: np.ndarray) -> dict[str, float]:
    """The METRIC_NAMES, each the mean over attributes of the per-attribute metric."""
    per = _per_attribute(conf)
    return {
        "mean_accuracy": float(per["accuracy"].mean()),
        "macro_f1": float(per["f1"].mean()),
        "balanced_accuracy": float(per["balanced_accuracy"].mean()),
        "macro_precision": float(per["precision"].mean()),
        "macro_recall": float(per["recall"].mean()),
    }


def attribute_metrics(scores, labels, thresholds=0.5) -> dict[str, float]:
    """Macro metrics of (N, A) probabilities against (N, A) 0/1 labels at the given thresholds."""
    return metrics_from_confusion(attribute_confusion(scores, labels, thresholds))


def per_attribute_metrics(scores, labels, thresholds, names) -> pd.DataFrame:
    """One row per attribute: name, positive_rate, accuracy, precision, recall, f1, balanced_accuracy."""
    conf = attribute_confusion(scores, labels, thresholds)
    names = list(names)
    if len(names) != len(conf):
        raise ValueError(f"{len(names)} attribute names for {len(conf)} attributes")
    return pd.DataFrame({"name": names, **_per_attribute(conf)})


def majority_accuracy(labels) -> float:
    """Accuracy of always predicting each attribute's majority class of `labels` itself."""
    p = np.asarray(labels, dtype=np.float64).mean(axis=0)
    return float(np.maximum(p, 1.0 - p).mean())


def _candidate_cuts(scores: np.ndarray, labels: np.ndarray):
    """Every distinct way to split each column by a threshold, as (N+1, A) arrays.

    Row 0 predicts nothing positive; row i+1 predicts the i+1 highest scores positive and is valid
    only where the (i+1)-th and (i+2)-th scores differ. Each threshold sits at the midpoint of the
    two scores it separates, so it does not hug a validation example.
    """
    n, a = scores.shape
    order = np.argsort(-scores, axis=0, kind="stable")
    s = np.take_along_axis(scores, order, axis=0)
    y = np.take_along_axis(labels, order, axis=0)
    zeros = np.zeros((1, a), dtype=np.int64)
    tp = np.concatenate([zeros, np.cumsum(y, axis=0)])
    fp = np.concatenate([zeros, np.cumsum(~y, axis=0)])

    upper = np.concatenate([np.maximum(s[:1], 1.0), s])  # lowest score predicted positive
    lower = np.concatenate([s, np.minimum(s[-1:], 0.0)])  # highest score predicted negative
    # A top score of exactly 1 leaves no room below 1 for "nothing positive": step just above it.
    upper[0] = np.where(upper[0] > lower[0], upper[0], np.nextafter(lower[0], np.inf))
    mid = (upper + lower) / 2.0
    # Where rounding lands the midpoint on the lower score, that score would flip to positive.
    thresholds = np.where(mid > lower, mid, upper)
    valid = upper > lower
    valid[-1] = True  # "everything positive" always exists, even when every score is 0
    return tp, fp, thresholds, valid


def _optimise(scores, labels, metric: str) -> np.ndarray:
    scores, labels = _as_scores_labels(scores, labels)
    tp, fp, thresholds, valid = _candidate_cuts(scores, labels)
    pos = labels.sum(axis=0)
    neg = labels.shape[0] - pos
    conf = np.stack([tp, fp, pos - tp, neg - fp], axis=-1).reshape(-1, 4)
    value = _per_attribute(conf)[metric].reshape(tp.shape)
    value = np.where(valid, value, -np.inf)
    best = value == value.max(axis=0)
    # Among equally good cuts, the one nearest 0.5 moves least from the uncalibrated model.
    distance = np.where(best, np.abs(thresholds - 0.5), np.inf)
    pick = np.argmin(distance, axis=0)
    return thresholds[pick, np.arange(thresholds.shape[1])]


def _fixed(val_scores, val_labels, train_prior):
    return np.full(np.asarray(val_scores).shape[1], 0.5)


def _prior(val_scores, val_labels, train_prior):
    # Zhou's threshold rescaling: y/(1-y) > m+/m-  <=>  y > m+/(m+ + m-), the training positive rate.
    if train_prior is None:
        raise ValueError("threshold strategy 'prior' needs train_prior, the training positive rates")
    prior = np.asarray(train_prior, dtype=np.float64).reshape(-1)
    if prior.shape[0] != np.asarray(val_scores).shape[1]:
        raise ValueError(f"train_prior has {prior.shape[0]} rates for {np.asarray(val_scores).shape[1]} attributes")
    return prior.copy()


def _f1_opt(val_scores, val_labels, train_prior):
    return _optimise(val_scores, val_labels, "f1")


def _acc_opt(val_scores, val_labels, train_prior):
    return _optimise(val_scores, val_labels, "accuracy")


_STRATEGIES = {"fixed": _fixed, "prior": _prior, "f1_opt": _f1_opt, "acc_opt": _acc_opt}
THRESHOLD_STRATEGIES = tuple(_STRATEGIES)  # ("fixed", "prior", "f1_opt", "acc_opt")


def calibrate_thresholds(strategy: str, val_scores, val_labels, train_prior: np.ndarray | None = None) -> np.ndarray:
    """Per-attribute thresholds (A,) chosen by `strategy`, one of THRESHOLD_STRATEGIES."""
    if strategy not in _STRATEGIES:
        raise UserError(f"unknown threshold strategy {strategy!r}; known: {', '.join(THRESHOLD_STRATEGIES)}")
    return np.asarray(_STRATEGIES[strategy](val_scores, val_labels, train_prior), dtype=np.float64)


def apply_policy(base: np.ndarray, smoothing: float, offset: float) -> np.ndarray:
    """Shrink calibrated thresholds toward 0.5 by `smoothing`, shift them by `offset`, keep them in (0, 1)."""
    t = (1.0 - smoothing) * np.asarray(base, dtype=np.float64) + smoothing * 0.5 + offset
    return np.clip(t, *_THRESHOLD_CLIP)
