"""LFBE in JAX against kaldi-native-fbank, and global mean/variance normalisation."""

import jax
import jax.numpy as jnp
import kaldi_native_fbank as knf
import numpy as np
import pytest

from tsasr.audio import lfbe

SAMPLE_RATE = 16000
# Max absolute difference in natural-log energy. Both compute in float32 but with
# different FFTs and summation orders; the largest gaps are in the lowest-energy bins.
# Measured: ~1.4e-3 on these signals.
TOLERANCE = 5e-3


def chirp_plus_noise(seconds, seed):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    chirp = 0.3 * np.sin(2 * np.pi * (100 * t + 1500 * t**2))
    return (chirp + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def kaldi_fbank(audio):
    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.frame_opts.samp_freq = SAMPLE_RATE
    options.frame_opts.snip_edges = True
    options.frame_opts.window_type = "povey"
    options.frame_opts.preemph_coeff = 0.97
    options.frame_opts.remove_dc_offset = True
    options.mel_opts.num_bins = 64
    options.use_power = True
    options.use_log_fbank = True
    fbank = knf.OnlineFbank(options)
    fbank.accept_waveform(SAMPLE_RATE, audio.tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


def test_matches_kaldi_native_fbank_on_a_padded_batch():
    signals = [chirp_plus_noise(1.37, 0), chirp_plus_noise(0.61, 1)]
    length = max(s.size for s in signals) + 500
    audio = np.zeros((2, length), np.float32)
    paddings = np.ones((2, length), np.float32)
    for row, signal in enumerate(signals):
        audio[row, : signal.size] = signal
        paddings[row, : signal.size] = 0.0
    features, feature_paddings = jax.jit(lfbe.lfbe)(audio, paddings)
    assert features.shape == (2, lfbe.num_frames(length), 64)
    for row, signal in enumerate(signals):
        reference = kaldi_fbank(signal)
        frames = reference.shape[0]
        np.testing.assert_array_equal(np.asarray(feature_paddings[row]), np.arange(features.shape[1]) >= frames)
        np.testing.assert_allclose(features[row, :frames], reference, rtol=0, atol=TOLERANCE)
        assert np.all(np.asarray(features[row, frames:]) == 0.0)


def test_framing_equals_naive_indexing():
    audio = np.random.default_rng(0).standard_normal((3, 2345)).astype(np.float32)
    frames = np.asarray(lfbe.frame_signal(jnp.asarray(audio)))
    count = lfbe.num_frames(2345)
    naive = np.stack([audio[:, 160 * t : 160 * t + 400] for t in range(count)], axis=1)
    np.testing.assert_array_equal(frames, naive)


def test_short_audio_has_no_frames():
    assert lfbe.num_frames(399) == 0 and lfbe.num_frames(400) == 1


def test_mean_var_stats_match_numpy_and_skip_pads():
    rng = np.random.default_rng(0)
    features = rng.normal(3.0, 2.0, (4, 50, 64)).astype(np.float32)
    paddings = np.zeros((4, 50), np.float32)
    paddings[1, 30:] = 1.0
    features[1, 30:] = 1e6  # Garbage on pads must not enter the statistics.
    stats = lfbe.MeanVarStats(64)
    for row in range(4):  # Accumulated utterance by utterance, like over a dataset.
        stats.add(features[row], paddings[row])
    mean, std = stats.finalize()
    real = features[paddings < 0.5].astype(np.float64)
    np.testing.assert_allclose(mean, real.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, real.std(0), rtol=1e-5)
    normalized = np.asarray(lfbe.normalize(features, paddings, mean, std))
    assert np.all(normalized[1, 30:] == 0.0)
    np.testing.assert_allclose(normalized[paddings < 0.5].mean(0), 0.0, atol=1e-4)


def test_mean_var_stats_reject_nan():
    features = np.zeros((5, 64), np.float32)
    features[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        lfbe.MeanVarStats(64).add(features)
