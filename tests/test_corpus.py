import json

import numpy as np
import soundfile

from data_prep import corpus
from tsasr.recipes.asr import base_config
from tsasr.data import manifest


def test_default_config_has_sixty_distinct_speakers_split_disjointly():
    cfg = base_config().corpus
    speakers = corpus.make_speakers(cfg.num_speakers, 0, cfg.pitch_range, cfg.rate_range)
    assert len(speakers) >= 60
    voices = {(s["accent"], s["variant"], s["pitch"], s["rate"]) for s in speakers}
    assert len(voices) == len(speakers)
    assert len({s["accent"] for s in speakers}) >= 6
    splits = corpus.assign_splits(speakers, dict(cfg.split_fractions), 0)
    names = [{s["speaker"] for s in v} for v in splits.values()]
    assert sum(len(n) for n in names) == len(speakers)
    assert len(set().union(*names)) == len(speakers)


def test_tiny_corpus_manifests(tiny_run):
    workdir, _ = tiny_run
    seen_speakers = {}
    for split in corpus.SPLITS:
        records = manifest.read_manifest(workdir / "corpus" / f"{split}.jsonl")
        assert records, split
        seen_speakers[split] = {r["speaker"] for r in records}
        for r in records[:5]:
            audio, rate = soundfile.read(r["audio"])
            assert rate == 16000 and audio.ndim == 1
            assert abs(audio.size / 16000 - r["duration"]) < 1e-3
            assert r["text"] and r["id"].startswith(r["speaker"])
            phones = r["tts_phonemes"]
            assert len(phones) >= len(r["text"].split())
            starts = [t for t, _ in phones]
            assert starts == sorted(starts) and starts[-1] <= r["duration"] + 0.05
    splits = list(seen_speakers.values())
    for i in range(len(splits)):
        for j in range(i + 1, len(splits)):
            assert not splits[i] & splits[j]
    # the manifest stores audio relative to itself, so the workdir can move
    line = json.loads((workdir / "corpus" / "test.jsonl").read_text().splitlines()[0])
    assert not line["audio"].startswith("/")


def test_corpus_summary_counts(tiny_run):
    workdir, config = tiny_run
    summary = corpus.summarise(workdir / "corpus")
    total_hours = sum(v["hours"] for v in summary.values())
    assert 0.5 * config.corpus.hours < total_hours < 1.5 * config.corpus.hours
    assert sum(v["speakers"] for v in summary.values()) <= config.corpus.num_speakers
