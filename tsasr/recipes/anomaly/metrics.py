"""AUC and pAUC with scikit-learn's semantics, per machine ID and per type, with bootstrap intervals.

`auc(labels, scores)` is sklearn.metrics.roc_auc_score(labels, scores); `pauc(labels, scores,
max_fpr)` is roc_auc_score(labels, scores, max_fpr=max_fpr): the area under the ROC curve up to
FPR = max_fpr (the curve linearly interpolated at max_fpr), McClish-standardised to
0.5 (1 + (A - max_fpr^2 / 2) / (max_fpr - max_fpr^2 / 2)). Labels: 1 = anomaly (positive),
higher score = more anomalous. Tied scores make one ROC point (a diagonal step), as sklearn.
"""

from __future__ import annotations

import numpy as np


def roc(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        raise ValueError(f"ROC needs both classes; got {positives} anomalous and {negatives} normal clips")
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # the last index of each tied group
    tps = np.cumsum(labels)[last]
    fps = (last + 1) - tps
    return np.r_[0.0, fps / negatives], np.r_[0.0, tps / positives]


def auc(labels, scores) -> float:
    fpr, tpr = roc(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def pauc(labels, scores, max_fpr: float = 0.1) -> float:
    """sklearn's roc_auc_score(labels, scores, max_fpr=max_fpr) (McClish-standardised)."""
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1]; got {max_fpr}")
    fpr, tpr = roc(labels, scores)
    if max_fpr == 1:
        return float(np.trapezoid(tpr, fpr))
    stop = np.searchsorted(fpr, max_fpr, "right")
    x_interp = [fpr[stop - 1], fpr[stop]]
    y_interp = [tpr[stop - 1], tpr[stop]]
    tpr_part = np.append(tpr[:stop], np.interp(max_fpr, x_interp, y_interp))
    fpr_part = np.append(fpr[:stop], max_fpr)
    area = np.trapezoid(tpr_part, fpr_part)
    min_area, max_area = 0.5 * max_fpr**2, max_fpr
    return float(0.5 * (1 + (area - min_area) / (max_area - min_area)))


def per_type(clips: dict, max_fpr: float = 0.1, replications: int = 1000, seed: int = 0) -> dict:
    """AUC and pAUC (in %) of one machine type: per ID, then the mean over IDs; 95 % intervals
    from a bootstrap over test clips, resampled within each (ID, normal/anomaly) cell so every
    replicate keeps both classes of every ID.

    clips: {machine_id: (labels [n], scores [n])}.
    Returns {'auc', 'pauc', 'auc_ci', 'pauc_ci', 'per_id': {id: {'auc', 'pauc'}}, 'auc_boot', 'pauc_boot'}.
    """
    rng = np.random.default_rng(seed)
    per_id, boot_auc, boot_pauc = {}, np.zeros(replications), np.zeros(replications)
    for machine_id in sorted(clips):
        labels, scores = (np.asarray(a) for a in clips[machine_id])
        per_id[machine_id] = {"auc": 100 * auc(labels, scores), "pauc": 100 * pauc(labels, scores, max_fpr)}
        cells = [np.flatnonzero(labels == c) for c in (0, 1)]
        for r in range(replications):
            pick = np.concatenate([cell[rng.integers(0, cell.size, cell.size)] for cell in cells])
            boot_auc[r] += 100 * auc(labels[pick], scores[pick])
            boot_pauc[r] += 100 * pauc(labels[pick], scores[pick], max_fpr)
    count = len(per_id)
    boot_auc, boot_pauc = boot_auc / count, boot_pauc / count
    interval = lambda x: [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]
    return {
        "auc": float(np.mean([v["auc"] for v in per_id.values()])),
        "pauc": float(np.mean([v["pauc"] for v in per_id.values()])),
        "auc_ci": interval(boot_auc),
        "pauc_ci": interval(boot_pauc),
        "per_id": per_id,
        "auc_boot": boot_auc,  # the replicates, for intervals of means over types
        "pauc_boot": boot_pauc,
    }
