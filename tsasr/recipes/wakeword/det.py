"""Wake-word metrics as the field reports them: DET curves of false rejections against false
alarms per hour, with a debounce after each alarm.

- A positive (an utterance holding the wake word) is falsely rejected at threshold θ when its
  best score inside its wake-word window stays below θ: FRR(θ) = misses / positives.
- False alarms are counted on negative streams (audio without the wake word): scanning frames
  in order, an alarm fires at the first frame whose score is >= θ, and no further alarm can fire
  for the next `debounce` frames (the alarm's own frame included).
  FA/h(θ) = alarms / hours of negative audio.
- The DET curve is {(FA/h(θ), FRR(θ))} over every threshold that changes FRR (each positive's
  best score) and +inf; its lower envelope FRR_min(f) = min{FRR(θ) : FA/h(θ) <= f}.
- `frr_at_fa`: FRR_min(target FA/h); `fa_per_hour_at_frr`: min{FA/h(θ) : FRR(θ) <= target} (NaN if unreachable);
  `det_area`: the area under FRR_min over FA/h in [0, fa_max], divided by fa_max, i.e. the mean
  FRR (%) over that range (a step function, integrated exactly).
- Bootstrap intervals resample positives and negative streams (each with replacement).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def count_alarms(scores: np.ndarray, thresholds: np.ndarray, debounce: int) -> np.ndarray:
    """Alarms on one stream for each threshold: [thresholds] int. `scores` [frames]."""
    scores = np.asarray(scores, np.float64)
    thresholds = np.asarray(thresholds, np.float64)
    counts = np.zeros(thresholds.size, np.int64)
    if scores.size == 0 or thresholds.size == 0:
        return counts
    next_allowed = np.zeros(thresholds.size, np.int64)  # first frame an alarm may fire at
    for t in np.flatnonzero(scores >= thresholds.min()):
        fire = (scores[t] >= thresholds) & (t >= next_allowed)
        counts += fire
        next_allowed = np.where(fire, t + debounce, next_allowed)
    return counts


def alarm_frames(scores: np.ndarray, threshold: float, debounce: int) -> list[int]:
    """The frames alarms fire at on one stream for one threshold (the same rule as count_alarms)."""
    frames, next_allowed = [], 0
    for t in np.flatnonzero(np.asarray(scores) >= threshold):
        if t >= next_allowed:
            frames.append(int(t))
            next_allowed = t + debounce
    return frames


def thresholds_for(positive_best: np.ndarray) -> np.ndarray:
    """Every threshold at which FRR changes (each positive's best score), and +inf, ascending."""
    values = np.unique(np.asarray(positive_best, np.float64))
    return np.concatenate([values[np.isfinite(values)], [np.inf]])


@dataclasses.dataclass
class Det:
    """A DET curve: FRR (fraction) and FA/h per threshold, and the data to resample it."""

    thresholds: np.ndarray  # [K] ascending
    frr: np.ndarray  # [K]
    fa_per_hour: np.ndarray  # [K]
    detected: np.ndarray  # [positives, K] bool: positive p detected at threshold k
    alarms: np.ndarray  # [streams, K] int: alarms on negative stream s at threshold k
    hours: np.ndarray  # [streams] duration of each negative stream


def det_curve(positive_best, negative_alarms, negative_hours, thresholds) -> Det:
    """positive_best [P]: each positive's best score; negative_alarms [S, K]: alarms per stream at
    each of `thresholds` [K]; negative_hours [S]."""
    positive_best = np.asarray(positive_best, np.float64)
    thresholds = np.asarray(thresholds, np.float64)
    detected = positive_best[:, None] >= thresholds[None, :]
    alarms = np.asarray(negative_alarms, np.int64).reshape(-1, thresholds.size)
    hours = np.asarray(negative_hours, np.float64)
    return _curve(thresholds, detected, alarms, hours)


def _curve(thresholds, detected, alarms, hours) -> Det:
    frr = 1.0 - detected.mean(0) if detected.shape[0] else np.zeros(thresholds.size)
    fa = alarms.sum(0) / max(hours.sum(), 1e-12)
    return Det(thresholds, frr, fa, detected, alarms, hours)


def frr_at_fa(det: Det, target_fa_per_hour: float) -> float:
    """The lowest FRR (%) among thresholds whose FA/h <= target (100 if none)."""
    ok = det.fa_per_hour <= target_fa_per_hour + 1e-9
    return 100.0 * float(det.frr[ok].min()) if ok.any() else 100.0


def fa_per_hour_at_frr(det: Det, target_frr_percent: float) -> float:
    """The lowest FA/h among thresholds whose FRR (%) <= target; NaN when no threshold reaches
    the target (a second stage whose first stage already rejects more)."""
    ok = 100.0 * det.frr <= target_frr_percent + 1e-9
    return float(det.fa_per_hour[ok].min()) if ok.any() else float("nan")


def det_area(det: Det, fa_max: float) -> float:
    """Mean FRR (%) of the DET lower envelope over FA/h in [0, fa_max] (exact, step function)."""
    order = np.argsort(det.fa_per_hour, kind="stable")
    fa, frr = det.fa_per_hour[order], det.frr[order]
    envelope = np.minimum.accumulate(frr)  # best FRR reachable at FA/h <= fa[i]
    edges = np.concatenate([[0.0], np.clip(fa, 0.0, fa_max), [fa_max]])
    # On [edges[i], edges[i+1]) the envelope is that of the points up to i-1 (100 % before any).
    levels = np.concatenate([[1.0], envelope])
    widths = np.diff(edges)
    return 100.0 * float(np.sum(levels * widths) / fa_max)


METRICS = ("frr_at_fa", "fa_per_hour_at_frr", "det_area")


def summary(det: Det, target_fa: float, target_frr: float, fa_max: float) -> dict[str, float]:
    return {
        "frr_at_fa": frr_at_fa(det, target_fa),
        "fa_per_hour_at_frr": fa_per_hour_at_frr(det, target_frr),
        "det_area": det_area(det, fa_max),
    }


def bootstrap(det: Det, target_fa, target_frr, fa_max, replications: int, seed: int) -> dict[str, list[float]]:
    """95 % intervals of each metric, resampling positives and negative streams."""
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in METRICS}
    positives, streams = det.detected.shape[0], det.alarms.shape[0]
    for _ in range(replications):
        p = rng.integers(0, positives, positives) if positives else np.zeros(0, int)
        s = rng.integers(0, streams, streams) if streams else np.zeros(0, int)
        resampled = _curve(det.thresholds, det.detected[p], det.alarms[s], det.hours[s])
        for name, value in summary(resampled, target_fa, target_frr, fa_max).items():
            draws[name].append(value)
    out = {}
    for m, v in draws.items():
        v = np.asarray(v)[np.isfinite(v)]
        out[m] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v.size else [float("nan")] * 2
    return out
