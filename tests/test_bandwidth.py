"""Bandwidth-aware simulation: an 8 kHz corpus gets noise, rooms, playback and microphone
self-noise limited to its 0-4 kHz band; a 16 kHz corpus keeps its full band."""

import json
import logging

import numpy as np
import pytest
import soundfile
from scipy import signal

from data_prep import corpus, noisify
from tsasr.audio import io as audio_io
from tsasr.data import manifest
from tsasr.recipes.asr import base_config

CONDITIONS = ("train_labelled", "test_noisy", "test_rerecorded")


def _band_energy_db(audio: np.ndarray) -> tuple[float, float]:
    """(energy in 4.2-7.8 kHz, energy in 0.1-3.8 kHz), dB, from a float64 Welch PSD."""
    f, psd = signal.welch(audio.astype(np.float64), fs=16000, nperseg=512)
    high = psd[(f >= 4200) & (f <= 7800)].sum()
    low = psd[(f >= 100) & (f <= 3800)].sum()
    return 10 * np.log10(high + 1e-30), 10 * np.log10(low)


def _recording(rng, seconds: float, rate: int) -> np.ndarray:
    """Noise 'speech' filling the band a recording at `rate` has: up to 0.45 rate, where the
    anti-aliasing filter of a real 8 kHz recording (telephone, codec) has cut it off."""
    sos = signal.butter(10, 0.45 * rate, fs=rate, output="sos")
    return 0.2 * signal.sosfiltfilt(sos, rng.standard_normal(int(seconds * rate)))


def _corpus(root, rate: int, rates_by_split=None):
    """Four manifests of noise 'speech' recorded at `rate` (per split: rates_by_split)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(rate)
    paths = {}
    for split in ("train_labelled", "train_unlabelled", "dev", "test"):
        split_rate = (rates_by_split or {}).get(split, rate)
        lines = []
        for i in range(3):
            name = f"{split}-{i}.wav"
            soundfile.write(root / name, _recording(rng, 1.2, split_rate), split_rate)
            lines.append({"id": f"s{i}-{split}-{i}", "audio": name, "text": "turn on the lights", "speaker": f"s{i}"})
        paths[split] = root / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(line) + "\n" for line in lines))
    return paths


def _noise(workdir):
    """Full-band (16 kHz white) noise clips for both noise splits."""
    rng = np.random.default_rng(7)
    (workdir / "noise").mkdir(parents=True)
    for split in ("train", "test"):
        records = []
        for i, kind in enumerate(("music", "stationary", "music")):
            path = workdir / "noise" / f"{split}-{i}.wav"
            soundfile.write(path, 0.2 * rng.standard_normal(5 * 16000), 16000)
            records.append({"id": f"{split}-{i}", "audio": str(path), "duration": 5.0, "kind": kind})
        manifest.write_manifest(workdir / "noise" / f"{split}.jsonl", records)


def _config(paths):
    config = base_config()
    config.corpus.source = "manifest"
    for split, path in paths.items():
        config.corpus.manifests[split] = str(path)
    config.workers = 1
    return config


@pytest.fixture(scope="module")
def noisified(tmp_path_factory):
    """{rate: (workdir, corpus summary)} for an 8 kHz and a 16 kHz corpus taken through the corpus
    import and noisify stages."""
    out = {}
    for rate in (8000, 16000):
        workdir = tmp_path_factory.mktemp(f"band{rate}")
        config = _config(_corpus(workdir / "data", rate))
        summary = corpus.run(config, workdir)
        _noise(workdir)
        noisify.run(config, workdir)
        out[rate] = workdir, summary
    return out


def test_corpus_summary_reports_each_splits_sample_rates(noisified):
    _, summary = noisified[8000]
    assert {split: s["sample_rates"] for split, s in summary.items()} == {
        split: {"8000": 3} for split in ("train_labelled", "train_unlabelled", "dev", "test")
    }
    records = manifest.read_manifest(noisified[8000][0] / "corpus" / "test.jsonl")
    assert {r["sample_rate"] for r in records} == {8000}


def test_splits_of_different_rates_are_warned_about_once(tmp_path, caplog):
    config = _config(_corpus(tmp_path / "data", 8000, {"test": 16000}))
    with caplog.at_level(logging.WARNING, logger="data_prep.corpus"):
        summary = corpus.run(config, tmp_path / "work")
    assert summary["test"]["sample_rates"] == {"16000": 3}
    warnings = [r.getMessage() for r in caplog.records if "differ in sample rate" in r.getMessage()]
    assert len(warnings) == 1
    assert "train_labelled 3 at 8000 Hz" in warnings[0] and "test 3 at 16000 Hz" in warnings[0]


@pytest.mark.parametrize("condition", CONDITIONS)
def test_noisy_copies_of_an_8khz_corpus_stay_in_its_band(noisified, condition):
    """Noise, rooms, loudspeaker and microphone self-noise leave 4.2-7.8 kHz at least 30 dB below
    the band the source has; the recipe records the band, so the file regenerates bit for bit."""
    workdir, _ = noisified[8000]
    records = manifest.read_manifest(workdir / "noisy" / f"{condition}.jsonl")
    clean = manifest.by_id(manifest.read_manifest(workdir / "corpus" / f"{noisify.CONDITIONS[condition][0]}.jsonl"))
    assert records
    for record in records:
        stored, _ = soundfile.read(record["audio"], dtype="float64")
        high, low = _band_energy_db(stored)
        assert high < low - 30, (record["id"], high - low)
        if condition == "test_rerecorded":  # speech band-limited after the loudspeaker too: only the
            assert high < low - 60, (record["id"], high - low)  # filter's stopband is left, not self-noise
        assert record["mix"]["band_hz"] == 4000.0
        regenerated = noisify.regenerate(record, audio_io.read_audio(clean[record["clean_id"]]["audio"]))
        pcm = np.clip(np.rint(regenerated.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
        assert np.array_equal(pcm, soundfile.read(record["audio"], dtype="int16")[0])


@pytest.mark.parametrize("condition", CONDITIONS)
def test_noisy_copies_of_a_16khz_corpus_keep_the_full_band(noisified, condition):
    workdir, _ = noisified[16000]
    for record in manifest.read_manifest(workdir / "noisy" / f"{condition}.jsonl"):
        assert "band_hz" not in record["mix"]
        high, low = _band_energy_db(soundfile.read(record["audio"], dtype="float64")[0])
        assert high > low - 10, (record["id"], high - low)


def test_band_limit_is_zero_phase_and_flat_in_band():
    """Against a float64 FFT reference: a 1 kHz tone passes unchanged and undelayed, 4.5 kHz is gone."""
    t = np.arange(16000) / 16000
    tone, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 4500 * t)
    out = noisify.band_limit(tone + high, 4000.0)
    middle = slice(2000, 14000)  # away from the ends' transients
    assert np.max(np.abs(out[middle] - tone[middle])) < 0.01
    spectrum = np.abs(np.fft.rfft(out[middle] * np.hanning(12000)))
    freqs = np.fft.rfftfreq(12000, 1 / 16000)
    assert spectrum[np.argmin(np.abs(freqs - 4500))] < 1e-5 * spectrum.max()
