"""Feature normalisation of the asr recipe's models (acoustic.normalisation / normalise)."""

import numpy as np
import soundfile

from tsasr.recipes.asr import acoustic


def _features(tmp_path, audios):
    records = []
    for name, audio in audios.items():
        path = tmp_path / f"{name}.wav"
        soundfile.write(path, audio, 16000, subtype="FLOAT")
        records.append({"id": name, "audio": str(path), "duration": audio.size / 16000})
    return acoustic.compute_features(records)


def test_utterance_mean_makes_a_model_deaf_to_the_recording_level(tmp_path):
    """A quieter recording shifts every log mel energy by the same constant: with the
    utterance's mean removed (Kaldi's CMN) the model sees the same input, without it a
    20 dB quieter copy is ~4.6 nats away in every bin."""
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    speechlike = (
        np.sin(2 * np.pi * 220 * t * (1 + 0.3 * t)) * (1 + np.sin(2 * np.pi * 3 * t))
        + 0.5 * rng.standard_normal(t.size)
    ) * 0.3
    feats = _features(tmp_path, {"loud": speechlike.astype(np.float32), "quiet": (speechlike * 0.1).astype(np.float32)})
    with_cmn = acoustic.normalisation(feats, utterance_mean=True)
    without = acoustic.normalisation(feats, utterance_mean=False)
    assert with_cmn["utterance_mean"] and not without["utterance_mean"]
    a, b = (acoustic.normalise(feats, with_cmn)[k] for k in ("loud", "quiet"))
    np.testing.assert_allclose(a, b, atol=2e-3)
    # the raw features differ by 20 dB = ln(100) nats of energy in every bin
    np.testing.assert_allclose(feats["loud"] - feats["quiet"], np.log(100.0), atol=2e-3)
    a, b = (acoustic.normalise(feats, without)[k] for k in ("loud", "quiet"))
    assert np.abs(a - b).mean() > 1.0


def test_normalisation_stats_against_float64_numpy(tmp_path):
    rng = np.random.default_rng(1)
    feats = {f"u{i}": rng.standard_normal((50 + 10 * i, 64)).astype(np.float32) * 3 + i for i in range(4)}
    norm = acoustic.normalisation(feats, utterance_mean=True)
    centred = np.concatenate([f.astype(np.float64) - f.astype(np.float64).mean(0) for f in feats.values()])
    np.testing.assert_allclose(norm["mean"], centred.mean(0), atol=1e-5)
    np.testing.assert_allclose(norm["std"], centred.std(0), rtol=1e-5)
    out = acoustic.normalise(feats, norm)
    for k, f in feats.items():
        ref = (f.astype(np.float64) - f.mean(0) - centred.mean(0)) / centred.std(0)
        np.testing.assert_allclose(out[k], ref, atol=1e-4)


def test_a_model_saved_before_utterance_mean_existed_is_normalised_as_it_was_trained():
    feats = {"u": np.arange(12, dtype=np.float32).reshape(3, 4)}
    old = {"mean": [1.0] * 4, "std": [2.0] * 4}  # a norm.json written before the field
    np.testing.assert_array_equal(acoustic.normalise(feats, old)["u"], (feats["u"] - 1.0) / 2.0)
