"""Word error rate with kaldialign, and bootstrap confidence intervals between systems."""

from __future__ import annotations

from typing import Mapping, Sequence

import kaldialign
import numpy as np


def wer(refs: Mapping[str, Sequence[str]], hyps: Mapping[str, Sequence[str]]) -> dict:
    """Corpus WER in percent over the utterances of `refs` (a missing hypothesis counts
    as empty), with insertion, deletion and substitution counts."""
    totals = {"ins": 0, "del": 0, "sub": 0, "ref_len": 0}
    for utt, ref in refs.items():
        result = kaldialign.edit_distance(list(ref), list(hyps.get(utt, [])))
        for key in totals:
            totals[key] += result[key]
    errors = totals["ins"] + totals["del"] + totals["sub"]
    return {
        "wer": 100.0 * errors / max(totals["ref_len"], 1),
        "errors": errors,
        "words": totals["ref_len"],
        "utterances": len(refs),
        "ins": totals["ins"],
        "del": totals["del"],
        "sub": totals["sub"],
    }


def compare(
    ref: Mapping[str, Sequence[str]],
    hyp_a: Mapping[str, Sequence[str]],
    hyp_b: Mapping[str, Sequence[str]],
    replications: int = 10000,
    seed: int = 0,
) -> dict:
    """Bootstrap (Bisani & Ney) 95 % intervals of both systems' WER and the probability
    that system b improves on system a, over the utterances of `ref`. WERs in percent."""
    utts = sorted(ref)
    result = kaldialign.bootstrap_wer_ci(
        [list(ref[u]) for u in utts],
        [list(hyp_a.get(u, [])) for u in utts],
        [list(hyp_b.get(u, [])) for u in utts],
        replications=replications,
        seed=seed,
    )

    def percent(system):
        return {k: 100.0 * v for k, v in system.items()}

    return {
        "a": percent(result["system1"]),
        "b": percent(result["system2"]),
        "p_b_better": result["p_s2_improv_over_s1"],
        "relative_ci95": relative_change_interval(ref, hyp_a, hyp_b, replications=replications, seed=seed),
    }


def utterance_errors(ref: Mapping[str, Sequence[str]], hyp: Mapping[str, Sequence[str]], utts) -> np.ndarray:
    """[len(utts)] float64 word errors (insertions + deletions + substitutions) of each utterance
    (a missing hypothesis counts as empty)."""
    return np.array([kaldialign.edit_distance(list(ref[u]), list(hyp.get(u, [])))["total"] for u in utts], np.float64)


def relative_changes(
    ref: Mapping[str, Sequence[str]],
    hyp_a: Mapping[str, Sequence[str]],
    hyp_b: Mapping[str, Sequence[str]],
    replications: int = 10000,
    seed: int = 0,
    chunk: int = 1000,
) -> np.ndarray | None:
    """The paired bootstrap of the relative change of system b's WER against system a's,
    100 * (WER_b / WER_a - 1) in percent (the papers' "relative WER change"): one value per draw
    of the utterances with replacement, both systems scored on the same draw (a draw where a
    makes no error has no ratio and is left out). None when system a makes no error at all.
    Memory: `chunk` draws at a time, whatever the test set."""
    utts = sorted(ref)
    errors = [utterance_errors(ref, hyp, utts)[None] for hyp in (hyp_a, hyp_b)]
    return seeded_relative_changes(*errors, replications=replications, seed=seed, chunk=chunk)


def seeded_relative_changes(
    errors_a: np.ndarray, errors_b: np.ndarray, replications: int = 10000, seed: int = 0, chunk: int = 1000
) -> np.ndarray | None:
    """relative_changes over training seeds as well as utterances: errors_a, errors_b are
    [seeds, utterances] word errors of two systems (row s: both trained at seed s, the same
    utterances in the same order). Each draw takes the utterances with replacement and, with
    more than one seed, the seeds with replacement; a system's WER on a draw pools its errors
    over the drawn seeds and utterances (the reference words, the same for both, cancel in the
    ratio). With one seed the draws are relative_changes' exactly. None when a makes no error."""
    errors_a, errors_b = (np.asarray(e, np.float64) for e in (errors_a, errors_b))
    if errors_a.shape != errors_b.shape or errors_a.ndim != 2:
        raise ValueError(
            f"errors of both systems must be [seeds, utterances] alike: {errors_a.shape}, {errors_b.shape}"
        )
    seeds, utts = errors_a.shape
    if not utts or errors_a.sum() == 0:
        return None
    rng = np.random.default_rng(seed)
    changes = []
    for start in range(0, replications, chunk):
        draws = rng.integers(0, utts, (min(chunk, replications - start), utts))
        if seeds == 1:
            a, b = errors_a[0][draws].sum(axis=1), errors_b[0][draws].sum(axis=1)
        else:
            rows = rng.integers(0, seeds, (len(draws), seeds))[:, :, None]
            a, b = (e[rows, draws[:, None, :]].sum(axis=(1, 2)) for e in (errors_a, errors_b))
        changes.append(100.0 * (b[a > 0] / a[a > 0] - 1.0))
    return np.concatenate(changes)


def relative_change_interval(ref, hyp_a, hyp_b, **bootstrap) -> list[float] | None:
    """Paired bootstrap 95 % interval [low, high] of the relative WER change of b against a
    (relative_changes, with its `replications`, `seed`, `chunk`), or None when system a makes no
    error (the change is undefined)."""
    changes = relative_changes(ref, hyp_a, hyp_b, **bootstrap)
    if changes is None:
        return None
    low, high = np.percentile(changes, [2.5, 97.5])
    return [float(low), float(high)]


def interval(
    ref: Mapping[str, Sequence[str]], hyp: Mapping[str, Sequence[str]], replications: int = 10000, seed: int = 0
) -> dict:
    """Bootstrap (Bisani & Ney) 95 % interval of one system's WER over the utterances of
    `ref`: {'wer', 'ci95min', 'ci95max', ...} in percent."""
    utts = sorted(ref)
    result = kaldialign.bootstrap_wer_ci(
        [list(ref[u]) for u in utts], [list(hyp.get(u, [])) for u in utts], replications=replications, seed=seed
    )
    return {k: 100.0 * v for k, v in result.items()}
