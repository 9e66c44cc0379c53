"""The speech corpus stage: the built-in espeak-ng corpus, or a user's manifests.

Built-in: voice-assistant sentences read by synthetic speakers (accent x voice variant x
pitch x rate), split by speaker into `train_labelled`, `train_unlabelled`, `dev` and `test`.
Every utterance records espeak's phoneme events (`tts_phonemes`: [[start_s, phoneme], ...])
as reference timings, used only to measure aligner quality. `train_unlabelled` keeps its
transcript for diagnostics; training code must never read it.

Output: WORKDIR/corpus/{split}.jsonl (+ wav/ for the built-in corpus) and speakers.json.
"""

from __future__ import annotations

import collections
import functools
import logging
import pathlib

import numpy as np

from data_prep import librispeech, recording, sentences, user_corpus
from tsasr import parallel, pipeline
from tsasr import workdir as wd
from tsasr.audio import tts
from tsasr.data import layout, manifest

SPLITS = layout.SPLITS
MEAN_SECONDS_PER_UTTERANCE = 1.76  # measured on the built-in generator at default pitch and rate ranges
log = logging.getLogger(__name__)


def make_speakers(num_speakers: int, seed: int, pitch_range, rate_range) -> list[dict]:
    """Distinct (accent, variant) pairs, each with its own pitch and rate."""
    pairs = [(a, v) for a in tts.ACCENTS for v in tts.VARIANTS]
    if num_speakers > len(pairs):
        raise ValueError(f"corpus.num_speakers={num_speakers} exceeds the {len(pairs)} accent x variant voices")
    rng = np.random.default_rng([seed, 0x5BEA])
    chosen = rng.permutation(len(pairs))[:num_speakers]
    speakers = []
    for i, index in enumerate(chosen):
        accent, variant = pairs[index]
        speakers.append(
            {
                "speaker": f"spk{i:03d}",
                "accent": accent,
                "variant": variant,
                "pitch": int(rng.integers(pitch_range[0], pitch_range[1] + 1)),
                "rate": int(rng.integers(rate_range[0], rate_range[1] + 1)),
            }
        )
    return speakers


def assign_splits(speakers: list[dict], fractions: dict, seed: int) -> dict[str, list[dict]]:
    """Speaker-disjoint splits with at least one speaker each, sizes by `fractions`."""
    total = sum(fractions.values())
    order = np.random.default_rng([seed, 0x5B17]).permutation(len(speakers))
    counts = {s: max(1, int(round(fractions[s] / total * len(speakers)))) for s in SPLITS}
    counts["train_unlabelled"] = len(speakers) - sum(counts[s] for s in SPLITS if s != "train_unlabelled")
    if counts["train_unlabelled"] < 1:
        raise ValueError(f"{len(speakers)} speakers are too few for four speaker-disjoint splits")
    out, start = {}, 0
    for split in SPLITS:
        out[split] = [speakers[i] for i in order[start : start + counts[split]]]
        start += counts[split]
    return out


def _synthesize(item: dict, wav_dir: str, seed: int, recording_cfg: dict | None) -> dict:
    voice = tts.Voice(item["accent"], item["variant"], item["pitch"], item["rate"])
    result = tts.synthesizer().synthesize(item["text"], voice)
    path = pathlib.Path(wav_dir) / item["speaker"] / f"{item['id']}.wav"
    audio, extra = result.audio, {}
    if recording_cfg:  # the voice recorded in a room (data_prep.recording), as real corpora are
        extra["recording"] = recording.draw(recording.utterance_rng(seed, item["id"]), recording_cfg)
        audio = recording.render(extra["recording"], audio)
    wd.write_audio(path, audio)
    return {
        "id": item["id"],
        "audio": str(path),
        "duration": round(len(result.audio) / 16000, 4),
        "text": item["text"],
        "speaker": item["speaker"],
        "sample_rate": tts.TARGET_RATE_HZ,  # espeak-ng speaks at 22.05 kHz: the copy at 16 kHz is full-band
        "split": item["split"],
        "tts_phonemes": [[round(t, 3), p] for t, p in result.phonemes],
        "tts_words": [round(t, 3) for t in result.words],
        **extra,
    }


def build_builtin(cfg, seed: int, out: pathlib.Path, workers: int) -> dict:
    speakers = make_speakers(cfg.num_speakers, seed, cfg.pitch_range, cfg.rate_range)
    splits = assign_splits(speakers, dict(cfg.split_fractions), seed)
    total = int(round(cfg.hours * 3600 / MEAN_SECONDS_PER_UTTERANCE))
    texts = sentences.assistant_sentences(total, seed)
    items, start = [], 0
    for split in SPLITS:
        n = max(len(splits[split]), int(round(total * cfg.split_fractions[split] / sum(cfg.split_fractions.values()))))
        for j in range(n):
            spk = splits[split][j % len(splits[split])]
            items.append(
                {**spk, "split": split, "text": texts[(start + j) % total], "id": f"{spk['speaker']}-{split}-{j:06d}"}
            )
        start += n
    writes = pipeline.processes()[0] == 0  # multi-host: every process synthesises its share; 0 writes the rest
    if writes:
        wd.write_json(out / "speakers.json", {s: v for s, v in splits.items()})
    tally = {}
    records = parallel.map_resumable(
        functools.partial(
            _synthesize,
            wav_dir=str(out / "wav"),
            seed=seed,
            recording_cfg=cfg.recording.to_dict() if cfg.recording.enabled else None,
        ),
        items,
        out / ".parts",
        workers=workers,
        chunk_size=64,
        desc="corpus: synthesising",
        fresh_process_per_chunk=True,
        tally=tally,
    )
    parallel.log_share("corpus", "synthesised", tally)
    if not writes:
        return {"process": pipeline.processes()[0], "chunks": tally}
    by_split = collections.defaultdict(list)
    for r in records:
        by_split[r.pop("split")].append(r)
    for split in SPLITS:
        manifest.write_manifest(out / f"{split}.jsonl", by_split[split])
    parallel.reset(out / ".parts")
    return summarise(out)


def summarise(out: pathlib.Path, splits: tuple[str, ...] = SPLITS) -> dict:
    """Hours, utterances, speakers, words (tokens), vocabulary (distinct words) and the source
    sample rates (utterances per rate) per split, from the written manifests; one warning when
    the splits' rates differ."""
    summary = {}
    for split in splits:
        records = manifest.read_manifest(out / f"{split}.jsonl")
        # Manifests written before the rate was recorded hold the built-in corpus: 16 kHz.
        rates = collections.Counter(int(r.get("sample_rate", tts.TARGET_RATE_HZ)) for r in records)
        summary[split] = {
            "hours": round(sum(r["duration"] for r in records) / 3600, 3),
            "utterances": len(records),
            "speakers": len({r["speaker"] for r in records}),
            "words": sum(len(r.get("text", "").split()) for r in records),
            "vocabulary": len({w for r in records for w in r.get("text", "").split()}),
            "sample_rates": {str(rate): n for rate, n in sorted(rates.items())},
        }
    if len({tuple(s["sample_rates"]) for s in summary.values()}) > 1:
        log.warning(
            "the splits differ in sample rate (%s): the band a model is trained on is not the band it is "
            "tested on (noisify keeps each copy to its own source's band)",
            "; ".join(
                f"{split} " + ", ".join(f"{n} at {rate} Hz" for rate, n in s["sample_rates"].items())
                for split, s in summary.items()
            ),
        )
    return summary


def import_manifests(
    cfg, out: pathlib.Path, workers: int, manifests: dict | None = None, extra: dict | None = None
) -> dict:
    """Runner stage `corpus` with corpus.source='manifest': every split's manifest (cfg.manifests,
    or `manifests` when given) and every extra clean test set (`extra`: {name: manifest}, written
    as test_<name>) validated (data_prep.user_corpus) and written to OUT."""
    manifests = dict(cfg.manifests) if manifests is None else manifests
    for split in SPLITS:
        if not manifests.get(split):
            raise user_corpus.BadInputError(
                f"corpus.manifests.{split} is not set (corpus.source='manifest' needs all of {', '.join(SPLITS)})"
            )
    sources = {split: manifests[split] for split in SPLITS}
    sources.update({f"{layout.TEST}_{name}": path for name, path in (extra or {}).items()})
    writes = pipeline.processes()[0] == 0  # multi-host: every process checks its share; 0 writes
    summary_skips = {}
    for split, path in sources.items():
        good, skipped = user_corpus.validate(
            pathlib.Path(path).expanduser(),
            labelled=split != "train_unlabelled",
            min_duration=cfg.min_duration,
            alphabet=cfg.alphabet,
            on_bad_input=cfg.on_bad_input,
            min_level_db=cfg.min_level_db,
            parts_dir=out / ".parts" / split,
            workers=workers,
            split=split,
        )
        if not good:
            raise user_corpus.BadInputError(f"{path}: no usable utterances in split {split}")
        if not writes:
            continue
        manifest.write_manifest(out / f"{split}.jsonl", good)
        summary_skips[split] = dict(skipped)
        if skipped:
            log.warning("%s: skipped %d items: %s", split, sum(skipped.values()), dict(skipped))
    if not writes:
        return {"process": pipeline.processes()[0]}
    parallel.reset(out / ".parts")
    summary = summarise(out, tuple(sources))
    for split, skips in summary_skips.items():
        summary[split]["skipped"] = skips
    return summary


def run(config, workdir: pathlib.Path) -> dict:
    """Runner stage `corpus`."""
    out = workdir / layout.CORPUS
    cfg = config.corpus
    if cfg.source == "builtin":
        return build_builtin(cfg, config.seed, out, config.workers)
    extra = layout.extra_tests(cfg.extra_tests)
    if cfg.source == "manifest":
        return import_manifests(cfg, out, config.workers, extra=extra)
    if cfg.source == "librispeech":
        subsets = {**librispeech_subsets(cfg), **{f"{layout.TEST}_{n}": s.replace("+", ",") for n, s in extra.items()}}
        if pipeline.processes()[0] == 0:  # the others read what process 0 wrote
            librispeech.write_manifests(cfg.librispeech.dir, subsets, out / "librispeech")
        pipeline.barrier("corpus: librispeech manifests")
        paths = {split: str(out / "librispeech" / f"{split}.jsonl") for split in subsets}
        extra = {name: paths[f"{layout.TEST}_{name}"] for name in extra}
        return import_manifests(cfg, out, config.workers, paths, extra)
    raise ValueError(f"corpus.source must be 'builtin', 'manifest' or 'librispeech', not {cfg.source!r}")


def librispeech_subsets(cfg) -> dict[str, str]:
    """{split: comma-separated LibriSpeech subsets} from corpus.librispeech."""
    return {split: cfg.librispeech[split] for split in SPLITS}
