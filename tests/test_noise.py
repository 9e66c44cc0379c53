import hashlib

import numpy as np
import soundfile

from data_prep import noise
from tsasr.audio import tts
from tsasr import workdir as wd
from tsasr.recipes.asr import base_config


def test_builtin_noise_kinds_and_disjoint_splits(tiny_run):
    workdir, _ = tiny_run
    train = noise.read_noise(workdir / "noise" / "train.jsonl")
    test = noise.read_noise(workdir / "noise" / "test.jsonl")
    assert {r["kind"] for r in train} == {"music", "tv", "stationary"}
    assert {r["kind"] for r in test} == {"music", "tv", "stationary"}
    digest = lambda r: hashlib.sha256(open(r["audio"], "rb").read()).hexdigest()  # noqa: E731
    assert not {digest(r) for r in train} & {digest(r) for r in test}
    for r in train + test:
        audio, rate = soundfile.read(r["audio"])
        assert rate == 16000 and np.isfinite(audio).all() and np.std(audio) > 1e-3


def test_tv_voices_are_not_corpus_voices_and_differ_between_splits():
    assert not set(noise.TV_VARIANTS["train"]) & set(tts.VARIANTS)
    assert not set(noise.TV_VARIANTS["test"]) & set(tts.VARIANTS)
    assert not set(noise.TV_VARIANTS["train"]) & set(noise.TV_VARIANTS["test"])


def test_stationary_noise_spectra():
    rng = np.random.default_rng(0)
    seen = {}
    while len(seen) < 4:
        audio, kind = noise.synth_stationary(4.0, rng)
        seen[kind.rstrip("0123456789") if kind.startswith("hum") else kind] = audio
    spectrum = lambda x: np.abs(np.fft.rfft(x)) ** 2  # noqa: E731
    freqs = np.fft.rfftfreq(4 * 16000, 1 / 16000)
    band = lambda p, lo, hi: p[(freqs >= lo) & (freqs < hi)].mean()  # noqa: E731
    for kind, slope in (("pink", 10), ("brown", 20)):
        p = spectrum(seen[kind])
        ratio_db = 10 * np.log10(band(p, 100, 200) / band(p, 1000, 2000))
        assert abs(ratio_db - slope) < 3, (kind, ratio_db)
    hum = spectrum(seen["hum"])
    assert freqs[np.argmax(hum[freqs < 1000])] % 50 < 1 or freqs[np.argmax(hum[freqs < 1000])] % 60 < 1


def test_music_has_tonal_structure():
    audio, subtype = noise.synth_music(6.0, np.random.default_rng(3))
    assert audio.size == 6 * 16000 and np.isfinite(audio).all()
    assert subtype.split("_")[0] in noise.TIMBRES
    p = np.abs(np.fft.rfft(audio)) ** 2
    assert p.max() / np.median(p) > 1e3  # notes are peaks well above a flat floor


def test_musan_layout_import(tmp_path):
    root = tmp_path / "musan"
    rng = np.random.default_rng(0)
    for kind in ("music", "noise", "speech"):
        for i in range(6):
            wd.write_audio(root / kind / "sub" / f"{kind}-{i}.wav", 0.1 * rng.standard_normal(16000))
    soundfile.write(root / "noise" / "stereo.wav", np.zeros((1600, 2)), 16000)
    config = base_config()
    config.noise.source = "musan"
    config.noise.musan_dir = str(root)
    config.noise.musan_test_percent = 30
    summary = noise.run(config, tmp_path / "work")
    total = summary["train"]["clips"] + summary["test"]["clips"]
    assert total == 18  # the stereo file is skipped
    assert summary["test"]["clips"] > 0
    assert set(summary["train"]["kinds"]) <= {"music", "noise", "speech"}
