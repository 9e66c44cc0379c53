"""Stage 2: a classifier of stage-1 detections on features of their wake-word alignment.

Stage 1 runs at a loose threshold θ1 (chosen on dev: the dev positives' `first_stage_frr`
quantile of best scores); each alarm (debounced) is a detection. Its alignment is the best
wake-word path ending at the score's peak within `peak_frames` after the alarm (the stage-2
decision waits that long: its extra latency). Features (Wu et al.'s, per subword unit and whole
word): for each of the wake word's 8 phones its duration (frames), its mean gain (log posterior
ratio of its states against the background) and its mean state log posterior; for the whole
word its duration, the stage-1 score, the score per frame, the smallest phone gain, the longest
phone's share of the duration and the mean best-background log posterior over the word.
The classifier is a logistic regression (standardised features, balanced classes), trained on
the detections of the dev split (clean and noisy): positives are detections inside a wake
word's window, negatives those on negative streams. Never the test split.
"""

from __future__ import annotations

import numpy as np

from tsasr.recipes.wakeword import det as det_lib
from tsasr.recipes.wakeword import detector

PHONES = 8


def alignment_features(lp, g, back, scores, end: int, keyword, states_per_phone: int) -> np.ndarray:
    segments = detector.backtrack(back, end)
    kw_lp = lp[:, list(keyword)]
    bg = kw_lp - g  # best background log posterior per frame (the same for every state)
    rows = []
    start_word, stop_word = segments[0][0], segments[-1][1]
    phone_gains, phone_durations = [], []
    for p in range(PHONES):
        states = range(p * states_per_phone, (p + 1) * states_per_phone)
        frames = [(t, j) for j in states for t in range(*segments[j])]
        duration = len(frames)
        gain = float(np.mean([g[t, j] for t, j in frames])) if frames else 0.0
        post = float(np.mean([kw_lp[t, j] for t, j in frames])) if frames else 0.0
        rows += [duration, gain, post]
        phone_gains.append(gain)
        phone_durations.append(duration)
    duration = stop_word - start_word
    rows += [
        duration,
        float(scores[end]),
        float(scores[end]) / max(duration, 1),
        min(phone_gains),
        max(phone_durations) / max(duration, 1),
        float(np.mean(bg[start_word:stop_word, 0])),
    ]
    return np.asarray(rows, np.float64)


def detections(scored, threshold: float, debounce: int, peak_frames: int):
    """[(id, alarm frame, peak frame)] of stage 1 at `threshold` on {id: (scores, back, gains)}."""
    out = []
    for key, (s, _, _) in scored.items():
        for a in det_lib.alarm_frames(s, threshold, debounce):
            peak = a + int(np.argmax(s[a : a + peak_frames]))
            out.append((key, a, peak))
    return out


def candidate_features(scored, posteriors, cands, keyword, states_per_phone) -> np.ndarray:
    rows = [
        alignment_features(posteriors[k], scored[k][2], scored[k][1], scored[k][0], peak, keyword, states_per_phone)
        for k, _, peak in cands
    ]
    return np.stack(rows) if rows else np.zeros((0, 3 * PHONES + 6))


def fit(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    mean, std = x.mean(0), np.maximum(x.std(0), 1e-6)
    classifier = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    classifier.fit((x - mean) / std, y)
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "coef": classifier.coef_[0].tolist(),
        "intercept": float(classifier.intercept_[0]),
    }


def predict(model: dict, x: np.ndarray) -> np.ndarray:
    """Log-odds that each detection is the wake word."""
    z = (x - np.asarray(model["mean"])) / np.asarray(model["std"])
    return z @ np.asarray(model["coef"]) + model["intercept"]
