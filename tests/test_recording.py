"""The built-in corpus as a recording (data_prep/recording.py): a room, a level, a noise floor."""

import numpy as np

from data_prep import recording, rir
from tsasr.recipes.asr import base_config

RATE = 16000


def _cfg():
    return base_config().corpus.recording.to_dict()


def _burst(seconds=2.0, until=0.6, seed=1):
    """White noise for `until` seconds, then silence: speech-like energy with a clean end."""
    dry = np.zeros(int(seconds * RATE))
    dry[: int(until * RATE)] = np.random.default_rng(seed).standard_normal(int(until * RATE)) * 0.1
    return dry


def test_same_utterance_same_recording_whatever_the_order():
    cfg = _cfg()
    a = recording.draw(recording.utterance_rng(0, "spk001-test-000003"), cfg)
    recording.draw(recording.utterance_rng(0, "spk002-test-000000"), cfg)  # another utterance in between
    b = recording.draw(recording.utterance_rng(0, "spk001-test-000003"), cfg)
    c = recording.draw(recording.utterance_rng(1, "spk001-test-000003"), cfg)
    assert a == b and a != c
    dry = _burst()
    np.testing.assert_array_equal(recording.render(a, dry), recording.render(b, dry))


def test_recording_is_the_rooms_response_advanced_scaled_and_over_a_noise_floor():
    """Against a float64 direct convolution with the room's response: without the noise floor
    (self-noise far below float32 resolution) the recording is the reverberant speech,
    advanced by the response's peak, at the drawn RMS level."""
    cfg = _cfg()
    recipe = recording.draw(recording.utterance_rng(0, "spk007-train_labelled-000001"), cfg)
    recipe["self_noise_db"] = 200.0
    dry = _burst()
    response = rir.impulse_responses(recipe["room"], recipe["max_order"])[0]
    peak = int(np.argmax(np.abs(response)))
    expected = np.convolve(dry, response)[peak : peak + dry.size]
    expected *= 10 ** (recipe["level_db"] / 20) / np.sqrt(np.mean(expected**2))
    got = recording.render(recipe, dry)
    assert got.dtype == np.float32 and got.shape == dry.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)
    rms_db = 10 * np.log10(np.mean(got.astype(np.float64) ** 2))
    assert abs(rms_db - recipe["level_db"]) < 0.01
    # reverberant: energy continues after the dry signal stops (the room's tail)
    end = int(0.6 * RATE)
    assert np.mean(got[end : end + 1600] ** 2) > 1e-4 * np.mean(got[:end] ** 2)


def test_timings_of_the_dry_speech_hold_in_the_recording():
    """A click at a known sample is loudest at that sample after recording (the TTS phoneme
    timings, which the alignment is checked against, stay valid)."""
    cfg = _cfg()
    for n in range(5):
        recipe = recording.draw(recording.utterance_rng(0, f"utt{n}"), cfg)
        recipe["self_noise_db"] = 200.0
        dry = np.zeros(RATE)
        dry[4000] = 1.0
        assert int(np.argmax(np.abs(recording.render(recipe, dry)))) == 4000


def test_noise_floor_at_the_drawn_ratio():
    """After the speech and the room's tail have died away, what is left is the microphone's
    self-noise, `self_noise_db` below the recording's speech power."""
    cfg = _cfg()
    recipe = recording.draw(recording.utterance_rng(0, "spk003-dev-000002"), cfg)
    recipe["room"]["rt60"] = 0.2
    dry = _burst(seconds=3.0, until=1.0)
    got = recording.render(recipe, dry).astype(np.float64)
    clean = recipe | {"self_noise_db": 200.0}
    speech_power = np.mean(recording.render(clean, dry).astype(np.float64) ** 2)
    floor_db = 10 * np.log10(np.mean(got[2 * RATE :] ** 2) / speech_power)
    assert abs(floor_db + recipe["self_noise_db"]) < 0.5, floor_db


def test_levels_and_rooms_vary_across_utterances():
    """What a dry corpus lacks: one level and one (absent) room for every utterance."""
    cfg = _cfg()
    recipes = [recording.draw(recording.utterance_rng(0, f"u{n}"), cfg) for n in range(200)]
    levels = np.array([r["level_db"] for r in recipes])
    rt60s = np.array([r["room"]["rt60"] for r in recipes])
    assert levels.min() >= cfg["level_db"][0] and levels.max() <= cfg["level_db"][1]
    assert levels.std() > 4.0 and rt60s.std() > 0.05
    assert len({r["room"]["tail_seed"] for r in recipes}) == len(recipes)


def test_a_loud_recording_is_scaled_below_clipping():
    recipe = recording.draw(recording.utterance_rng(0, "x"), _cfg())
    recipe["level_db"] = 0.0
    got = recording.render(recipe, _burst())
    assert np.max(np.abs(got)) <= recording.CLIP + 1e-6
