import os
import shutil
import signal as os_signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

from data_prep import noise as noise_corpus
from data_prep import noisify
from tsasr.audio import io as audio_io
from tsasr.data import manifest

from conftest import EXPERIMENT, ROOT, tiny_config


def _lag(noisy: np.ndarray, clean: np.ndarray, max_lag: int = 800) -> int:
    """Lag (samples) of noisy against clean by GCC-PHAT (whitened cross-correlation).

    Whitening makes the peak the first, direct arrival, instead of one smeared by the
    voice's pitch periodicity and the room's reflections."""
    n = len(clean)
    spectrum = np.fft.rfft(noisy, 2 * n) * np.conj(np.fft.rfft(clean, 2 * n))
    spectrum /= np.abs(spectrum) + 1e-12
    xcorr = np.fft.irfft(spectrum, 2 * n)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([xcorr[: max_lag + 1], xcorr[-max_lag:]])
    return int(lags[np.argmax(values)])


@pytest.mark.parametrize("condition", ["test_noisy", "test_rerecorded", "train_labelled"])
def test_noisy_copy_is_frame_aligned_with_clean(tiny_run, condition):
    workdir, _ = tiny_run
    records = manifest.read_manifest(workdir / "noisy" / f"{condition}.jsonl")
    clean = manifest.by_id(manifest.read_manifest(workdir / "corpus" / f"{noisify.CONDITIONS[condition][0]}.jsonl"))
    lags, natural = [], []
    for record in records[:8]:
        clean_audio = audio_io.read_audio(clean[record["clean_id"]]["audio"])
        recipe = dict(record["mix"], snr_db=30.0)  # same room and noises, little noise: a clean lag estimate
        noisy, applied = noisify.render(recipe, clean_audio)
        assert applied["delay_samples"] > 16  # without the shift the copy would lag by more than 1 ms
        natural.append(_lag(noisy, clean_audio))
        # The built-in corpus is itself a room recording (data_prep/recording.py), whose own
        # reflections and noise floor can give GCC-PHAT a second peak; a white probe through
        # the same recipe measures noisify's shift alone.
        probe = np.random.default_rng(len(lags)).standard_normal(clean_audio.size).astype(np.float32) * 0.1
        lags.append(_lag(noisify.render(recipe, probe)[0], probe))
    assert max(abs(x) for x in lags) <= 16, lags  # 1 ms at 16 kHz
    assert sorted(abs(x) for x in natural)[len(natural) // 2] <= 16, natural  # and on speech, for most


def test_manifest_regenerates_the_mix_bit_for_bit(tiny_run):
    workdir, _ = tiny_run
    for condition in ("train_unlabelled", "test_rerecorded"):
        records = manifest.read_manifest(workdir / "noisy" / f"{condition}.jsonl")
        clean = manifest.by_id(manifest.read_manifest(workdir / "corpus" / f"{noisify.CONDITIONS[condition][0]}.jsonl"))
        for record in records[:4]:
            for key in ("clean_id", "duration", "speaker", "mix"):
                assert key in record
            mix = record["mix"]
            assert 1 <= len(mix["noises"]) <= 3
            assert {"id", "audio", "offset", "level_db"} <= set(mix["noises"][0])
            assert {"dimensions", "rt60", "microphone", "talker", "noise_sources"} <= set(mix["room"])
            assert {"snr_db", "delay_samples", "noise_gain"} <= set(mix)
            regenerated = noisify.regenerate(record, audio_io.read_audio(clean[record["clean_id"]]["audio"]))
            stored, _ = soundfile.read(record["audio"], dtype="int16")
            pcm = np.clip(np.rint(regenerated.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
            assert np.array_equal(pcm, stored)


def test_conditions_use_the_right_noise_and_rooms(tiny_run):
    workdir, config = tiny_run
    test_noise = {r["id"] for r in noise_corpus.read_noise(workdir / "noise" / "test.jsonl")}
    train_noise = {r["id"] for r in noise_corpus.read_noise(workdir / "noise" / "train.jsonl")}
    for condition, (_, noise_split, _, playback) in noisify.CONDITIONS.items():
        records = manifest.read_manifest(workdir / "noisy" / f"{condition}.jsonl")
        used = {n["id"] for r in records for n in r["mix"]["noises"]}
        assert used <= (test_noise if noise_split == "test" else train_noise)
        ranges = config.noisify.rerecorded_rooms if playback else config.noisify.rooms
        for r in records:
            assert ranges.rt60[0] <= r["mix"]["room"]["rt60"] <= ranges.rt60[1]
            assert ("loudspeaker" in r["mix"]) == playback
            lo, hi = config.noisify[noisify.SNR_RANGE.get(condition, "snr_db")]
            assert lo <= r["mix"]["snr_db"] <= hi


def test_loudspeaker_band_limits_distorts_mildly_and_adds_no_delay():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(32000)
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    nearly_linear = noisify.loudspeaker(x, 200.0, 5000.0, 0.05)
    assert _lag(nearly_linear, x) == 0
    p = np.abs(np.fft.rfft(nearly_linear)) ** 2
    passband = p[(f > 500) & (f < 3000)].mean()
    assert p[f < 60].mean() < 1e-3 * passband
    assert p[f > 7500].mean() < 1e-2 * passband
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    spectrum = np.abs(np.fft.rfft(noisify.loudspeaker(tone, 200.0, 7000.0, 2.5)))
    third_harmonic_db = 20 * np.log10(spectrum[3000] / spectrum[1000])
    assert -40 < third_harmonic_db < -10  # audible but mild non-linearity


def _copy_inputs(src, dst):
    for sub in ("corpus", "noise", ".stages"):
        shutil.copytree(src / sub, dst / sub)
    for marker in (dst / ".stages").glob("noisify*"):
        marker.unlink()


def test_same_output_whatever_the_number_of_workers(tiny_run, tmp_path):
    workdir, _ = tiny_run
    outputs = []
    for workers in (1, 2):
        target = tmp_path / f"w{workers}"
        _copy_inputs(workdir, target)
        config = tiny_config(**{"--config.workers": workers})
        with config.unlocked():
            config.workers = workers
        noisify.run(config, target)
        outputs.append(target)
    for condition in noisify.CONDITIONS:
        a = (outputs[0] / "noisy" / f"{condition}.jsonl").read_text()
        b = (outputs[1] / "noisy" / f"{condition}.jsonl").read_text()
        assert a == b
    first = sorted((outputs[0] / "noisy" / "wav").rglob("*.wav"))
    assert first
    for path in first:
        twin = outputs[1] / path.relative_to(outputs[0])
        assert path.read_bytes() == twin.read_bytes()


def test_killed_noisify_resumes_to_the_same_result(tiny_run, tmp_path):
    workdir, _ = tiny_run
    target = tmp_path / "killed"
    _copy_inputs(workdir, target)
    command = [
        sys.executable,
        "-m",
        "tsasr.run",
        str(EXPERIMENT),
        "--tiny",
        "--workdir",
        str(target),
        "--until",
        "noisify",
        "--config.workers=1",
    ]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    parts = target / "noisy" / ".parts"
    while time.time() < deadline and not (parts.exists() and any(parts.rglob("part-*.jsonl"))):
        time.sleep(0.05)
    os.kill(proc.pid, os_signal.SIGKILL)
    proc.wait()
    assert not (target / ".stages" / "noisify.json").exists(), "noisify finished before it could be killed"
    done_before = len(list(parts.rglob("part-*.jsonl")))
    assert done_before >= 1
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stderr
    for condition in noisify.CONDITIONS:
        assert (target / "noisy" / f"{condition}.jsonl").read_text() == (
            workdir / "noisy" / f"{condition}.jsonl"
        ).read_text()


def test_choose_draws_what_generator_choice_draws():
    rng = np.random.default_rng(5)
    for size in (1, 2, 9, 40):
        p = rng.uniform(0, 1, size) * (rng.uniform(0, 1, size) > 0.3)
        if p.sum() == 0:
            p[0] = 1.0
        p /= p.sum()
        cdf = noisify.choice_cdf(p)
        ours, theirs = np.random.default_rng(size), np.random.default_rng(size)
        for _ in range(500):
            assert noisify.choose(ours, cdf) == int(theirs.choice(size, p=p))
            assert ours.random() == theirs.random()  # the streams stay in step


def _plain_render(recipe, clean):
    """render() the straightforward way: every source convolved on its own in float64."""
    from scipy import signal

    samples = clean.size
    rirs = noisify.rir.impulse_responses(recipe["room"], recipe["max_order"])
    delay = int(np.argmax(np.abs(rirs[0])))
    sources = [clean.astype(np.float64)]
    for spec in recipe["noises"]:
        segment = noisify._segment(spec["audio"], spec["offset"], samples).astype(np.float64)
        sources.append(segment / np.sqrt(np.mean(segment**2)) * 10 ** (spec["level_db"] / 20))
    if recipe.get("loudspeaker"):
        sources = list(noisify.loudspeaker(np.stack(sources), **recipe["loudspeaker"]))
    wet = [signal.fftconvolve(s, h)[delay : delay + samples] for s, h in zip(sources, rirs)]
    speech, noise = wet[0], np.sum(wet[1:], axis=0)
    gain = np.sqrt(np.mean(speech**2) / np.mean(noise**2) * 10 ** (-recipe["snr_db"] / 10))
    mix = speech + gain * noise
    if "mic_self_noise_db" in recipe:
        hiss = np.random.default_rng(recipe["mic_noise_seed"]).standard_normal(samples)
        mix += hiss * np.sqrt(np.mean(speech**2) * 10 ** (-recipe["mic_self_noise_db"] / 10))
    peak = np.max(np.abs(mix))
    return mix * (0.95 / peak if peak > 0.95 else 1.0), delay, gain


@pytest.mark.parametrize("condition", ["train_unlabelled", "test_rerecorded"])
def test_batched_render_matches_separate_float64_convolutions(tiny_run, condition):
    """One padded float32 FFT batch, with noise gains moved onto the responses, gives the mix
    of separate float64 convolutions to well below 16-bit resolution."""
    workdir, _ = tiny_run
    records = manifest.read_manifest(workdir / "noisy" / f"{condition}.jsonl")
    clean = manifest.by_id(manifest.read_manifest(workdir / "corpus" / f"{noisify.CONDITIONS[condition][0]}.jsonl"))
    counts = set()
    for record in records[:12]:
        audio = audio_io.read_audio(clean[record["clean_id"]]["audio"])
        ours, applied = noisify.render(record["mix"], audio)
        expected, delay, gain = _plain_render(record["mix"], audio)
        assert applied["delay_samples"] == delay
        assert abs(applied["noise_gain"] / gain - 1) < 1e-4
        assert np.max(np.abs(ours - expected)) < 2**-17, np.max(np.abs(ours - expected))
        counts.add(len(record["mix"]["noises"]))
    assert len(counts) >= 2  # several batch sizes (4 and 8 FFT rows)


def test_missing_noise_kinds_are_reported_and_the_drawn_shares_renormalised(caplog):
    """A noise set with only music (and one fan) while tv is weighted: the warning names tv, and
    the shares it states are the ones the mixer draws (checked by drawing 20,000 recipes)."""
    import logging

    noises = [{"id": f"m{i}", "kind": "music", "duration": 10.0, "audio": "x"} for i in range(3)]
    noises.append({"id": "f0", "kind": "stationary", "duration": 10.0, "audio": "x"})
    weights = {"music": 0.45, "tv": 0.35, "stationary": 0.2}
    shares = noisify.drawn_kind_weights(noises, weights)
    assert shares == {"music": round(3 * 0.45 / (3 * 0.45 + 0.2), 4), "stationary": round(0.2 / 1.55, 4)}
    with caplog.at_level(logging.WARNING, logger="data_prep.noisify"):
        noisify.report_noise_kinds("train", noises, weights, ("music", "tv", "stationary"))
        noisify.report_noise_kinds("test", noises, {**weights, "speech": 0.3}, ("music", "stationary"))
    assert "has no tv clips" in caplog.text and str(shares) in caplog.text
    # a kind the source never provides (MUSAN's speech for the built-in noise) is not "missing"
    assert "'test'" not in caplog.text
    rng = np.random.default_rng(0)
    weights_per_noise = np.array([weights.get(n["kind"], 0.0) for n in noises])
    cdf = noisify.choice_cdf(weights_per_noise / weights_per_noise.sum())
    drawn = [noises[noisify.choose(rng, cdf)]["kind"] for _ in range(20000)]
    assert abs(drawn.count("music") / len(drawn) - shares["music"]) < 0.01
