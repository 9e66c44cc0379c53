"""The noisify stage: noisy parallel copies of the clean corpus.

For every utterance: draw 1-3 noise segments and a room, reverberate the speech and each
noise from its own position in that room, mix at a drawn SNR, and write the result with a
manifest entry holding the whole recipe (noises with offsets and gains, room, SNR, delay),
so `render` regenerates the mix bit for bit from the entry alone.

Alignment: the reverberant copy is advanced by the peak of the talker's RIR (the direct
path, as Kaldi's `wav-reverberate --shift-output` does), so frame t of the noisy copy is
frame t of the clean one and the teacher's clean-audio targets apply to the student's noisy
input. tests/test_noisify.py measures the residual lag (GCC-PHAT) and requires <= 1 ms.

Rooms: simulated per utterance (data_prep.rir), or, with noisify.rirs_dir, drawn from measured
room responses (data_prep.rirs_noises: the RIRS_NOISES layout), training conditions and test
conditions in disjoint rooms.

Band: a source recorded below 16 kHz (its manifest's `sample_rate`) has no energy above its
Nyquist frequency, so neither may its noisy copy: noise, self-noise and (after the
loudspeaker's non-linearity) the speech are low-passed to the source's band, which the
recipe records (`band_hz`).

Conditions: `train_labelled`, `train_unlabelled`, `dev` (training noise and rooms),
`test_noisy` (held-out noise), `test_rerecorded` (held-out noise, speech and media played
through a simulated loudspeaker in rooms disjoint from training, captured with microphone
self-noise). A test condition can instead point at real recordings (noisify.test_manifests).

SNR: the training copies are mixed at noisify.snr_db; the noisy test and the noisy dev set at
noisify.test_snr_db (by default the same range), so the training range can be chosen on the dev
set while the test stays where it was; the re-recorded test at noisify.rerecorded_snr_db.

Each utterance's draws come from (seed, condition, utterance id) only, so the output does not
depend on the number of worker processes; finished chunks survive a kill.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import pathlib

import numpy as np
import soundfile
from scipy import fft, signal

from data_prep import noise as noise_corpus
from data_prep import rir, rirs_noises
from data_prep import user_corpus
from tsasr import parallel, pipeline
from tsasr import workdir as wd
from tsasr.audio import io as audio_io
from tsasr.data import layout, manifest

RATE = 16000
# condition -> (clean split, noise split, room ranges, loudspeaker playback)
CONDITIONS = {
    "train_labelled": ("train_labelled", "train", "rooms", False),
    "train_unlabelled": ("train_unlabelled", "train", "rooms", False),
    "dev": ("dev", "train", "rooms", False),
    "test_noisy": ("test", "test", "rooms", False),
    "test_rerecorded": ("test", "test", "rerecorded_rooms", True),
}
# condition -> the noisify option of its SNR range (the others: snr_db, the training range)
SNR_RANGE = {"dev": "test_snr_db", "test_noisy": "test_snr_db", "test_rerecorded": "rerecorded_snr_db"}
log = logging.getLogger(__name__)


def utterance_rng(seed: int, condition: str, utt_id: str) -> np.random.Generator:
    """The generator for one utterance's draws: a function of the run seed and names only."""
    digest = hashlib.sha256(f"{condition}/{utt_id}".encode()).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def choice_cdf(p: np.ndarray) -> np.ndarray:
    """The cumulative distribution `rng.choice(len(p), p=p)` draws from, as numpy builds it."""
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return cdf


def choose(rng: np.random.Generator, cdf: np.ndarray) -> int:
    """`rng.choice(len(p), p=p)` for `cdf = choice_cdf(p)`: the same index from the same stream
    (one uniform, searched in the cdf, as numpy does), without re-checking p each draw (~20 -> 2 us)."""
    return int(cdf.searchsorted(rng.random(), side="right"))


def draw_recipe(
    rng: np.random.Generator, clean: dict, noises: list[dict], cfg: dict, condition: str, rooms: dict | None = None
) -> dict:
    """Draws everything random about one mix; `render` turns it into audio. `cfg`: noisify config as
    a dict; `rooms`: {room id: response files} to draw measured rooms from instead of simulating one."""
    _, _, ranges_name, playback = CONDITIONS[condition]
    num_noises = int(rng.integers(cfg["num_noises"][0], cfg["num_noises"][1] + 1))
    weights = np.array([cfg["kind_weights"].get(n["kind"], 0.0) for n in noises], float)
    if weights.sum() == 0:
        weights = np.ones(len(noises))
    cdf = choice_cdf(weights / weights.sum())
    samples = int(round(clean["duration"] * RATE))
    chosen = []
    for _ in range(num_noises):
        noise = noises[choose(rng, cdf)]
        noise_samples = int(round(noise["duration"] * RATE))
        offset = int(rng.integers(0, max(1, noise_samples - samples)))
        chosen.append(
            {
                "id": noise["id"],
                "audio": noise["audio"],
                "kind": noise["kind"],
                "offset": offset,
                "level_db": round(rir.uniform(rng, cfg["relative_level_db"]), 3),
            }
        )
    if rooms:
        recipe = {"noises": chosen, "measured_room": rir.draw_measured_room(rng, rooms, num_noises)}
    else:
        recipe = {"noises": chosen, "room": rir.draw_room(rng, cfg[ranges_name], num_noises)}
    snr_range = cfg.get(SNR_RANGE.get(condition, "snr_db"), cfg["snr_db"])  # a config without test ranges: snr_db
    recipe["snr_db"] = round(rir.uniform(rng, snr_range), 3)
    if not rooms:
        recipe["max_order"] = int(cfg["max_order"])
    if playback:
        recipe["loudspeaker"] = {
            "low_hz": round(rir.uniform(rng, cfg["loudspeaker"]["low_hz"]), 1),
            "high_hz": round(rir.uniform(rng, cfg["loudspeaker"]["high_hz"]), 1),
            "drive": round(rir.uniform(rng, cfg["loudspeaker"]["drive"]), 3),
        }
        recipe["mic_self_noise_db"] = round(rir.uniform(rng, cfg["mic_self_noise_db"]), 3)
        recipe["mic_noise_seed"] = int(rng.integers(2**31))
    rate = int(clean.get("sample_rate", RATE))  # manifests written before the rate was recorded: 16 kHz
    if rate < RATE:  # after every draw, and only then: a full-band source's recipe is what it always was
        recipe["band_hz"] = rate / 2
    return recipe


@functools.lru_cache(maxsize=8)
def _band_sos(band_hz: float) -> np.ndarray:
    """An elliptic low-pass: flat (0.05 dB) to 0.95 band_hz, 60 dB down from band_hz on."""
    return signal.iirdesign(0.95 * band_hz, band_hz, gpass=0.05, gstop=60, ftype="ellip", fs=RATE, output="sos")


def band_limit(audio: np.ndarray, band_hz: float) -> np.ndarray:
    """`audio` (rows along the last axis) low-passed to the band of a source recorded at 2 * band_hz.

    Zero-phase (the elliptic filter run forward and backward, so 120 dB down past band_hz and no
    delay): a band-limited copy stays frame-aligned with its clean source.
    """
    return signal.sosfiltfilt(_band_sos(float(band_hz)), audio, axis=-1)


def loudspeaker(audio: np.ndarray, low_hz: float, high_hz: float, drive: float) -> np.ndarray:
    """A small loudspeaker: band-limited (4th-order Butterworth) and mildly non-linear (tanh).

    Zero-phase filtering, so playback adds no delay of its own beyond the room's.
    """
    sos = signal.butter(4, [low_hz, high_hz], "bandpass", fs=RATE, output="sos")
    x = signal.sosfiltfilt(sos, audio, axis=-1)
    peak = np.max(np.abs(x), axis=-1, keepdims=True) + 1e-12
    return np.tanh(drive * x / peak) / np.tanh(drive) * peak


@functools.lru_cache(maxsize=128)
def _short_clip(path: str) -> np.ndarray:
    return audio_io.read_audio(path)


@functools.lru_cache(maxsize=4096)
def _header(path: str) -> tuple[bool, int]:
    """(16 kHz mono?, frames) of a noise file, read once per process."""
    info = audio_io.audio_info(path)
    return info.samplerate == RATE and info.channels == 1, info.frames


def _segment(path: str, offset: int, samples: int) -> np.ndarray:
    """`samples` samples of a noise file from `offset`, looping the file if it is shorter.

    Clips up to 30 s (the built-in ones) are decoded once per process and kept (at most
    128 of them, ~250 MB); longer files (MUSAN) are read segment by segment.
    """
    native, frames = _header(path)
    if native and frames > 30 * RATE and frames - offset >= samples:
        with soundfile.SoundFile(path) as f:
            f.seek(offset)
            return f.read(samples, dtype="float32")
    audio = _short_clip(path) if native else audio_io.read_audio(path)
    if audio.size - offset >= samples:
        return audio[offset : offset + samples]
    return np.resize(np.roll(audio, -offset), samples)


def render(recipe: dict, clean: np.ndarray) -> tuple[np.ndarray, dict]:
    """The noisy mix for a recipe; also returns the gains and delay it applied (provenance).

    Each noise is scaled at its source (unit RMS times 10^(level_db/20)), so the room decides
    how loud it arrives; then the sum of reverberant noises is scaled to the drawn SNR
    against the reverberant speech. All sources are convolved in one batched real FFT.
    """
    samples = clean.size
    if "measured_room" in recipe:
        rirs = rir.measured_impulse_responses(recipe["measured_room"]["rirs"])
    else:
        rirs = rir.impulse_responses(recipe["room"], recipe["max_order"])
    # Advance by the RIR's peak, as Kaldi's wav-reverberate --shift-output does: the direct
    # sound, unless coincident reflections (a talker equidistant from floor and ceiling) add
    # up to more, in which case they dominate what the ear and the features see.
    delay = int(np.argmax(np.abs(rirs[0])))
    sources, gains = [clean], [1.0]
    for spec in recipe["noises"]:
        segment = _segment(spec["audio"], spec["offset"], samples)
        sources.append(segment)
        gains.append(10 ** (spec["level_db"] / 20) / (np.sqrt(np.mean(segment**2)) + 1e-12))
    if recipe.get("loudspeaker"):
        sources = list(loudspeaker(np.stack(sources) * np.array(gains)[:, None], **recipe["loudspeaker"]))
        gains = [1.0] * len(sources)
    count, length = len(sources), rirs.shape[1]
    nfft = fft.next_fast_len(samples + length - 1, real=True)
    # Rows: sources, then their responses (a noise's gain applied to its response, which is
    # shorter than the noise: the convolution is linear), then zeros up to a multiple of 4,
    # since pocketfft transforms float32 rows four at a time in SIMD lanes and one at a time
    # otherwise: 8 rows of 33750 take ~1.1 ms, 6 rows ~1.5 ms (float32 is far below 16-bit
    # PCM resolution).
    signals = np.empty((-(-2 * count // 4) * 4, nfft), np.float32)
    for row, source in enumerate(sources):
        signals[row, :samples] = source
        signals[row, samples:] = 0
    np.multiply(rirs, np.array(gains)[:, None], out=signals[count : 2 * count, :length], casting="same_kind")
    signals[count : 2 * count, length:] = 0
    signals[2 * count :] = 0
    spectra = fft.rfft(signals, axis=-1, overwrite_x=True)
    np.multiply(spectra[:count], spectra[count : 2 * count], out=spectra[:count])
    for row in range(2, count):  # row 1 becomes the sum of the reverberant noises
        spectra[1] += spectra[row]
    if count == 1:
        spectra[1] = 0
    wet = fft.irfft(spectra[:2], nfft, axis=-1, overwrite_x=True)[:, delay : delay + samples].astype(np.float64)
    band = recipe.get("band_hz")
    if band:
        # A source recorded at 8 kHz has nothing above 4 kHz, so neither may its noisy copy: the
        # noise (and its room) is limited to the source's band, and so is the speech once the
        # loudspeaker's non-linearity has put harmonics above it (reverberation alone adds none).
        rows = slice(0, 2) if recipe.get("loudspeaker") else slice(1, 2)
        wet[rows] = band_limit(wet[rows], band)
    speech_power, noise_power = np.einsum("ij,ij->i", wet, wet) / samples + 1e-12
    noise_gain = np.sqrt(speech_power / noise_power * 10 ** (-recipe["snr_db"] / 10))
    mix = wet[1]
    mix *= noise_gain
    mix += wet[0]
    if "mic_self_noise_db" in recipe:
        hiss = np.random.default_rng(recipe["mic_noise_seed"]).standard_normal(samples)
        if band:  # the microphone's self-noise in the source's band, at the drawn ratio within it
            hiss = band_limit(hiss, band)
            hiss /= np.sqrt(np.mean(hiss**2)) + 1e-12
        mix += hiss * np.sqrt(speech_power * 10 ** (-recipe["mic_self_noise_db"] / 10))
    peak = max(mix.max(), -mix.min())
    scale = 0.95 / peak if peak > 0.95 else 1.0  # avoid clipping in 16-bit PCM
    applied = {"delay_samples": delay, "noise_gain": float(noise_gain), "output_scale": float(scale)}
    if scale != 1.0:
        mix *= scale
    return mix.astype(np.float32), applied


def _mix_one(item: dict, *, seed: int, cfg, noises: list[dict], out_dir: str, rooms: dict | None = None) -> dict:
    clean = item["clean"]
    condition = item["condition"]
    rng = utterance_rng(seed, condition, clean["id"])
    recipe = draw_recipe(rng, clean, noises, cfg, condition, rooms)
    audio, applied = render(recipe, audio_io.read_audio(clean["audio"]))
    utt_id = f"{clean['id']}-{condition}"
    path = pathlib.Path(out_dir) / condition / clean["speaker"] / f"{utt_id}.wav"
    wd.write_audio(path, audio)
    record = {
        "id": utt_id,
        "clean_id": clean["id"],
        "audio": str(path),
        "duration": clean["duration"],
        "speaker": clean["speaker"],
        "condition": condition,
        "mix": {**recipe, **applied},
    }
    if "text" in clean:
        record["text"] = clean["text"]
    return record


def regenerate(record: dict, clean_audio: np.ndarray) -> np.ndarray:
    """Re-renders a noisy manifest entry from its recorded recipe (for audits and tests)."""
    audio, _ = render(record["mix"], clean_audio)
    return audio


FEW_NOISE_FILES = 10  # a test condition mixed from fewer distinct noise files is warned about


def drawn_kind_weights(noises: list[dict], kind_weights: dict) -> dict[str, float]:
    """The share of draws each noise kind present gets: config.noisify.kind_weights restricted
    to the kinds `noises` has, renormalised (uniform over the kinds when none is weighted)."""
    present = sorted({n["kind"] for n in noises})
    weights = {k: float(kind_weights.get(k, 0.0)) * sum(n["kind"] == k for n in noises) for k in present}
    total = sum(weights.values())
    if total == 0:
        return {k: sum(n["kind"] == k for n in noises) / len(noises) for k in present}
    return {k: round(w / total, 4) for k, w in weights.items()}


def report_noise_kinds(split: str, noises: list[dict], kind_weights: dict, expected: tuple[str, ...]) -> None:
    """Logs, once per noise split, the weighted kinds of its source (`expected`: the kinds the
    built-in generator or a MUSAN directory provides) that it lacks, and the shares actually drawn."""
    present = {n["kind"] for n in noises}
    missing = sorted(k for k, w in kind_weights.items() if w > 0 and k in expected and k not in present)
    if missing:
        log.warning(
            "noise split %r has no %s clips although noisify.kind_weights weighs them; drawing the kinds "
            "present in these shares instead: %s",
            split,
            ", ".join(missing),
            drawn_kind_weights(noises, kind_weights),
        )


def run(config, workdir: pathlib.Path) -> dict:
    """Runner stage `noisify`."""
    cfg = config.noisify
    out = workdir / layout.NOISY
    noise_sets = {
        split: noise_corpus.read_noise(workdir / "noise" / f"{split}.jsonl") for split in noise_corpus.NOISE_SPLITS
    }
    # Multi-host: every process mixes its share of each condition's chunks; process 0 writes
    # the manifests and says what holds for all (the noise kinds, the rooms, the summary).
    index = pipeline.processes()[0]
    expected = noise_corpus.source_kinds(config.noise)
    for split, noises in noise_sets.items():
        if index == 0:
            report_noise_kinds(split, noises, cfg.kind_weights.to_dict(), expected)
    measured = None
    if cfg.rirs_dir:  # training mixes in some measured rooms, the test conditions in the others
        measured = rirs_noises.split_rooms(cfg.rirs_dir, tuple(cfg.rirs_subsets), cfg.rirs_test_percent)
        if index == 0:
            log.info(
                "noisify: room responses from %s: %s",
                rirs_noises.root_of(cfg.rirs_dir),
                {
                    side: f"{len(rooms)} rooms, {sum(map(len, rooms.values()))} responses"
                    for side, rooms in measured.items()
                },
            )
    summary, tally = {}, {}
    for condition, (clean_split, noise_split, _, _) in CONDITIONS.items():
        user_path = cfg.test_manifests.get(condition.removeprefix("test_"), "") if condition.startswith("test_") else ""
        if user_path:
            good, skipped = user_corpus.validate(
                pathlib.Path(user_path).expanduser(),
                labelled=True,
                min_duration=config.corpus.min_duration,
                alphabet=config.corpus.alphabet,
                on_bad_input=config.corpus.on_bad_input,
                min_level_db=config.corpus.min_level_db,
                parts_dir=out / ".parts" / condition,
                workers=config.workers,
                split=condition,
            )
            if index != 0:
                continue
            for r in good:
                r.setdefault("condition", condition)
            manifest.write_manifest(out / f"{condition}.jsonl", good)
            summary[condition] = {"source": str(user_path), "utterances": len(good), "skipped": dict(skipped)}
            continue
        clean = manifest.read_manifest(workdir / layout.clean(clean_split))
        fn = functools.partial(
            _mix_one,
            seed=config.seed,
            cfg=cfg.to_dict(),
            noises=noise_sets[noise_split],
            out_dir=str(out / "wav"),
            rooms=measured and measured["test" if condition.startswith("test_") else "train"],
        )
        records = parallel.map_resumable(
            fn,
            [{"clean": c, "condition": condition} for c in clean],
            out / ".parts" / condition,
            workers=config.workers,
            chunk_size=32,
            desc=f"noisify: {condition}",
            tally=tally,
        )
        if index != 0:
            continue
        manifest.write_manifest(out / f"{condition}.jsonl", records)
        summary[condition] = describe(records)
        files = {n["id"] for r in records for n in r["mix"]["noises"]}
        if condition.startswith("test_") and len(files) < FEW_NOISE_FILES:
            log.warning(
                "%s is mixed from only %d distinct noise files (%s): its WER measures those files more than "
                "the noise kind; give the noise directory more test files",
                condition,
                len(files),
                ", ".join(sorted(files)),
            )
    parallel.log_share("noisify", "mixed", tally)
    if index != 0:
        return {"process": index, "chunks": tally}
    parallel.reset(out / ".parts")
    return summary


def describe(records: list[dict]) -> dict:
    kinds = collections.Counter(n["kind"] for r in records for n in r["mix"]["noises"])
    snrs = [r["mix"]["snr_db"] for r in records]
    summary = {
        "hours": round(sum(r["duration"] for r in records) / 3600, 3),
        "utterances": len(records),
        "noise_kinds": dict(sorted(kinds.items())),
        "snr_db": [round(min(snrs), 1), round(max(snrs), 1)],
    }
    if all("room" in r["mix"] for r in records):
        rt60s = [r["mix"]["room"]["rt60"] for r in records]
        summary["rt60"] = [round(min(rt60s), 2), round(max(rt60s), 2)]
    else:
        summary["measured_rooms"] = len({r["mix"]["measured_room"]["id"] for r in records})
    return summary
