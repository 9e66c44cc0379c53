import json
import logging

import numpy as np
import pytest
import soundfile

from data_prep import corpus
from data_prep import user_corpus
from tsasr import pipeline
from tsasr.audio import io as audio_io
from tsasr.data import manifest
from tsasr.recipes.asr import base_config


def _tone(seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.fixture
def user_data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    soundfile.write(d / "good.wav", _tone(1.0), 16000)
    soundfile.write(d / "good.flac", _tone(1.2), 16000)
    soundfile.write(d / "rate44k.wav", _tone(1.0, 44100), 44100)
    soundfile.write(d / "stereo.wav", np.stack([_tone(1.0)] * 2, axis=1), 16000)
    soundfile.write(d / "short.wav", _tone(0.1), 16000)
    soundfile.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
    nan = _tone(1.0)
    nan[100] = np.nan
    soundfile.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    (d / "garbage.wav").write_bytes(b"not a wav file at all")
    # near-digital silence: +-1 LSB of 16-bit dither (about -93 dBFS), not exactly zero
    dither = np.random.default_rng(0).integers(-1, 2, 32000).astype(np.int16)
    soundfile.write(d / "dither.wav", dither, 16000, subtype="PCM_16")
    lines = [
        {"id": "a-1", "audio": "good.wav", "text": "Turn ON the lights"},
        {"id": "a-2", "audio": "good.flac", "text": "play jazz", "speaker": "alice"},
        {"id": "a-3", "audio": "rate44k.wav", "text": "call mom"},
        {"id": "b-1", "audio": "stereo.wav", "text": "hello"},
        {"id": "b-2", "audio": "short.wav", "text": "hi"},
        {"id": "b-3", "audio": "empty.wav", "text": "hi"},
        {"id": "b-4", "audio": "nan.wav", "text": "hi"},
        {"id": "b-5", "audio": "missing.wav", "text": "hi"},
        {"id": "b-6", "audio": "garbage.wav", "text": "hi"},
        {"id": "b-7", "audio": "good.wav", "text": "café au lait"},
        {"id": "b-8", "audio": "dither.wav", "text": "two seconds of silence"},
        {"id": "a-1", "audio": "good.wav", "text": "duplicate"},
    ]
    path = d / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _validate(path, tmp_path, policy="skip"):
    return user_corpus.validate(
        path,
        labelled=True,
        min_duration=0.3,
        alphabet="[a-z' ]",
        on_bad_input=policy,
        parts_dir=tmp_path / "parts",
        workers=1,
        split="train_labelled",
    )


def test_bad_items_are_named_counted_and_skipped(user_data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        good, skipped = _validate(user_data, tmp_path)
    assert [r["id"] for r in good] == ["a-1", "a-2", "a-3"]
    assert good[0]["text"] == "turn on the lights"
    assert good[0]["speaker"] == "a" and good[1]["speaker"] == "alice"
    assert good[2]["sample_rate"] == 44100 and abs(good[2]["duration"] - 1.0) < 1e-3
    assert dict(skipped) == {
        "multichannel": 1,
        "too_short": 1,
        "empty": 1,
        "non_finite": 1,
        "missing": 1,
        "unreadable": 1,
        "bad_characters": 1,
        "duplicate_id": 1,
        "near_silent": 1,
    }
    for name in ("'b-1'", "'b-2'", "'b-4'", "'b-5'", "'b-7'", "duplicate utterance id 'a-1'"):
        assert name in caplog.text
    assert "'b-8'" in caplog.text and "near-silent, its loudest 25 ms is at -9" in caplog.text


def test_stop_policy_names_the_first_bad_item(user_data, tmp_path):
    with pytest.raises(user_corpus.BadInputError, match="duplicate utterance id 'a-1'"):
        _validate(user_data, tmp_path, policy="stop")
    lines = [json.loads(x) for x in user_data.read_text().splitlines()][:-1]
    user_data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(user_corpus.BadInputError, match=r"utterance 'b-1' \(train.jsonl:4\).*2 channels"):
        _validate(user_data, tmp_path / "again", policy="stop")


def test_malformed_manifest_lines_name_the_file_and_line(user_data, tmp_path):
    lines = user_data.read_text().splitlines()
    user_data.write_text("\n".join(lines[:2] + ['{"id": "c-1", "audio": "good.wav", "text": '] + lines[2:]) + "\n")
    with pytest.raises(user_corpus.BadInputError, match=r"train.jsonl:3: not valid JSON"):
        _validate(user_data, tmp_path)
    user_data.write_text("\n".join(lines[:1] + ['{"id": "c-2", "text": "no audio"}']) + "\n")
    with pytest.raises(user_corpus.BadInputError, match=r"train.jsonl:2: utterance 'c-2' lacks audio"):
        _validate(user_data, tmp_path)
    with pytest.raises(user_corpus.BadInputError, match="nowhere.jsonl: manifest not found"):
        _validate(tmp_path / "nowhere.jsonl", tmp_path)


def test_other_rates_are_resampled_on_read_and_logged_once(user_data, caplog):
    audio_io._note_resampling.cache_clear()
    path = user_data.parent / "rate44k.wav"
    with caplog.at_level(logging.INFO):
        first = audio_io.read_audio(path)
        audio_io.read_audio(path)
    assert first.dtype == np.float32 and abs(first.size - 16000) <= 1
    assert caplog.text.count("resampling audio recorded at 44100 Hz") == 1
    spectrum = np.abs(np.fft.rfft(first))
    assert abs(np.argmax(spectrum) * 16000 / first.size - 220) < 2


def test_manifest_corpus_through_the_stage(user_data, tmp_path):
    config = base_config()
    config.corpus.source = "manifest"
    for split in ("train_labelled", "train_unlabelled", "dev", "test"):
        config.corpus.manifests[split] = str(user_data)
    config.workers = 1
    summary = corpus.run(config, tmp_path / "work")
    assert summary["test"]["utterances"] == 3
    assert summary["test"]["skipped"]["multichannel"] == 1
    records = manifest.read_manifest(tmp_path / "work" / "corpus" / "dev.jsonl")
    assert records[0]["audio"] == str(user_data.parent / "good.wav")


def test_missing_manifest_setting_is_a_clear_error(tmp_path):
    config = base_config()
    config.corpus.source = "manifest"
    with pytest.raises(user_corpus.BadInputError, match="corpus.manifests.train_labelled is not set"):
        corpus.run(config, tmp_path)


def test_editing_the_data_in_place_reruns_the_corpus_stage(user_data, tmp_path):
    """A manifest edited in place, or an audio file rewritten under the same name, changes the
    corpus stage's key: the stage reruns and the corpus holds the new data (not "up to date")."""
    import os

    from tsasr import recipe as recipe_lib

    asr = recipe_lib.load("asr")
    config = base_config()
    config.corpus.source = "manifest"
    for split in ("train_labelled", "train_unlabelled", "dev", "test"):
        config.corpus.manifests[split] = str(user_data)
    config.workers = 1
    corpus_stage = next(s for s in asr.stages(config) if s.name == "corpus")
    workdir = tmp_path / "work"
    first = pipeline.run_stages(config, workdir, (corpus_stage,))
    assert first["corpus"]["status"] == "ran"
    assert pipeline.run_stages(config, workdir, (corpus_stage,))["corpus"]["status"] == "skipped"

    user_data.write_text(user_data.read_text().replace("play jazz", "play some jazz"))
    edited = pipeline.run_stages(config, workdir, (corpus_stage,))
    assert edited["corpus"]["status"] == "ran"
    texts = {r["id"]: r["text"] for r in manifest.read_manifest(workdir / "corpus" / "dev.jsonl")}
    assert texts["a-2"] == "play some jazz"

    key = pipeline.stage_keys(config, (corpus_stage,))["corpus"]
    audio = user_data.parent / "good.flac"
    soundfile.write(audio, _tone(1.5), 16000)  # same name, new recording
    os.utime(audio, ns=(1, 1))  # even with an old modification time: the size changed
    assert pipeline.stage_keys(config, (corpus_stage,))["corpus"] != key
    rerun = pipeline.run_stages(config, workdir, (corpus_stage,))
    assert rerun["corpus"]["status"] == "ran"
    durations = {r["id"]: r["duration"] for r in manifest.read_manifest(workdir / "corpus" / "dev.jsonl")}
    assert abs(durations["a-2"] - 1.5) < 0.01


def test_directory_fingerprint_follows_files_added_changed_or_removed(tmp_path):
    from tsasr.data import fingerprint

    root = tmp_path / "musan"
    (root / "music").mkdir(parents=True)
    soundfile.write(root / "music" / "a.wav", _tone(1.0), 16000)
    first = fingerprint.directory(root)
    assert fingerprint.directory(root) == first
    soundfile.write(root / "music" / "b.wav", _tone(1.0), 16000)
    second = fingerprint.directory(root)
    soundfile.write(root / "music" / "a.wav", _tone(2.0), 16000)
    third = fingerprint.directory(root)
    (root / "music" / "b.wav").unlink()
    assert len({first, second, third, fingerprint.directory(root)}) == 4
    assert fingerprint.directory(tmp_path / "nowhere").startswith("missing:")


def _librispeech(root):
    """A LibriSpeech-layout directory: two subsets, speakers/chapters, flac files, .trans.txt."""
    lines = {
        ("train-clean-100", "19", "198"): ["19-198-0000 NORTHANGER ABBEY", "19-198-0001 THIS LITTLE WORK WAS FINISHED"],
        ("train-clean-100", "26", "495"): ["26-495-0000 IT'S A FINE DAY"],
        ("dev-clean", "84", "121123"): ["84-121123-0000 GO DO YOU HEAR"],
        ("test-other", "1688", "142285"): ["1688-142285-0000 THERE'S IRON THEY SAY"],
    }
    for (subset, speaker, chapter), texts in lines.items():
        folder = root / subset / speaker / chapter
        folder.mkdir(parents=True)
        for line in texts:
            soundfile.write(folder / f"{line.split()[0]}.flac", _tone(0.8), 16000, format="FLAC")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(texts) + "\n")
    return root


def _librispeech_config(root):
    """The asr config reading `_librispeech`'s directory: its two training subsets and dev-clean."""
    config = base_config()
    config.corpus.source = "librispeech"
    config.corpus.librispeech.dir = str(root)
    config.corpus.librispeech.update(
        {"train_labelled": "train-clean-100", "train_unlabelled": "train-clean-100", "dev": "dev-clean"}
    )
    config.corpus.librispeech.test = "dev-clean"
    return config


def test_librispeech_layout_becomes_the_corpus(tmp_path):
    from data_prep import librispeech

    root = _librispeech(tmp_path / "LibriSpeech")
    records = librispeech.read_subset(root, "train-clean-100")
    assert [(r["id"], r["speaker"], r["text"]) for r in records] == [
        ("19-198-0000", "19", "northanger abbey"),
        ("19-198-0001", "19", "this little work was finished"),
        ("26-495-0000", "26", "it's a fine day"),
    ]
    assert records[0]["audio"] == str(root / "train-clean-100" / "19" / "198" / "19-198-0000.flac")
    config = _librispeech_config(root)
    config.workers = 1
    summary = corpus.run(config, tmp_path / "work")
    assert summary["train_labelled"]["utterances"] == 3 and summary["dev"]["utterances"] == 1
    assert summary["train_labelled"]["speakers"] == 2 and summary["train_labelled"]["words"] == 11
    with pytest.raises(FileNotFoundError, match="dev-other.*not found"):
        librispeech.read_subset(root, "dev-other")


def test_librispeech_test_other_is_an_extra_test_condition(tmp_path):
    """corpus.extra_tests=other=test-other: the subset goes through the same checks into
    corpus/test_other.jsonl and is scored as its own condition, `other`, beside clean/noisy/
    rerecorded (LibriSpeech's test-clean and test-other)."""
    from tsasr.data import layout
    from tsasr.recipes.asr import checks, evaluate

    root = _librispeech(tmp_path / "LibriSpeech")
    config = _librispeech_config(root)
    config.corpus.extra_tests = "other=test-other"
    config.workers = 1
    assert checks.problems(config) == []
    summary = corpus.run(config, tmp_path / "work")
    assert summary["test_other"]["utterances"] == 1 and summary["test_other"]["speakers"] == 1
    assert evaluate.conditions(config) == ("clean", "noisy", "rerecorded", "other")
    assert layout.condition("other") == "corpus/test_other.jsonl"
    found = evaluate.test_sets(tmp_path / "work", evaluate.conditions(config))
    assert [r["text"] for r in found["other"][1]] == ["there's iron they say"]
    assert [r["id"] for r in found["clean"][1]] == ["84-121123-0000"]

    config.corpus.extra_tests = "other=test-other+dev-other"
    assert checks.problems(config) == [
        f"{root / 'dev-other'}: LibriSpeech subset of corpus.extra_tests 'other' not found"
    ]
    for bad, message in (("other", "is not 'name=source'"), ("noisy=test-other", "is taken")):
        config.corpus.extra_tests = bad
        assert message in checks.problems(config)[0]
    config.corpus.source, config.corpus.extra_tests = "builtin", "other=x.jsonl"
    assert "built-in corpus has one test set" in checks.problems(config)[0]
