"""Machine sounds in the DCASE 2020 Task 2 layout: the built-in generator and the layout reader.

Layout (the development set's, which this reader also reads from the real data):

    <root>/<type>/train/normal_id_XX_NNNNNNNN.wav        normal clips only
    <root>/<type>/test/normal_id_XX_NNNNNNNN.wav
    <root>/<type>/test/anomaly_id_XX_NNNNNNNN.wav        16 kHz mono

The built-in set (`generate`) gives every machine ID its own signature: a harmonic series on
its own fundamental with its own spectral envelope, its own structural resonances excited by
broadband noise, its own modulation (rotation AM, speed wobble) and, for cyclic machines, its
own event rhythm (valve clicks, slider strokes, conveyor ticks). It is recorded in its own
simulated room (pyroomacoustics image sources, a fixed shoebox per ID) and mixed into
factory-like background noise (pink noise, hums of other machines, distant impacts) at a
per-clip SNR. Normal clips vary (speed, level, SNR, background); anomalous clips add one fault
of a kind that machine type plausibly has: bearing clicks, detuning (a shifted fundamental or
resonance), rattle, imbalance (rotation-rate modulation and a subharmonic), an intermittent
fault (a segment with a missing or extra event, or a dropout), or a changed spectral tilt.
Fault levels are drawn so that many anomalies sit near the normal variability.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pyroomacoustics as pra

from tsasr import workdir as wd
from tsasr.audio import io

RATE = 16000
TYPES = ("fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor")
NAME = re.compile(r"^(normal|anomaly)_id_(\d+)_(\d+)\.wav$")
UNLABELLED = re.compile(r"^id_(\d+)_(\d+)\.wav$")  # the evaluation set's test clips

# Per type: fundamental range (Hz), harmonics, broadband share, AM rate range (Hz), event
# rhythm (events per second, 0 = continuous machine), and the fault kinds it gets.
TEMPLATES = {
    "fan": dict(
        f0=(90, 260),
        harmonics=6,
        broadband=0.8,
        am=(10, 25),
        events=0.0,
        faults=("imbalance", "bearing", "tilt", "rattle"),
    ),
    "pump": dict(
        f0=(45, 120),
        harmonics=10,
        broadband=0.5,
        am=(2, 8),
        events=0.0,
        faults=("bearing", "detuning", "intermittent", "tilt"),
    ),
    "slider": dict(
        f0=(250, 700),
        harmonics=5,
        broadband=0.7,
        am=(0.5, 1.5),
        events=1.5,
        faults=("rattle", "intermittent", "bearing", "detuning"),
    ),
    "valve": dict(
        f0=(60, 150),
        harmonics=3,
        broadband=0.2,
        am=(0.5, 1.0),
        events=3.0,
        faults=("intermittent", "detuning", "rattle"),
    ),
    "ToyCar": dict(
        f0=(150, 400),
        harmonics=12,
        broadband=0.4,
        am=(3, 9),
        events=0.0,
        faults=("bearing", "detuning", "imbalance", "rattle"),
    ),
    "ToyConveyor": dict(
        f0=(50, 110),
        harmonics=8,
        broadband=0.6,
        am=(1, 3),
        events=5.0,
        faults=("rattle", "intermittent", "bearing", "tilt"),
    ),
}


def file_name(label: str, machine_id: int, index: int) -> str:
    return f"{label}_id_{machine_id:02d}_{index:08d}.wav"


# ---------------------------------------------------------------------------------- reading


def read_layout(root, types=TYPES) -> list[dict]:
    """Every clip of `types` under `root`: {type, split, machine_id, label (0 normal, 1 anomaly,
    -1 unlabelled), name, path}, sorted. Raises ValueError, one line naming the file or the
    directory, on a missing type or split, a file name outside the layout, or an anomaly
    among the training clips."""
    root = pathlib.Path(root)
    clips = []
    for machine_type in types:
        for split in ("train", "test"):
            folder = root / machine_type / split
            if not folder.is_dir():
                raise ValueError(f"{folder}: missing (expected <type>/{{train,test}}/ of the DCASE 2020 Task 2 layout)")
            wavs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav")
            if not wavs:
                raise ValueError(f"{folder}: no .wav files")
            for path in wavs:
                match = NAME.match(path.name)
                if match:
                    label, machine_id = int(match.group(1) == "anomaly"), int(match.group(2))
                elif split == "test" and (match := UNLABELLED.match(path.name)):
                    label, machine_id = -1, int(match.group(1))
                else:
                    raise ValueError(f"{path}: name is not (normal|anomaly)_id_XX_NNNNNNNN.wav")
                if split == "train" and label != 0:
                    raise ValueError(
                        f"{path}: an anomalous clip among the training clips (train/ holds normal clips only)"
                    )
                clips.append(
                    {
                        "type": machine_type,
                        "split": split,
                        "machine_id": machine_id,
                        "label": label,
                        "name": path.name,
                        "path": str(path),
                    }
                )
    return clips


def read_clip(path) -> np.ndarray:
    """Mono float32 16 kHz samples (other rates resampled); one-line errors name the file."""
    try:
        return io.read_audio(path)
    except io.AudioError as err:
        raise ValueError(str(err)) from None


# ---------------------------------------------------------------------------------- synthesis


def _shaped_noise(rng, n, centres, widths, gains, tilt_db_per_octave=0.0, floor=0.05):
    """White noise shaped in the frequency domain: Lorentzian resonances over a floor, with a tilt."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    shape = np.full(freqs.shape, floor)
    for centre, width, gain in zip(centres, widths, gains):
        shape += gain / (1 + ((freqs - centre) / width) ** 2)
    if tilt_db_per_octave:
        shape *= 10 ** (tilt_db_per_octave * np.log2(np.maximum(freqs, 50) / 1000) / 20)
    out = np.fft.irfft(spectrum * shape, n)
    return out / (np.std(out) + 1e-12)


def _pink(rng, n):
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    out = np.fft.irfft(spectrum / np.sqrt(np.maximum(freqs, 20)), n)
    return out / np.std(out)


def _decaying(rng, n, freq, decay_s):
    """A struck resonance: a decaying sinusoid with a little noise, n samples."""
    t = np.arange(n) / RATE
    return np.exp(-t / decay_s) * (
        np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) + 0.3 * rng.standard_normal(n)
    )


def _add_events(signal, rng, times, freq, decay_s, amplitude):
    length = int(6 * decay_s * RATE)
    for time in times:
        start = int(time * RATE)
        if 0 <= start < signal.size:
            burst = _decaying(rng, length, freq * rng.uniform(0.97, 1.03), decay_s)[: signal.size - start]
            signal[start : start + burst.size] += amplitude * burst


def machine_signature(seed: int, machine_type: str, machine_id: int) -> dict:
    """The parameters that make one machine ID sound like itself (and its room)."""
    rng = np.random.default_rng([seed, TYPES.index(machine_type), machine_id, 7])
    tpl = TEMPLATES[machine_type]
    h = tpl["harmonics"]
    dims = [rng.uniform(5, 10), rng.uniform(4, 8), rng.uniform(3, 5)]
    return {
        "f0": rng.uniform(*tpl["f0"]),
        "harmonic_gains": np.exp(-np.arange(h) * rng.uniform(0.1, 0.5)) * rng.uniform(0.3, 1.0, h),
        "resonances": rng.uniform(300, 6000, 3),
        "resonance_widths": rng.uniform(40, 300, 3),
        "resonance_gains": rng.uniform(0.3, 1.0, 3),
        "tilt": rng.uniform(-4, 0),
        "broadband": tpl["broadband"] * rng.uniform(0.6, 1.4),
        "am_rate": rng.uniform(*tpl["am"]),
        "am_depth": rng.uniform(0.05, 0.3),
        "wobble": rng.uniform(0.002, 0.01),
        "event_rate": tpl["events"] * rng.uniform(0.7, 1.3),
        "event_pattern": np.sort(rng.uniform(0, 1, 1 + int(rng.integers(0, 3)))),
        "event_freq": rng.uniform(800, 4000),
        "event_decay": rng.uniform(0.005, 0.03),
        "room": {
            "dims": dims,
            "rt60": rng.uniform(0.25, 0.7),
            "source": [dims[0] * rng.uniform(0.2, 0.4), dims[1] * rng.uniform(0.3, 0.7), rng.uniform(0.5, 1.5)],
            "mic": [dims[0] * rng.uniform(0.5, 0.7), dims[1] * rng.uniform(0.3, 0.7), rng.uniform(1.0, 2.0)],
        },
    }


def room_response(room: dict) -> np.ndarray:
    absorption, max_order = pra.inverse_sabine(room["rt60"], room["dims"])
    shoebox = pra.ShoeBox(room["dims"], fs=RATE, materials=pra.Material(absorption), max_order=min(max_order, 12))
    shoebox.add_source(room["source"])
    shoebox.add_microphone(room["mic"])
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], np.float64)
    return rir / np.max(np.abs(rir))


def _machine(rng, sig, n, machine_type, fault, strength):
    """The machine's own sound (before the room), with `fault` (or None) applied."""
    t = np.arange(n) / RATE
    f0 = sig["f0"] * rng.uniform(0.985, 1.015)  # normal speed variation between clips
    gains = sig["harmonic_gains"] * 10 ** (rng.normal(0, 1.0, sig["harmonic_gains"].size) / 20)
    resonances = np.array(sig["resonances"])
    tilt = sig["tilt"]
    am_depth = sig["am_depth"]
    event_times = None
    if fault == "detuning":
        shift = rng.choice([-1, 1]) * rng.uniform(0.02, 0.06) * strength
        f0 *= 1 + shift
        resonances = resonances * (1 + shift)
    if fault == "tilt":
        tilt += rng.choice([-1, 1]) * rng.uniform(1.5, 3.5) * strength
    phase = 2 * np.pi * np.cumsum(f0 * (1 + sig["wobble"] * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t))) / RATE
    tonal = sum(g * np.sin((k + 1) * phase + rng.uniform(0, 2 * np.pi)) for k, g in enumerate(gains))
    tonal = tonal / (np.std(tonal) + 1e-12)
    broadband = _shaped_noise(rng, n, resonances, sig["resonance_widths"], sig["resonance_gains"], tilt)
    signal = tonal + sig["broadband"] * broadband
    modulation = 1 + am_depth * np.sin(2 * np.pi * sig["am_rate"] * t + rng.uniform(0, 2 * np.pi))
    if fault == "imbalance":
        rotation = f0 / rng.choice([2.0, 3.0, 4.0])
        modulation = modulation + rng.uniform(0.15, 0.35) * strength * np.sin(2 * np.pi * rotation * t)
        signal = signal + rng.uniform(0.1, 0.3) * strength * np.sin(phase / 2)
    signal = signal * modulation
    if sig["event_rate"] > 0:
        period = 1 / sig["event_rate"] * rng.uniform(0.97, 1.03)
        cycles = np.arange(-1, n / RATE / period + 1) * period + rng.uniform(0, period)
        event_times = (cycles[:, None] + period * 0.8 * sig["event_pattern"][None, :]).reshape(-1)
        if machine_type == "slider":  # strokes: the motor runs during a stroke, friction noise at its ends
            gate = np.zeros(n)
            for start in cycles:
                a, b = int(start * RATE), int((start + period * 0.6) * RATE)
                gate[max(a, 0) : max(min(b, n), 0)] = 1.0
            signal = signal * (0.25 + 0.75 * np.convolve(gate, np.hanning(801) / 400.5, "same"))
        if fault == "intermittent" and event_times.size > 2:
            keep = np.ones(event_times.size, bool)
            keep[rng.integers(0, event_times.size)] = False  # a missing event
            event_times = np.r_[event_times[keep], rng.uniform(0, n / RATE)]  # and a stray one
        _add_events(signal, rng, event_times, sig["event_freq"], sig["event_decay"], 2.0)
    elif fault == "intermittent":  # a dropout / surge of the machine for a fraction of a second
        a = int(rng.uniform(0, n / RATE - 0.5) * RATE)
        b = a + int(rng.uniform(0.2, 0.5) * RATE)
        signal[a:b] *= 1 + rng.choice([-1, 1]) * rng.uniform(0.3, 0.6) * strength
    level = np.std(signal)
    if fault == "bearing":
        rate = rng.uniform(6, 20)
        times = np.cumsum(rng.exponential(1 / rate, int(rate * n / RATE * 2) + 1))
        _add_events(
            signal,
            rng,
            times[times < n / RATE],
            rng.uniform(2500, 6500),
            0.002,
            level * rng.uniform(0.6, 1.5) * strength,
        )
    if fault == "rattle":
        a = int(rng.uniform(0, n / RATE * 0.5) * RATE)
        b = min(n, a + int(rng.uniform(0.4, 1.0) * n))
        envelope = np.zeros(n)
        envelope[a:b] = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * rng.uniform(12, 30) * t[a:b]))
        rattle = _shaped_noise(rng, n, [rng.uniform(1500, 5000)], [800], [1.0])
        signal = signal + level * rng.uniform(0.15, 0.35) * strength * envelope * rattle
    return signal


def _background(rng, n):
    """Factory noise: pink noise, hums of other machines, distant impacts."""
    t = np.arange(n) / RATE
    noise = _pink(rng, n)
    for _ in range(int(rng.integers(1, 4))):
        f = rng.uniform(40, 400)
        noise += rng.uniform(0.1, 0.5) * sum(np.sin(2 * np.pi * k * f * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3))
    impacts = rng.uniform(0, n / RATE, rng.poisson(0.7 * n / RATE))
    _add_events(noise, rng, impacts, rng.uniform(200, 3000), rng.uniform(0.01, 0.05), rng.uniform(1, 4))
    return noise / np.std(noise)


def synthesize(
    seed: int,
    machine_type: str,
    machine_id: int,
    split: str,
    index: int,
    fault: str | None,
    seconds: float,
    strength: float,
    snr_db: tuple,
    rir: np.ndarray,
) -> np.ndarray:
    """One clip, float32 in [-1, 1]; a pure function of its arguments."""
    code = {"train": 0, "test": 1}[split]
    rng = np.random.default_rng([seed, TYPES.index(machine_type), machine_id, code, index])
    n = int(seconds * RATE)
    sig = machine_signature(seed, machine_type, machine_id)
    dry = _machine(rng, sig, n, machine_type, fault, strength)
    wet = np.convolve(dry, rir)[:n]
    wet /= np.std(wet) + 1e-12
    snr = rng.uniform(*snr_db)
    mix = wet + 10 ** (-snr / 20) * _background(rng, n)
    mix *= 0.05 * 10 ** (rng.normal(0, 1.0) / 20) / np.std(mix)  # level: -26 dBFS, +-1 dB between clips
    return np.clip(mix, -1, 1).astype(np.float32)


def generate(
    root, seed: int, types, ids, train_clips: int, test_clips: int, seconds: float, strength: float, snr_db
) -> dict:
    """Writes the built-in set under `root` in the DCASE layout; returns the clip counts.
    `test_clips` normal and `test_clips` anomalous clips per ID; a clip already written (a
    resumed stage) is kept, since it is a pure function of its name and the config."""
    root = pathlib.Path(root)
    counts = {}
    for machine_type in types:
        if machine_type not in TEMPLATES:
            raise ValueError(f"data.types: unknown machine type {machine_type!r} (known: {', '.join(TEMPLATES)})")
        faults = TEMPLATES[machine_type]["faults"]
        for machine_id in ids:
            rir = room_response(machine_signature(seed, machine_type, machine_id)["room"])
            plan = [("train", "normal", i, None) for i in range(train_clips)]
            plan += [("test", "normal", i, None) for i in range(test_clips)]
            plan += [("test", "anomaly", test_clips + i, faults[i % len(faults)]) for i in range(test_clips)]
            for split, label, index, fault in plan:
                path = root / machine_type / split / file_name(label, machine_id, index)
                if not path.exists():
                    audio = synthesize(
                        seed, machine_type, machine_id, split, index, fault, seconds, strength, tuple(snr_db), rir
                    )
                    wd.write_audio(path, audio, RATE)
            counts[machine_type] = counts.get(machine_type, 0) + len(plan)
    return counts
