"""Tagging metrics: DCASE 2019 Task 5 micro- and macro-AUPRC, sklearn's average precision, bootstrap intervals.

micro-AUPRC as the task's evaluation (sonyc-ust `metrics.py`, coarse mode) computes it:

1. thresholds = the unique predicted probabilities >= min_threshold (0.01), over all classes;
2. at each threshold t, a prediction is positive when p >= t; TP, FP and FN are pooled over
   every clip and class; P = TP / max(TP + FP, 0.5), R = TP / max(TP + FN, 0.5);
3. the curve is (R, P) over the thresholds in ascending order, with (1, 0) prepended and
   (0, 1) appended, and its area is the trapezoid rule over recall (sklearn.metrics.auc).

macro-AUPRC: the same curve per class (each class's own thresholds), averaged over classes.
This is not sklearn's `average_precision_score(..., average='micro')` (a step-wise sum over
every score, no 0.01 floor, no end points), which is reported beside it as `sklearn_micro_ap`.
"""

from __future__ import annotations

import numpy as np


def _curve(scores: np.ndarray, truth: np.ndarray, min_threshold: float):
    """(recalls, precisions) of the pooled threshold sweep over flat scores/truth."""
    scores = np.asarray(scores, np.float64).ravel()
    truth = np.asarray(truth).ravel().astype(bool)
    positives = truth.sum()
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], truth[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    # The last index of each group of equal scores (descending): counts at threshold = that score.
    last = np.r_[np.nonzero(s[1:] != s[:-1])[0], s.size - 1]
    keep = s[last] >= min_threshold
    tp, fp = tp[last][keep][::-1], fp[last][keep][::-1]  # thresholds ascending
    fn = positives - tp
    precision = tp / np.maximum(tp + fp, 0.5)
    recall = tp / np.maximum(tp + fn, 0.5)
    return np.r_[1.0, recall, 0.0], np.r_[0.0, precision, 1.0]


def _area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x) for monotonic x (either direction), as sklearn.metrics.auc."""
    return float(abs(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0)))


def micro_auprc(scores, truth, min_threshold: float = 0.01) -> float:
    """DCASE 2019 Task 5 micro-AUPRC of scores [clips, classes] (probabilities) against truth (0/1)."""
    return _area(*_curve(scores, truth, min_threshold))


def macro_auprc(scores, truth, min_threshold: float = 0.01) -> float:
    """The same curve per class, its area averaged over classes."""
    scores, truth = np.asarray(scores), np.asarray(truth)
    return float(np.mean([_area(*_curve(scores[:, c], truth[:, c], min_threshold)) for c in range(scores.shape[1])]))


def sklearn_micro_ap(scores, truth) -> float:
    """sklearn's micro-averaged average precision (a different number from micro_auprc)."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(np.asarray(truth), np.asarray(scores), average="micro"))


METRICS = {
    "micro_auprc": micro_auprc,
    "macro_auprc": macro_auprc,
}


def score_all(scores, truth, min_threshold: float = 0.01) -> dict:
    return {
        "micro_auprc": micro_auprc(scores, truth, min_threshold),
        "macro_auprc": macro_auprc(scores, truth, min_threshold),
        "sklearn_micro_ap": sklearn_micro_ap(scores, truth),
    }


def bootstrap_draws(num_clips: int, replications: int, seed: int) -> np.ndarray:
    """[replications, clips] clip indices drawn with replacement; shared by every system, so
    intervals of differences between systems are paired."""
    return np.random.default_rng([seed, 95]).integers(0, num_clips, (replications, num_clips))


def bootstrap(fn, scores, truth, draws: np.ndarray) -> np.ndarray:
    """fn(scores[d], truth[d]) for each row d of draws."""
    scores, truth = np.asarray(scores), np.asarray(truth)
    return np.asarray([fn(scores[d], truth[d]) for d in draws])


def interval(values: np.ndarray) -> list[float]:
    """The 95 % percentile interval [2.5 %, 97.5 %]."""
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
