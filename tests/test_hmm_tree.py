"""The senone tree recovers Gaussian clusters planted in triphone statistics."""

import json

import numpy as np

from tsasr.hmm import phones as phone_set
from tsasr.hmm import tree as tree_lib


def _phone_names():
    return {i + 1: p for i, p in enumerate(phone_set.PHONES)}


def test_tree_recovers_planted_clusters():
    rng = np.random.default_rng(0)
    names = _phone_names()
    ids = {n: i for i, n in names.items()}
    vowels = sorted(ids[p] for p in phone_set.VOWELS)
    consonants = sorted(ids[p] for p in phone_set.ARPABET if p not in phone_set.VOWELS)
    # Centre AA state 1: the mean depends only on whether the LEFT phone is a vowel; all
    # other roots have one cluster. The tree must find exactly that question.
    centre = ids["AA"]
    items = []
    for left in vowels + consonants:
        for right in (ids["S"], ids["T"], ids["IY"]):
            mean = np.full(5, 3.0 if left in vowels else -3.0)
            x = rng.normal(mean, 1.0, size=(60, 5))
            items.append((np.tile([left, centre, right, 1], (60, 1)), x))
            y = rng.normal(0.0, 1.0, size=(60, 5))
            items.append((np.tile([left, ids["K"], right, 0], (60, 1)), y))
    stats = tree_lib.accumulate_stats(items)
    num_roots = sum(3 if p not in phone_set.SILENCE_PHONES else 5 for p in phone_set.PHONES)
    tree, means, variances = tree_lib.build_tree(
        stats, names, phone_set.tree_questions(), num_leaves=num_roots + 5, min_count=100, min_gain=50.0
    )
    assert tree.num_pdfs == num_roots + 1  # one split, on the planted question only
    node = tree.roots[(centre, 1)]
    # "vowel" and its complement "consonant" make the same partition of this data.
    assert node["position"] == "left" and node["question"] in ("vowel", "consonant")
    vowel_senone = tree.pdf((ids["IY"], centre, ids["S"]), 1)
    consonant_senone = tree.pdf((ids["T"], centre, ids["S"]), 1)
    assert vowel_senone != consonant_senone
    np.testing.assert_allclose(means[vowel_senone], 3.0, atol=0.1)
    np.testing.assert_allclose(means[consonant_senone], -3.0, atol=0.1)
    np.testing.assert_allclose(variances[vowel_senone], 1.0, atol=0.15)
    # The right context and the K root carry no signal: no split there.
    assert "senone" in tree.roots[(ids["K"], 0)]
    # JSON round trip keeps every mapping.
    again = tree_lib.SenoneTree.from_json(tree.to_json())
    assert json.loads(again.to_json()) == json.loads(tree.to_json())
    for left in vowels[:3] + consonants[:3]:
        assert again.pdf((left, centre, ids["T"]), 1) == tree.pdf((left, centre, ids["T"]), 1)


def test_gaussian_log_likelihood_matches_direct_sum():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 0.5, size=(500, 3))
    mean, var = x.mean(0), x.var(0)
    direct = (-0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)).sum()
    got = tree_lib.gaussian_log_likelihood(np.float64(len(x)), x.sum(0), (x * x).sum(0))
    np.testing.assert_allclose(got, direct, rtol=1e-9)
