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
    errors = np.stack([utterance_errors(ref, hyp, utts) for hyp in (hyp_a, hyp_b)])
    if not utts or errors[0].sum() == 0:
        return None
    rng = np.random.default_rng(seed)
    changes = []
    for start in range(0, replications, chunk):
        draws = rng.integers(0, len(utts), (min(chunk, replications - start), len(utts)))
        a, b = errors[0][draws].sum(axis=1), errors[1][draws].sum(axis=1)
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
