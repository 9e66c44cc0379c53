"""The noise corpus stage: built-in media-like noise, or a user's MUSAN-layout directory.

The paper mixed in mostly media playback, so the built-in corpus synthesises
- `music`: chord progressions with melody, bass and drums, in several timbres, tempi and keys;
- `tv`: broadcast talk (news, sport, adverts) read by espeak voices that never speak in the
  speech corpus, over a music bed;
- `stationary`: pink, brown, mains hum and fan noise.
Train and test noise are disjoint clips drawn from disjoint seeds, and test TV talk uses
voices that train TV talk does not. A MUSAN directory (music/, noise/, speech/) is split
80/20 into train/test by a hash of each file's path.

Output: WORKDIR/noise/{train,test}.jsonl with `id`, `audio`, `duration`, `kind`, `subtype`.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import pathlib

import numpy as np
from scipy import signal

from data_prep import sentences
from tsasr import parallel, pipeline
from tsasr import workdir as wd
from tsasr.audio import io as audio_io
from tsasr.audio import tts
from tsasr.data import manifest

RATE = 16000
NOISE_SPLITS = ("train", "test")
# espeak voice variants for TV talk; none of them is in tts.VARIANTS (the speech corpus).
TV_VARIANTS = {
    "train": ("klatt", "klatt2", "klatt3", "Gene", "Mr serious", "announcer", "Michael", "Mike", "Storm", "Lee"),
    "test": ("klatt4", "Diogo", "Henrique", "Hugo", "Jacky", "Marco", "Mario", "Reed", "Nguyen"),
}
TIMBRES = ("additive", "square", "fm_bell", "pluck", "organ")
log = logging.getLogger(__name__)


def _midi_hz(note):
    return 440.0 * 2.0 ** ((np.asarray(note, float) - 69) / 12)


def _tone(freq: float, seconds: float, timbre: str, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    if timbre == "additive":
        x = sum(np.sin(2 * np.pi * freq * k * t) / k**1.5 for k in range(1, 6))
        env = np.exp(-3 * t / seconds)
    elif timbre == "square":
        x = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 12, 2))
        env = np.minimum(1, t / 0.01) * np.exp(-1.5 * t / seconds)
    elif timbre == "fm_bell":
        x = np.sin(2 * np.pi * freq * t + 2.5 * np.exp(-4 * t) * np.sin(2 * np.pi * 1.4 * freq * t))
        env = np.exp(-5 * t / seconds)
    elif timbre == "pluck":
        # Karplus-Strong string: a noise burst through a damped comb filter.
        period = max(2, int(RATE / freq))
        burst = np.zeros(n)
        burst[:period] = rng.uniform(-1, 1, min(period, n))
        a = np.zeros(period + 2)
        a[0], a[period], a[period + 1] = 1.0, -0.498, -0.498
        x = signal.lfilter([1.0], a, burst)
        env = np.ones(n)
    else:  # organ
        x = sum(np.sin(2 * np.pi * freq * k * t) * w for k, w in ((0.5, 0.5), (1, 1), (2, 0.6), (3, 0.3), (4, 0.2)))
        env = np.minimum(1, t / 0.03) * np.minimum(1, (seconds - t) / 0.03)
    return (x * env).astype(np.float32)


def _drums(beats: int, beat_s: float, rng) -> np.ndarray:
    out = np.zeros(int(beats * beat_s * RATE) + RATE, np.float32)
    t = np.arange(int(0.25 * RATE)) / RATE
    kick = np.sin(2 * np.pi * (50 + 60 * np.exp(-20 * t)) * t) * np.exp(-12 * t)
    snare_noise = signal.sosfilt(
        signal.butter(2, [1000, 5000], "bandpass", fs=RATE, output="sos"), rng.normal(size=t.size)
    )
    snare = (0.6 * snare_noise + 0.4 * np.sin(2 * np.pi * 180 * t)) * np.exp(-18 * t)
    hat = signal.sosfilt(signal.butter(2, 7000, "highpass", fs=RATE, output="sos"), rng.normal(size=t.size)) * np.exp(
        -60 * t
    )
    pattern = rng.integers(3)
    for b in range(beats):
        start = int(b * beat_s * RATE)
        hit = kick if (b % 2 == 0 or (pattern == 1 and b % 4 == 3)) else snare
        out[start : start + t.size] += 0.8 * hit
        for half in (0, 1):
            s = start + int(half * beat_s / 2 * RATE)
            out[s : s + t.size] += 0.25 * hat
    return out


def synth_music(seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A loop of four chords with melody, bass and (usually) drums."""
    tempo = rng.uniform(70, 150)
    beat = 60.0 / tempo
    root = int(rng.integers(45, 57))
    minor = rng.random() < 0.5
    scale = np.array([0, 2, 3, 5, 7, 8, 10] if minor else [0, 2, 4, 5, 7, 9, 11])
    progression = [[0, 4, 5, 3], [0, 5, 3, 4], [5, 3, 0, 4], [0, 3, 4, 4]][int(rng.integers(4))]
    timbre = TIMBRES[int(rng.integers(len(TIMBRES)))]
    n = int(seconds * RATE)
    out = np.zeros(n + 4 * RATE, np.float32)
    beats = int(seconds / beat) + 1
    for b in range(0, beats, 4):
        degree = progression[(b // 4) % 4]
        chord = [root + 12 + scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]
        start = int(b * beat * RATE)
        for note in chord:
            tone = _tone(float(_midi_hz(note)), 4 * beat, timbre, rng)
            out[start : start + tone.size] += 0.25 * tone
        bass = _tone(float(_midi_hz(root - 12 + scale[degree])), 4 * beat, "additive", rng)
        out[start : start + bass.size] += 0.4 * bass
        for k in range(4):
            note = root + 24 + scale[int(rng.integers(7))]
            tone = _tone(float(_midi_hz(note)), beat, timbre, rng)
            s = start + int(k * beat * RATE)
            out[s : s + tone.size] += 0.3 * tone
    drums = rng.random() < 0.8
    if drums:
        d = _drums(beats, beat, rng)
        out[: min(out.size, d.size)] += d[: out.size]
    return out[:n], f"{timbre}_{'minor' if minor else 'major'}_{int(tempo)}bpm{'_drums' if drums else ''}"


def synth_stationary(seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    n = int(seconds * RATE)
    kind = ("pink", "brown", "hum", "fan")[int(rng.integers(4))]
    white = rng.normal(size=n)
    if kind in ("pink", "brown"):
        spectrum = np.fft.rfft(white)
        f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
        spectrum /= f ** (0.5 if kind == "pink" else 1.0)
        x = np.fft.irfft(spectrum, n)
    elif kind == "hum":
        mains = 50.0 if rng.random() < 0.5 else 60.0
        t = np.arange(n) / RATE
        x = sum(
            rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 9)
        )
        x = x + 0.05 * white
        kind = f"hum{int(mains)}"
    else:
        t = np.arange(n) / RATE
        body = signal.sosfilt(signal.butter(3, rng.uniform(300, 1200), "lowpass", fs=RATE, output="sos"), white)
        blade = rng.uniform(20, 60)
        x = body * (1 + 0.3 * np.sin(2 * np.pi * blade * t)) + 0.3 * np.std(body) * np.sin(2 * np.pi * 2 * blade * t)
    return x.astype(np.float32), kind


def synth_tv(seconds: float, rng: np.random.Generator, variants: tuple[str, ...], seed: int) -> tuple[np.ndarray, str]:
    """Broadcast talk by 1-2 voices with pauses, over a quiet music bed."""
    synth = tts.synthesizer()
    voices = [
        tts.Voice(
            tts.ACCENTS[int(rng.integers(len(tts.ACCENTS)))],
            variants[int(rng.integers(len(variants)))],
            int(rng.integers(30, 70)),
            int(rng.integers(150, 200)),
        )
        for _ in range(2)
    ]
    texts = sentences.broadcast_sentences(64, seed)
    n = int(seconds * RATE)
    talk = np.zeros(n, np.float32)
    pos, i = int(rng.uniform(0, 0.5) * RATE), 0
    while pos < n:
        audio = synth.synthesize(texts[i % len(texts)], voices[i % 2 if rng.random() < 0.5 else 0]).audio
        talk[pos : pos + audio.size] += audio[: n - pos]
        pos += audio.size + int(rng.uniform(0.1, 0.6) * RATE)
        i += 1
    bed, _ = synth_music(seconds, rng)
    bed *= np.std(talk) / (np.std(bed) + 1e-9) * 10 ** (rng.uniform(-18, -8) / 20)
    return talk + bed, "talk_" + "_".join(sorted({v.variant.replace(" ", "") for v in voices}))


def _make_clip(item: dict, out_dir: str) -> dict:
    rng = np.random.default_rng([item["seed"], item["index"], 0x401E])
    if item["kind"] == "music":
        audio, subtype = synth_music(item["seconds"], rng)
    elif item["kind"] == "stationary":
        audio, subtype = synth_stationary(item["seconds"], rng)
    else:
        audio, subtype = synth_tv(item["seconds"], rng, TV_VARIANTS[item["split"]], item["seed"] * 1000 + item["index"])
    audio = audio - np.mean(audio)
    audio *= 0.5 / (np.max(np.abs(audio)) + 1e-9)  # peak-normalised: levels are set at mixing time
    path = pathlib.Path(out_dir) / item["split"] / f"{item['id']}.wav"
    wd.write_audio(path, audio)
    return {
        "id": item["id"],
        "audio": str(path),
        "duration": round(audio.size / RATE, 4),
        "kind": item["kind"],
        "subtype": subtype,
        "split": item["split"],
    }


def build_builtin(cfg, seed: int, out: pathlib.Path, workers: int) -> dict:
    items = []
    for split_index, split in enumerate(NOISE_SPLITS):
        minutes = cfg.train_minutes if split == "train" else cfg.test_minutes
        total_weight = sum(cfg.kind_weights.values())
        for kind, weight in sorted(cfg.kind_weights.items()):
            count = max(1, int(round(minutes * 60 * weight / total_weight / cfg.clip_seconds)))
            for i in range(count):
                items.append(
                    {
                        "id": f"{split}-{kind}-{i:04d}",
                        "split": split,
                        "kind": kind,
                        "index": i,
                        "seconds": float(cfg.clip_seconds),
                        "seed": seed * 2 + split_index,
                    }
                )
    tally = {}
    records = parallel.map_resumable(
        functools.partial(_make_clip, out_dir=str(out)),
        items,
        out / ".parts",
        workers=workers,
        chunk_size=4,
        desc="noise: synthesising",
        fresh_process_per_chunk=True,
        tally=tally,
    )
    parallel.log_share("noise", "synthesised", tally)
    if pipeline.processes()[0] != 0:  # multi-host: every process synthesised its share; 0 writes
        return {"process": pipeline.processes()[0], "chunks": tally}
    _write_splits(records, out)
    parallel.reset(out / ".parts")
    return summarise(out)


def _write_splits(records: list[dict], out: pathlib.Path) -> None:
    by_split = collections.defaultdict(list)
    for r in records:
        by_split[r.pop("split")].append(r)
    for split in NOISE_SPLITS:
        if not by_split[split]:
            raise ValueError(f"noise split {split!r} is empty")
        manifest.write_manifest(out / f"{split}.jsonl", by_split[split])


MUSAN_KINDS = ("music", "noise", "speech")


def source_kinds(cfg) -> tuple[str, ...]:
    """The noise kinds `cfg` (config.noise) provides: the built-in generator's weighted kinds, or
    MUSAN's subdirectories."""
    if cfg.source == "musan":
        return MUSAN_KINDS
    return tuple(k for k, w in cfg.kind_weights.items() if w > 0)


def import_musan(cfg, out: pathlib.Path) -> dict:
    """A MUSAN-layout directory: music/, noise/, speech/ with audio files below each."""
    root = pathlib.Path(cfg.musan_dir).expanduser()
    records = []
    for kind in MUSAN_KINDS:
        files = sorted(p for p in (root / kind).rglob("*") if p.suffix.lower() in (".wav", ".flac"))
        for path in files:
            try:
                info = audio_io.audio_info(path)
            except audio_io.AudioError as err:
                log.warning("skipping noise file: %s", err)
                continue
            if info.channels != 1 or info.frames == 0:
                log.warning(
                    "skipping noise file %s: %d channels, %d frames (need mono, non-empty)",
                    path,
                    info.channels,
                    info.frames,
                )
                continue
            bucket = int(hashlib.sha1(str(path.relative_to(root)).encode()).hexdigest(), 16) % 100
            records.append(
                {
                    "id": f"{kind}-{path.stem}",
                    "audio": str(path.resolve()),
                    "duration": round(info.frames / info.samplerate, 4),
                    "kind": kind,
                    "subtype": kind,
                    "split": "test" if bucket < cfg.musan_test_percent else "train",
                }
            )
    if not records:
        raise ValueError(f"{root}: no usable wav/flac files under music/, noise/ or speech/")
    _write_splits(records, out)
    return summarise(out)


def summarise(out: pathlib.Path) -> dict:
    summary = {}
    for split in NOISE_SPLITS:
        records = read_noise(out / f"{split}.jsonl")
        kinds = collections.Counter(r["kind"] for r in records)
        summary[split] = {
            "minutes": round(sum(r["duration"] for r in records) / 60, 2),
            "clips": len(records),
            "kinds": dict(sorted(kinds.items())),
        }
    return summary


def read_noise(path: pathlib.Path) -> list[dict]:
    return manifest.read_manifest(path, required=("id", "audio", "duration", "kind"))


def run(config, workdir: pathlib.Path) -> dict:
    """Runner stage `noise`."""
    out = workdir / "noise"
    cfg = config.noise
    if cfg.source == "builtin":
        return build_builtin(cfg, config.seed, out, config.workers)
    if cfg.source == "musan":  # a directory listing: process 0's alone in a multi-host run
        return import_musan(cfg, out) if pipeline.processes()[0] == 0 else {"process": pipeline.processes()[0]}
    raise ValueError(f"noise.source must be 'builtin' or 'musan', not {cfg.source!r}")
