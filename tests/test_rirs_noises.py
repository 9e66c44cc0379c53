"""Room responses from a RIRS_NOISES (OpenSLR 28) directory instead of the room simulation."""

import json

import numpy as np
import pytest
import soundfile
from scipy import signal

from data_prep import corpus, noisify, rirs_noises
from tsasr.audio import io as audio_io
from tsasr.data import manifest
from tsasr.recipes.asr import base_config, checks

RATE = 16000


def _response(rng, peak: int, length: int = 2400) -> np.ndarray:
    """Decaying noise after a direct path of 1.0 at sample `peak` (the tail never reaches it)."""
    h = np.zeros(length)
    h[peak] = 1.0
    t = np.arange(length - peak - 4)
    h[peak + 4 :] = np.clip(0.2 * rng.standard_normal(t.size), -0.6, 0.6) * np.exp(-t / 400)
    return h


def _rirs_noises(parent) -> dict[str, int]:
    """A RIRS_NOISES directory under `parent`: two measured responses (one of them two-channel,
    its second channel peaking elsewhere and louder), small- and medium-room simulated rooms with
    rir_lists, point-source noises. Returns {file path: its first channel's peak sample}."""
    rng = np.random.default_rng(0)
    root = parent / "RIRS_NOISES"
    peaks, lines = {}, {}
    real = root / "real_rirs_isotropic_noises"
    real.mkdir(parents=True)
    a = _response(rng, 37)
    soundfile.write(real / "air_type1_a.wav", np.stack([a, 2.0 * _response(rng, 300)], axis=1), RATE, subtype="FLOAT")
    soundfile.write(real / "rvb_b.wav", _response(rng, 12), RATE, subtype="FLOAT")
    peaks.update({str(real / "air_type1_a.wav"): 37, str(real / "rvb_b.wav"): 12})
    lines[real] = [
        "--rir-id air_a --room-id air_room RIRS_NOISES/real_rirs_isotropic_noises/air_type1_a.wav",
        "--rir-id rvb_b --room-id rvb_room RIRS_NOISES/real_rirs_isotropic_noises/rvb_b.wav",
    ]
    for size, rooms in (("smallroom", 4), ("mediumroom", 3)):
        folder = root / "simulated_rirs" / size
        lines[folder] = []
        for r in range(1, rooms + 1):
            (folder / f"Room{r:03d}").mkdir(parents=True)
            for k in range(1, 3):
                name = f"Room{r:03d}-{k:05d}.wav"
                peak = int(rng.integers(5, 120))
                soundfile.write(folder / f"Room{r:03d}" / name, _response(rng, peak), RATE, subtype="FLOAT")
                peaks[str(folder / f"Room{r:03d}" / name)] = peak
                lines[folder].append(
                    f"--rir-id {size}-Room{r:03d}-{k:05d} --room-id {size}-Room{r:03d} "
                    f"RIRS_NOISES/simulated_rirs/{size}/Room{r:03d}/{name}"
                )
    for folder, rows in lines.items():
        (folder / "rir_list").write_text("\n".join(rows) + "\n")
    (root / "pointsource_noises").mkdir()
    soundfile.write(root / "pointsource_noises" / "noise-free-sound-0001.wav", rng.standard_normal(RATE), RATE)
    return peaks


def _corpus_and_noise(workdir):
    rng = np.random.default_rng(1)
    data = workdir / "data"
    data.mkdir(parents=True)
    paths = {}
    for split in ("train_labelled", "train_unlabelled", "dev", "test"):
        lines = []
        for i in range(4):
            soundfile.write(data / f"{split}-{i}.wav", 0.1 * rng.standard_normal(int(1.1 * RATE)), RATE)
            lines.append(
                {"id": f"s{i}-{split}-{i}", "audio": f"{split}-{i}.wav", "text": "call mom", "speaker": f"s{i}"}
            )
        paths[split] = data / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(line) + "\n" for line in lines))
    (workdir / "noise").mkdir()
    for split in ("train", "test"):
        records = []
        for i in range(2):
            path = workdir / "noise" / f"{split}-{i}.wav"
            soundfile.write(path, 0.2 * rng.standard_normal(4 * RATE), RATE)
            records.append({"id": f"{split}-{i}", "audio": str(path), "duration": 4.0, "kind": "music"})
        manifest.write_manifest(workdir / "noise" / f"{split}.jsonl", records)
    return paths


def _config(paths, rirs_dir):
    config = base_config()
    config.corpus.source = "manifest"
    for split, path in paths.items():
        config.corpus.manifests[split] = str(path)
    config.noisify.rirs_dir = str(rirs_dir)
    config.noisify.rirs_subsets = ("real", "smallroom", "mediumroom")
    config.workers = 1
    return config


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rirs")
    peaks = _rirs_noises(workdir / "openslr28")
    config = _config(_corpus_and_noise(workdir), workdir / "openslr28")
    corpus.run(config, workdir)
    noisify.run(config, workdir)
    return workdir, config, peaks


def _reference(record: dict, clean: np.ndarray, peaks: dict) -> np.ndarray:
    """The mix in float64 with scipy's fftconvolve: each source convolved with the first channel of
    its drawn response (unit energy), advanced by the talker response's known direct-path sample."""
    mix = record["mix"]
    responses = []
    for path in mix["measured_room"]["rirs"]:
        h = soundfile.read(path, dtype="float64", always_2d=True)[0][:, 0]
        responses.append(h / np.sqrt(np.sum(h**2)))
    delay = peaks[mix["measured_room"]["rirs"][0]]
    samples = clean.size
    sources = [clean.astype(np.float64)]
    for spec in mix["noises"]:
        segment = noisify._segment(spec["audio"], spec["offset"], samples).astype(np.float64)
        sources.append(segment / np.sqrt(np.mean(segment**2)) * 10 ** (spec["level_db"] / 20))
    if mix.get("loudspeaker"):
        sources = list(noisify.loudspeaker(np.stack(sources), **mix["loudspeaker"]))
    wet = [signal.fftconvolve(s, h)[delay : delay + samples] for s, h in zip(sources, responses)]
    speech, noise = wet[0], np.sum(wet[1:], axis=0)
    out = speech + np.sqrt(np.mean(speech**2) / np.mean(noise**2) * 10 ** (-mix["snr_db"] / 10)) * noise
    if "mic_self_noise_db" in mix:
        hiss = np.random.default_rng(mix["mic_noise_seed"]).standard_normal(samples)
        out += hiss * np.sqrt(np.mean(speech**2) * 10 ** (-mix["mic_self_noise_db"] / 10))
    peak = np.max(np.abs(out))
    return out * (0.95 / peak if peak > 0.95 else 1.0)


@pytest.mark.parametrize("condition", ["train_labelled", "dev", "test_noisy", "test_rerecorded"])
def test_noisy_copy_is_the_source_convolved_with_the_drawn_response(mixed, condition):
    workdir, _, peaks = mixed
    records = manifest.read_manifest(workdir / "noisy" / f"{condition}.jsonl")
    clean = manifest.by_id(manifest.read_manifest(workdir / "corpus" / f"{noisify.CONDITIONS[condition][0]}.jsonl"))
    for record in records:
        assert "room" not in record["mix"]  # no simulated room
        audio = audio_io.read_audio(clean[record["clean_id"]]["audio"])
        expected = _reference(record, audio, peaks)
        stored = soundfile.read(record["audio"], dtype="float64")[0]
        assert np.max(np.abs(stored - expected)) < 2**-15 + 2**-17  # 16-bit PCM of the same mix
        regenerated = noisify.regenerate(record, audio)
        assert np.max(np.abs(regenerated - expected)) < 2**-17
        pcm = np.clip(np.rint(regenerated.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
        assert np.array_equal(pcm, soundfile.read(record["audio"], dtype="int16")[0])


def test_test_conditions_are_mixed_in_held_out_rooms(mixed):
    workdir, config, _ = mixed
    rooms, used = {}, set()
    for condition in noisify.CONDITIONS:
        records = manifest.read_manifest(workdir / "noisy" / f"{condition}.jsonl")
        rooms[condition] = {r["mix"]["measured_room"]["id"] for r in records}
        used.update(path for r in records for path in r["mix"]["measured_room"]["rirs"])
    assert any(path.endswith("air_type1_a.wav") for path in used)  # the two-channel response was drawn
    training = rooms["train_labelled"] | rooms["train_unlabelled"] | rooms["dev"]
    testing = rooms["test_noisy"] | rooms["test_rerecorded"]
    assert training and testing and not training & testing
    sides = rirs_noises.split_rooms(config.noisify.rirs_dir, config.noisify.rirs_subsets, 20)
    assert len(sides["test"]) == 2 and len(sides["train"]) == 7  # 20 % of 9 rooms
    assert testing <= set(sides["test"]) and training <= set(sides["train"])


def test_rirs_dir_is_checked_up_front(tmp_path):
    config = base_config()
    config.noisify.rirs_dir = str(tmp_path / "nowhere")
    assert checks.problems(config) == [f"{tmp_path / 'nowhere'}: noisify.rirs_dir is not a directory"]
    (tmp_path / "empty" / "RIRS_NOISES" / "simulated_rirs" / "smallroom").mkdir(parents=True)
    config.noisify.rirs_dir = str(tmp_path / "empty")
    found = checks.problems(config)
    assert len(found) == 4 and all("no room responses (*.wav)" in line for line in found)
    _rirs_noises(tmp_path / "ok")
    config.noisify.rirs_dir = str(tmp_path / "ok")
    config.noisify.rirs_subsets = ("real", "smallroom", "bigroom")
    assert checks.problems(config) == [
        "noisify.rirs_subsets=('real', 'smallroom', 'bigroom'): each must be one of real, smallroom, mediumroom, "
        "largeroom"
    ]
    config.noisify.rirs_subsets = ("real", "smallroom", "mediumroom")
    assert checks.problems(config) == []


def test_without_rir_lists_rooms_come_from_the_layout(tmp_path):
    _rirs_noises(tmp_path)
    for rir_list in (tmp_path / "RIRS_NOISES").rglob("rir_list"):
        rir_list.unlink()
    rooms = {room for room, _ in rirs_noises.responses(tmp_path, "smallroom")}
    assert rooms == {f"smallroom-Room{r:03d}" for r in range(1, 5)}
    assert {room for room, _ in rirs_noises.responses(tmp_path / "RIRS_NOISES", "real")} == {
        "real-air_type1_a",
        "real-rvb_b",
    }
