"""Tagging corpora: a synthesised urban-sound-tagging corpus, and an importer of SONYC-UST.

Built-in corpus: clips at 16 kHz (config.data.seconds long), recorded by "sensors". Each
sensor has its own background (coloured noise with a traffic rumble and a mains-like hum at
its own levels), its own gain and its own chance of each class. A clip holds each of the 8
SONYC coarse classes with its sensor's chance; a present class places 1-4 events, drawn from
that class's family of synthesised sources (below), at a drawn level over the background;
the mix goes through an outdoor response (a direct path and a ground reflection) or a small
room (an exponentially decaying noise tail of a drawn RT60). Sensors are split between train
and test (as SONYC splits by sensor). Training labels get annotator-style noise (each simulated
annotator misses or adds classes; the label is their majority); test labels are the truth.

    engine                 drones: harmonics of a 25-90 Hz firing rate, slow rpm and amplitude modulation, rumble
    machinery-impact       hammering/jackhammer: trains of short metallic resonant bursts
    non-machinery-impact   thuds and slams: low resonant decaying bursts, one to a few
    powered-saw            sawtooth buzz at 100-300 Hz with load modulation, and its high noise band
    alert-signal           sirens (sweeps), two-tone horns, reverse-alarm beeps
    music                  data_prep.noise.synth_music (chords, melody, bass, drums)
    human-voice            espeak-ng speech (a bank of utterances synthesised once)
    dog                    barks: short harmonic bursts (f0 350-900 Hz, falling), formant-filtered

SONYC-UST importer: `annotations.csv` with one row per (clip, annotator): `split`,
`sensor_id`, `audio_filename`, `annotator_id` and the coarse columns
`<n>_<name>_presence` (n = 1..8, e.g. `1_engine_presence`); a class is present when at least
`agreement` of the clip's annotators marked it (rows of annotator 0, SONYC's verified labels,
win where a clip has them); audio found as <audio folder>/<audio_filename> or
<audio folder>/<split>/<audio_filename>.
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

from tsasr.recipes.tagging.config import CLASSES

RATE = 16000
SENTENCES = (
    "turn left at the next corner",
    "did you see where he parked the car",
    "we are going to be late again",
    "call me when you get home",
    "the bus leaves in five minutes",
    "hey wait for me",
    "can you hear that noise",
    "let's grab a coffee over there",
)


# ---------------------------------------------------------------- source families


def _envelope(n, attack, decay):
    t = np.arange(n) / RATE
    return np.minimum(t / max(attack, 1e-4), 1.0) * np.exp(-t / decay)


def _resonator(rng, n, freqs, decay):
    t = np.arange(n) / RATE
    out = np.zeros(n)
    for f in freqs:
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out * np.exp(-t / decay)


def engine(rng, seconds):
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = rng.uniform(25, 90) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    out = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 9))
    out *= 1 + 0.4 * np.sin(2 * np.pi * rng.uniform(4, 15) * t)  # cylinder/amplitude modulation
    rumble = np.convolve(rng.standard_normal(n), np.ones(40) / 40, mode="same")
    return out + 2.0 * rumble


def machinery_impact(rng, seconds):
    n = int(seconds * RATE)
    out = np.zeros(n)
    period = rng.uniform(0.05, 0.4)
    freqs = rng.uniform(800, 4000, 3)
    for start in np.arange(0, seconds, period):
        i = int((start + rng.uniform(0, 0.01)) * RATE)
        m = min(int(0.08 * RATE), n - i)
        if m > 0:
            burst = _resonator(rng, m, freqs, rng.uniform(0.01, 0.03)) + 0.5 * rng.standard_normal(m) * _envelope(
                m, 0.0005, 0.005
            )
            out[i : i + m] += burst
    return out


def non_machinery_impact(rng, seconds):
    n = int(seconds * RATE)
    m = min(n, int(rng.uniform(0.15, 0.4) * RATE))
    thud = _resonator(rng, m, rng.uniform(60, 300, 2), rng.uniform(0.04, 0.12))
    thud += 0.6 * np.convolve(rng.standard_normal(m), np.ones(8) / 8, "same") * _envelope(m, 0.001, 0.02)
    out = np.zeros(n)
    out[:m] = thud
    return out


def powered_saw(rng, seconds):
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = rng.uniform(100, 300) * (1 - 0.2 * (np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t) > 0.3))
    phase = np.cumsum(f0) / RATE
    saw = 2 * (phase % 1.0) - 1
    hiss = rng.standard_normal(n)
    hiss = hiss - np.convolve(hiss, np.ones(4) / 4, "same")  # high band
    return saw + 0.6 * hiss


def alert_signal(rng, seconds):
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    kind = rng.integers(3)
    if kind == 0:  # siren: a slow or fast sweep
        rate = rng.uniform(0.3, 4)
        f = 950 + 400 * np.sin(2 * np.pi * rate * t)
        return np.sin(2 * np.pi * np.cumsum(f) / RATE)
    if kind == 1:  # horn: two tones, square-ish
        f1 = rng.uniform(300, 500)
        s = np.sign(np.sin(2 * np.pi * f1 * t)) + np.sign(np.sin(2 * np.pi * f1 * 1.26 * t))
        return 0.5 * s * (t < rng.uniform(0.3, 1.0))
    beep = np.sin(2 * np.pi * rng.uniform(900, 2500) * t)  # reverse alarm
    return beep * ((t % 1.0) < 0.5)


def music(rng, seconds):
    from data_prep import noise  # scipy-free synthesis shared with the asr recipe's noise corpus

    audio, _ = noise.synth_music(seconds, rng)
    return audio.astype(np.float64)


def dog(rng, seconds):
    n = int(seconds * RATE)
    m = min(n, int(rng.uniform(0.1, 0.25) * RATE))
    t = np.arange(m) / RATE
    f0 = rng.uniform(350, 900) * (1.2 - 0.4 * t / t[-1])
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    bark = sum(np.sin(k * phase) / k**0.7 for k in range(1, 7)) + 0.3 * rng.standard_normal(m)
    bark *= _envelope(m, 0.005, 0.06)
    out = np.zeros(n)
    out[:m] = bark
    return out


def speech_bank(count: int, seed: int) -> list[np.ndarray]:
    """`count` espeak-ng utterances (sentence, voice, pitch and rate drawn from the seed)."""
    from tsasr.audio import tts

    rng = np.random.default_rng([seed, 7])
    synth = tts.synthesizer()
    bank = []
    for i in range(count):
        voice = tts.Voice(
            accent=tts.ACCENTS[int(rng.integers(len(tts.ACCENTS)))],
            variant=tts.VARIANTS[int(rng.integers(len(tts.VARIANTS)))],
            pitch=int(rng.integers(20, 80)),
            rate=int(rng.integers(140, 210)),
        )
        audio = synth.synthesize(SENTENCES[i % len(SENTENCES)], voice).audio.astype(np.float64)
        bank.append(audio / max(np.abs(audio).max(), 1e-6))
    return bank


# ---------------------------------------------------------------- clips


def _background(rng, sensor, n):
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum /= np.maximum(freqs, 20.0) ** (sensor["tilt"] / 2)  # 1/f^tilt power
    out = np.fft.irfft(spectrum, n)
    t = np.arange(n) / RATE
    out = out / (np.std(out) + 1e-9)
    out += sensor["hum"] * np.sin(2 * np.pi * sensor["hum_hz"] * t)
    return out


def _response(rng, outdoor_fraction, rt60_range):
    if rng.random() < outdoor_fraction:  # direct path and a ground reflection
        h = np.zeros(int(0.02 * RATE))
        h[0] = 1.0
        h[int(rng.uniform(0.002, 0.015) * RATE)] = rng.uniform(0.3, 0.7)
        return h
    rt60 = rng.uniform(*rt60_range)
    m = int(rt60 * RATE)
    tail = rng.standard_normal(m) * np.exp(-6.9 * np.arange(m) / m) * 0.1
    tail[0] = 1.0
    return tail / np.sqrt(np.sum(tail**2))


def _place(out, event, rng):
    n = out.size
    if event.size >= n:
        start = int(rng.integers(0, event.size - n + 1))
        out += event[start : start + n]
        return
    start = int(rng.integers(0, n - event.size + 1))
    out[start : start + event.size] += event


def _event(rng, c, seconds, speech):
    short = rng.uniform(0.3, 0.7) * seconds  # continuous sources last part of the clip
    if c == 0:
        return engine(rng, rng.uniform(0.5, 1.0) * seconds)
    if c == 1:
        return machinery_impact(rng, short)
    if c == 2:
        return non_machinery_impact(rng, seconds)[: int(0.5 * RATE)]
    if c == 3:
        return powered_saw(rng, short)
    if c == 4:
        return alert_signal(rng, short)
    if c == 5:
        return music(rng, rng.uniform(0.5, 1.0) * seconds)
    if c == 6:
        return speech[int(rng.integers(len(speech)))]
    return dog(rng, 0.3)


def make_clip(rng, sensor, present, cfg, speech) -> np.ndarray:
    n = int(cfg.seconds * RATE)
    background = _background(rng, sensor, n)
    mix = background.copy()
    level = np.std(background)
    for c in np.nonzero(present)[0]:
        for _ in range(int(rng.integers(cfg.events_per_class[0], cfg.events_per_class[1] + 1))):
            event = _event(rng, int(c), cfg.seconds, speech)
            event = event / (np.sqrt(np.mean(event[np.abs(event) > 1e-4] ** 2)) + 1e-9)
            placed = np.zeros(n)
            _place(placed, event, rng)
            mix += placed * level * 10 ** (rng.uniform(*cfg.event_snr_db) / 20)
    mix = np.convolve(mix, _response(rng, cfg.outdoor_fraction, cfg.rt60))[:n]
    mix *= sensor["gain"] / (np.max(np.abs(mix)) + 1e-9)
    return mix.astype(np.float32)


def make_sensors(rng, cfg) -> list[dict]:
    sensors = []
    for s in range(cfg.num_sensors):
        sensors.append(
            {
                "id": f"sensor{s:02d}",
                "split": "test" if s >= cfg.num_sensors - cfg.test_sensors else "train",
                "tilt": float(rng.uniform(0.5, 1.8)),
                "hum": float(rng.uniform(0.0, 0.5)),
                "hum_hz": float(rng.choice([50.0, 60.0, 120.0])),
                "gain": float(rng.uniform(0.2, 0.8)),
                "prior": rng.uniform(*cfg.class_prior, len(CLASSES)),
            }
        )
    return sensors


def annotate(rng, truth: np.ndarray, annotators: int, miss: float, false_alarm: float) -> np.ndarray:
    """Majority vote of `annotators` noisy copies of a multi-hot truth [classes] (ties count as present)."""
    votes = np.zeros(truth.shape)
    for _ in range(annotators):
        flip = np.where(truth > 0, rng.random(truth.shape) < miss, rng.random(truth.shape) < false_alarm)
        votes += np.where(flip, 1 - truth, truth)
    return (votes * 2 >= annotators).astype(np.float32)


def builtin(cfg, seed: int) -> list[dict]:
    """[{id, split, sensor, audio, labels, truth}] of the synthesised corpus (a function of cfg and seed)."""
    rng = np.random.default_rng([seed, 19])
    speech = speech_bank(cfg.speech_bank, seed)
    clips = []
    for sensor in make_sensors(rng, cfg):
        for k in range(cfg.clips_per_sensor):
            truth = (rng.random(len(CLASSES)) < sensor["prior"]).astype(np.float32)
            audio = make_clip(rng, sensor, truth, cfg, speech)
            labels = truth
            if sensor["split"] == "train" and cfg.annotators > 0:
                labels = annotate(rng, truth, cfg.annotators, cfg.label_miss, cfg.label_false_alarm)
            clips.append(
                {
                    "id": f"{sensor['id']}_{k:03d}",
                    "split": sensor["split"],
                    "sensor": sensor["id"],
                    "audio": audio,
                    "labels": labels,
                    "truth": truth,
                }
            )
    return clips


# ---------------------------------------------------------------- SONYC-UST


def coarse_columns() -> list[str]:
    return [f"{i + 1}_{name}_presence" for i, name in enumerate(CLASSES)]


def read_sonyc(directory, audio_folder: str = "audio", splits=None, agreement: float = 0.5) -> list[dict]:
    """[{id, split, sensor, audio (path), labels}] from a SONYC-UST directory (see the module docstring).

    Raises ValueError with one line naming the file and the problem on bad input.
    """
    from tsasr.audio import io

    directory = pathlib.Path(directory)
    splits = dict(splits or {"train": "train", "validate": "test"})
    path = directory / "annotations.csv"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (a SONYC-UST directory holds annotations.csv)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no annotation rows")
    needed = ["split", "sensor_id", "audio_filename", "annotator_id"] + coarse_columns()
    missing = [c for c in needed if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    clips: dict[str, dict] = {}
    for line, row in enumerate(rows, start=2):
        if row["split"] not in splits:
            continue
        try:
            votes = np.asarray([float(row[c]) for c in coarse_columns()])
            annotator = int(row["annotator_id"])
        except ValueError:
            raise ValueError(f"{path}: line {line}: presence and annotator_id must be numbers") from None
        if not np.all((votes == 0) | (votes == 1)):
            raise ValueError(f"{path}: line {line}: presence values must be 0 or 1")
        clip = clips.setdefault(
            row["audio_filename"],
            {"split": splits[row["split"]], "sensor": row["sensor_id"], "votes": [], "verified": []},
        )
        (clip["verified"] if annotator == 0 else clip["votes"]).append(votes)
    audio_dir = directory / audio_folder
    out = []
    for name in sorted(clips):
        clip = clips[name]
        votes = clip["verified"] or clip["votes"]
        labels = (np.mean(votes, axis=0) >= agreement).astype(np.float32)
        candidates = [audio_dir / name, audio_dir / clip["split"] / name]
        candidates += [audio_dir / s / name for s in splits]
        audio = next((p for p in candidates if p.is_file()), None)
        if audio is None:
            raise ValueError(f"{path}: audio {name!r} not found under {audio_dir}")
        try:
            io.audio_info(audio)
        except Exception as err:  # noqa: BLE001  (soundfile raises its own error types)
            raise ValueError(f"{audio}: unreadable audio ({err})") from None
        out.append(
            {
                "id": pathlib.Path(name).stem,
                "split": clip["split"],
                "sensor": clip["sensor"],
                "audio": str(audio),
                "labels": labels,
                "truth": labels,
            }
        )
    if not out:
        raise ValueError(f"{path}: no clip in the splits {sorted(splits)}")
    return out
