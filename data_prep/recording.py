"""Far-field recording of the built-in corpus's synthetic voices: a room, a level, a microphone.

espeak-ng writes every utterance dry, at one level, with no noise floor: cleaner than any
recording. A network trained on that never meets a room or another level, and a single
reverberant room or a quieter recording is already a new condition to it (measured on the
main job's CE teacher: a dry-trained teacher goes from 8 % WER on its clean test to 63 % on
the same audio in one simulated room, with no noise). Real "clean" corpora, such as the
far-field speech the paper's teacher was trained on, are recordings: a talker at some
distance from a microphone in a room, at whatever level the device captured, over the
microphone's own noise. This module makes the built-in corpus such a recording, before
any split sees it: every split (the labelled, unlabelled, dev and test "clean" speech) is
recorded the same way, and the noisy and re-recorded conditions are made from it exactly as
from any user's recordings.

Per utterance, drawn from the corpus seed and the utterance id (so a worker count never
changes a byte): a shoebox room (data_prep.rir, the simulation noisify uses) with the
talker at `talker_distance` from the microphone, the level of the recording (RMS, dBFS),
and the microphone's self-noise relative to the speech. The recipe is stored in the
manifest (`recording`), and `render` reproduces the audio from it.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from data_prep import rir

CLIP = 0.95  # peak after scaling; louder recordings are scaled down to it (16-bit PCM)


def utterance_rng(seed: int, utt_id: str) -> np.random.Generator:
    """The generator of one utterance's recording, independent of the order of synthesis."""
    return np.random.default_rng([seed, 0x5EC0, *utt_id.encode()])


def draw(rng: np.random.Generator, cfg) -> dict:
    """Everything random about one recording; `cfg` is config.corpus.recording (a mapping)."""
    return {
        "room": rir.draw_room(rng, cfg["rooms"], 0),
        "max_order": int(cfg["max_order"]),
        "level_db": round(rir.uniform(rng, cfg["level_db"]), 3),
        "self_noise_db": round(rir.uniform(rng, cfg["self_noise_db"]), 3),
        "noise_seed": int(rng.integers(2**31)),
    }


def render(recipe: dict, dry: np.ndarray) -> np.ndarray:
    """The recording of `dry` (float, 16 kHz) under `recipe`: same length, advanced by the
    response's peak as noisify advances its mixes (so the TTS timings stay the timings),
    scaled to the drawn level, plus white self-noise at the drawn speech-to-noise ratio."""
    response = rir.impulse_responses(recipe["room"], recipe["max_order"])[0]
    delay = int(np.argmax(np.abs(response)))
    wet = signal.fftconvolve(np.asarray(dry, np.float64), response)[delay : delay + dry.size]
    wet *= 10 ** (recipe["level_db"] / 20) / (np.sqrt(np.mean(wet**2)) + 1e-12)
    floor = np.random.default_rng(recipe["noise_seed"]).standard_normal(dry.size)
    wet += floor * np.sqrt(np.mean(wet**2) * 10 ** (-recipe["self_noise_db"] / 10))
    peak = np.max(np.abs(wet))
    if peak > CLIP:
        wet *= CLIP / peak
    return wet.astype(np.float32)
