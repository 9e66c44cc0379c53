"""The paired bootstrap interval of a relative WER change (tsasr.decode.scoring), against the WER
of each resampled test set scored one by one, and against kaldialign's own paired bootstrap."""

import numpy as np

from tsasr.decode import scoring


def _test_set(seed=0, utterances=12, b_substitutes=0.2):
    """References and two systems' hypotheses: a substitutes 35 % of the words and drops some
    last words, b substitutes `b_substitutes` of them."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{i}" for i in range(30)]
    refs, a, b = {}, {}, {}
    for i in range(utterances):
        ref = list(rng.choice(vocabulary, rng.integers(3, 9)))
        refs[f"u{i:02d}"] = ref
        a[f"u{i:02d}"] = [w if rng.random() > 0.35 else "x" for w in ref][: len(ref) - int(rng.random() < 0.3)]
        b[f"u{i:02d}"] = [w if rng.random() > b_substitutes else "x" for w in ref]
    return refs, a, b


def test_interval_is_the_percentiles_of_each_resampled_sets_wer_change():
    refs, a, b = _test_set()
    replications, seed = 300, 7
    got = scoring.relative_change_interval(refs, a, b, replications=replications, seed=seed, chunk=128)
    # The same draws (the function's rng, in its chunks), each resampled set scored by scoring.wer.
    rng, utts, changes = np.random.default_rng(seed), sorted(refs), []
    for start in range(0, replications, 128):
        for draw in rng.integers(0, len(utts), (min(128, replications - start), len(utts))):
            sample = {f"{k}:{utts[i]}": refs[utts[i]] for k, i in enumerate(draw)}
            wer_a = scoring.wer(sample, {f"{k}:{utts[i]}": a[utts[i]] for k, i in enumerate(draw)})["wer"]
            wer_b = scoring.wer(sample, {f"{k}:{utts[i]}": b[utts[i]] for k, i in enumerate(draw)})["wer"]
            changes.append(100.0 * (wer_b / wer_a - 1.0))
    np.testing.assert_allclose(got, np.percentile(changes, [2.5, 97.5]), rtol=1e-9)
    point = 100.0 * (scoring.wer(refs, b)["wer"] / scoring.wer(refs, a)["wer"] - 1.0)
    assert got[0] < point < got[1]


def test_interval_agrees_with_kaldialigns_probability_and_narrows_with_the_test_set():
    """kaldialign's paired bootstrap (its own draws) says whether b improves on a: a clear
    improvement has an interval below 0, a doubtful one an interval around 0."""
    refs, a, b = _test_set(seed=1, utterances=40)
    compared = scoring.compare(refs, a, b, replications=4000)
    assert compared["p_b_better"] > 0.99 and compared["relative_ci95"][1] < 0
    refs, a, b = _test_set(seed=1, utterances=40, b_substitutes=0.38)
    compared = scoring.compare(refs, a, b, replications=4000)
    assert 0.05 < compared["p_b_better"] < 0.95 and compared["relative_ci95"][0] < 0 < compared["relative_ci95"][1]
    # Four times the utterances (each repeated under new ids): about half the width.
    big = lambda d: {f"{k}{u}": v for k in "pqrs" for u, v in d.items()}  # noqa: E731
    wide = scoring.relative_change_interval(refs, a, b, replications=4000)
    narrow = scoring.relative_change_interval(big(refs), big(a), big(b), replications=4000)
    assert 0.4 < (narrow[1] - narrow[0]) / (wide[1] - wide[0]) < 0.6


def test_no_interval_when_the_reference_system_makes_no_error():
    refs, _, b = _test_set()
    assert scoring.relative_change_interval(refs, refs, b, replications=50) is None


def test_over_seeds_each_draw_pools_the_drawn_seeds_on_the_drawn_utterances():
    """seeded_relative_changes against each draw scored one by one with scoring.wer: the drawn
    seeds' hypotheses of the drawn utterances pooled into one test set per system."""
    runs = [_test_set(seed=0, b_substitutes=s) for s in (0.1, 0.3, 0.5)]  # the same refs; a and b per seed
    refs, utts = runs[0][0], sorted(runs[0][0])
    assert all(r[0] == refs for r in runs)
    errors = [np.stack([scoring.utterance_errors(refs, run[k], utts) for run in runs]) for k in (1, 2)]
    replications, seed = 200, 3
    got = scoring.seeded_relative_changes(*errors, replications=replications, seed=seed, chunk=64)
    rng, expected = np.random.default_rng(seed), []
    for start in range(0, replications, 64):
        draws = rng.integers(0, len(utts), (min(64, replications - start), len(utts)))
        rows = rng.integers(0, len(runs), (len(draws), len(runs)))
        for draw, seeds in zip(draws, rows):
            keys = [(j, s, utts[i]) for j, s in enumerate(seeds) for i in draw]
            pooled_refs = {f"{j}:{n}:{u}": refs[u] for n, (j, s, u) in enumerate(keys)}
            wer_a, wer_b = (
                scoring.wer(pooled_refs, {f"{j}:{n}:{u}": runs[s][k][u] for n, (j, s, u) in enumerate(keys)})["wer"]
                for k in (1, 2)
            )
            expected.append(100.0 * (wer_b / wer_a - 1.0))
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # One seed: exactly relative_changes' draws.
    one = scoring.seeded_relative_changes(errors[0][:1], errors[1][:1], replications=300, seed=7, chunk=128)
    np.testing.assert_array_equal(
        one, scoring.relative_changes(refs, runs[0][1], runs[0][2], replications=300, seed=7, chunk=128)
    )
