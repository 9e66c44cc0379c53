"""The wake-word corpus: built-in (espeak-ng speakers, media noise), or a user's recordings.

Built-in, per speaker-disjoint split (train / dev / test):
- positives: the wake word alone, or followed by a voice-assistant request ("computer set a
  timer for ten minutes"), with 0.2-0.6 s of silence before and 0.4 s after;
- train background: requests without the wake word, a share of them holding a confusable word
  ("commuter", "compute", "computing", "competitor", "pewter", ...);
- dev / test negative streams: `stream_sentences` such sentences by one speaker joined by
  0.3-1.5 s pauses (minutes of speech without the wake word, for false alarms per hour);
- noise clips (train / test, disjoint draws): synthesised music, stationary noise and TV talk
  (data_prep.noise), mixed in by data_prep.noisify with rooms in the features stage.

Time stamps: espeak reports every phoneme's start; the wake word's 8 phonemes map one to one
onto its cmudict pronunciation (K AH0 M P Y UW1 T ER0; checked for every espeak accent), so the
manifest keeps each wake-word phone's [start, end] and every other phoneme as a background
monophone. These synthesiser timings are the frame targets (no GMM-HMM alignment: exact for
synthetic speech and seconds instead of minutes).

User recordings (`import_recordings`): a JSONL manifest, one line per recording:
{"id", "audio" (path, relative to the manifest), "wake_start", "wake_end" (seconds; both absent
or null for audio without the wake word)}. Validated line by line; a bad line stops the run
with one message naming the manifest, the line and the problem.

Output: WORKDIR/corpus/{train,dev,test}.jsonl, noise_{train,test}.jsonl, wav/, noise/,
speakers.json, and user.jsonl when corpus.user_manifest is set.
"""

from __future__ import annotations

import collections
import functools
import json
import pathlib

import numpy as np

from data_prep import corpus as speech_corpus
from data_prep import noise as noise_lib
from data_prep import sentences
from tsasr import parallel
from tsasr import workdir as wd
from tsasr.audio import io as audio_io
from tsasr.audio import tts

RATE = 16000
SPLITS = ("train", "dev", "test")
WAKE_WORD = "computer"
# espeak's phonemes of the wake word, by position (accents differ in the vowels: ER0 is '3' or 'a#').
WAKE_ESPEAK = ("k", "@", "m", "p", "j", "u:")
CONFUSABLE_SENTENCES = (
    "the commuter train is late again",
    "how long is my commute today",
    "compute the total for me",
    "cloud computing is expensive",
    "our competitor launched a new phone",
    "she kept her composure",
    "that puppy is cuter than mine",
    "there is a pewter mug on the shelf",
    "my scooter needs new tyres",
    "they compete in the final",
    "do not confuse the two",
    "the computation took an hour",
    "the commuters are waiting outside",
    "can you compute my mortgage",
    "we listened to a composer",
    "come put her coat on the chair",
)


class BadInputError(ValueError):
    """A user's manifest or recording is unusable: the message names the file and the problem."""


def unit_name(espeak_phoneme: str) -> str:
    """espeak's mnemonic as a background monophone: stress marks dropped, pauses -> 'sil'."""
    name = espeak_phoneme.replace("'", "").replace(",", "").strip()
    return "sil" if not name or name.startswith("_") else name


def wake_phones(phonemes: list[tuple[float, str]], audio_seconds: float) -> list[list[float]] | None:
    """[[start, end]] of the wake word's 8 phones in espeak's events, or None if it is absent."""
    names = [unit_name(p) for _, p in phonemes]
    for i in range(len(names) - 7):
        if tuple(names[i : i + 6]) == WAKE_ESPEAK:
            starts = [phonemes[i + k][0] for k in range(8)]
            end = phonemes[i + 8][0] if i + 8 < len(phonemes) else audio_seconds
            return [[round(s, 4), round(e, 4)] for s, e in zip(starts, starts[1:] + [end])]
    return None


def _speak(text: str, voice: tts.Voice):
    result = tts.synthesizer().synthesize(text, voice)
    return result.audio, result.phonemes


def _synthesize_item(item: dict, wav_dir: str) -> dict:
    """One corpus item: texts joined by silences; phone segments and the wake word's times."""
    if item["kind"] == "noise":
        return _noise_clip(item, wav_dir)
    voice = tts.Voice(item["accent"], item["variant"], item["pitch"], item["rate"])
    pieces, phones, wake, position = [], [], None, 0
    for text, pause in zip(item["texts"], item["pauses"]):
        gap = np.zeros(int(pause * RATE), np.float32)
        pieces.append(gap)
        position += gap.size
        audio, phonemes = _speak(text, voice)
        offset = position / RATE
        seconds = audio.size / RATE
        found = wake_phones(phonemes, seconds) if item["kind"] == "positive" and wake is None else None
        if found:
            wake = [[s + offset, e + offset] for s, e in found]
        ends = [t for t, _ in phonemes[1:]] + [seconds]
        for (start, name), end in zip(phonemes, ends):
            if end > start:
                phones.append([round(start + offset, 4), round(end + offset, 4), unit_name(name)])
        pieces.append(audio)
        position += audio.size
    pieces.append(np.zeros(int(item["tail"] * RATE), np.float32))
    audio = np.concatenate(pieces)
    path = pathlib.Path(wav_dir) / item["split"] / f"{item['id']}.wav"
    wd.write_audio(path, audio)
    if item["kind"] == "positive" and wake is None:
        raise RuntimeError(f"{item['id']}: espeak did not speak the wake word as expected in {item['texts'][0]!r}")
    record = {
        "id": item["id"],
        "audio": str(path),
        "duration": round(audio.size / RATE, 4),
        "speaker": item["speaker"],
        "split": item["split"],
        "kind": item["kind"],
        "text": " | ".join(item["texts"]),
        "phones": phones,
    }
    if wake:
        record.update({"wake_start": wake[0][0], "wake_end": wake[-1][1], "wake_phones": wake})
    return record


def _noise_clip(item: dict, wav_dir: str) -> dict:
    rng = np.random.default_rng(item["seed"])
    if item["noise_kind"] == "music":
        audio, subtype = noise_lib.synth_music(item["seconds"], rng)
    elif item["noise_kind"] == "stationary":
        audio, subtype = noise_lib.synth_stationary(item["seconds"], rng)
    else:
        variants = noise_lib.TV_VARIANTS[item["split"]]
        audio, subtype = noise_lib.synth_tv(item["seconds"], rng, variants, item["seed"])
    audio = (0.3 * audio / (np.max(np.abs(audio)) + 1e-9)).astype(np.float32)
    path = pathlib.Path(wav_dir) / f"noise_{item['split']}" / f"{item['id']}.wav"
    wd.write_audio(path, audio)
    return {
        "id": item["id"],
        "audio": str(path),
        "duration": round(audio.size / RATE, 4),
        "kind": item["noise_kind"],
        "subtype": subtype,
        "split": "noise_" + item["split"],
    }


def plan(cfg, seed: int) -> list[dict]:
    """Every item of the built-in corpus (texts, speaker, pauses), a function of (cfg, seed)."""
    speakers = speech_corpus.make_speakers(cfg.num_speakers, seed, cfg.pitch_range, cfg.rate_range)
    order = np.random.default_rng([seed, 0x3A4E]).permutation(len(speakers))
    fractions = np.asarray([cfg.split_fractions[s] for s in SPLITS], float)
    counts = np.maximum(1, np.round(fractions / fractions.sum() * len(speakers)).astype(int))
    counts[0] = len(speakers) - counts[1:].sum()
    bounds = np.concatenate([[0], np.cumsum(counts)])
    by_split = {s: [speakers[i] for i in order[bounds[k] : bounds[k + 1]]] for k, s in enumerate(SPLITS)}
    need = sum(cfg.positives[s] + cfg.background.get(s, 0) + cfg.streams[s] * cfg.stream_sentences for s in SPLITS)
    pool = [t for t in sentences.assistant_sentences(2 * need + 16, seed) if WAKE_WORD not in t.split()]
    rng = np.random.default_rng([seed, 0x7A4E])
    texts = iter(pool)
    voice_fields = ("speaker", "accent", "variant", "pitch", "rate")

    def sentence():
        if rng.random() < cfg.confusable_fraction:
            return CONFUSABLE_SENTENCES[int(rng.integers(len(CONFUSABLE_SENTENCES)))]
        return next(texts)

    items = []
    for split in SPLITS:
        voices = by_split[split]
        for j in range(cfg.positives[split]):
            spk = voices[j % len(voices)]
            alone = rng.random() < cfg.alone_fraction
            text = WAKE_WORD if alone else f"{WAKE_WORD} {next(texts)}"
            items.append(
                {
                    **{k: spk[k] for k in voice_fields},
                    "id": f"{split}-pos-{j:05d}",
                    "split": split,
                    "kind": "positive",
                    "texts": [text],
                    "pauses": [round(float(rng.uniform(0.2, 0.6)), 3)],
                    "tail": 0.4,
                }
            )
        for j in range(cfg.background.get(split, 0)):
            spk = voices[(j * 7 + 3) % len(voices)]
            items.append(
                {
                    **{k: spk[k] for k in voice_fields},
                    "id": f"{split}-bg-{j:05d}",
                    "split": split,
                    "kind": "background",
                    "texts": [sentence()],
                    "pauses": [round(float(rng.uniform(0.1, 0.4)), 3)],
                    "tail": 0.3,
                }
            )
        for j in range(cfg.streams[split]):
            spk = voices[(j * 5 + 1) % len(voices)]
            items.append(
                {
                    **{k: spk[k] for k in voice_fields},
                    "id": f"{split}-neg-{j:05d}",
                    "split": split,
                    "kind": "stream",
                    "texts": [sentence() for _ in range(cfg.stream_sentences)],
                    "pauses": [round(float(rng.uniform(0.3, 1.5)), 3) for _ in range(cfg.stream_sentences)],
                    "tail": 0.5,
                }
            )
    for split in ("train", "test"):
        for kind, count in cfg.noise_clips.items():
            for j in range(count):
                items.append(
                    {
                        "id": f"noise-{split}-{kind}-{j:03d}",
                        "split": split,
                        "kind": "noise",
                        "noise_kind": kind,
                        "seconds": float(cfg.noise_seconds),
                        "seed": int(np.random.default_rng([seed, 0x401E, j, SPLITS.index(split)]).integers(2**31))
                        + 7919 * list(cfg.noise_clips).index(kind),
                    }
                )
    return items, by_split


def build(config, workdir: pathlib.Path) -> dict:
    """Stage `corpus`: synthesises the built-in corpus; imports corpus.user_manifest if set."""
    cfg = config.corpus
    out = workdir / "corpus"
    items, by_split = plan(cfg, config.seed)
    wd.write_json(out / "speakers.json", by_split)
    records = parallel.map_resumable(
        functools.partial(_synthesize_item, wav_dir=str(out / "wav")),
        items,
        out / ".parts",
        workers=config.workers,
        chunk_size=8,
        desc="wakeword corpus: synthesising",
        fresh_process_per_chunk=True,
    )
    grouped = collections.defaultdict(list)
    for r in records:
        grouped[r.pop("split")].append(r)
    summary = {}
    for split, rows in sorted(grouped.items()):
        wd.write_jsonl(out / f"{split}.jsonl", rows)
        summary[split] = {
            "items": len(rows),
            "minutes": round(sum(r["duration"] for r in rows) / 60, 2),
            **{k: v for k, v in collections.Counter(r["kind"] for r in rows).items()},
        }
    parallel.reset(out / ".parts")
    if cfg.user_manifest:
        user = import_recordings(pathlib.Path(cfg.user_manifest).expanduser())
        wd.write_jsonl(out / "user.jsonl", user)
        summary["user"] = {"items": len(user), "positives": sum(1 for r in user if "wake_start" in r)}
    return summary


def import_recordings(manifest: pathlib.Path) -> list[dict]:
    """Validated records of a user's manifest (see the module docstring); BadInputError names the
    manifest's line and the problem."""
    if not manifest.is_file():
        raise BadInputError(f"{manifest}: manifest not found")
    records, seen = [], set()
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise BadInputError(f"{where}: not a JSON object ({err.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry.get("id"):
            raise BadInputError(f"{where}: needs a string 'id'")
        if entry["id"] in seen:
            raise BadInputError(f"{where}: id {entry['id']!r} appears twice")
        seen.add(entry["id"])
        if not isinstance(entry.get("audio"), str):
            raise BadInputError(f"{where}: needs an 'audio' path")
        path = pathlib.Path(entry["audio"]).expanduser()
        path = path if path.is_absolute() else manifest.parent / path
        try:
            audio = audio_io.read_audio(path)
        except Exception as err:  # noqa: BLE001 (any unreadable file is the user's problem to fix)
            raise BadInputError(f"{where}: cannot read {path}: {str(err).splitlines()[0]}") from None
        duration = audio.size / RATE
        start, end = entry.get("wake_start"), entry.get("wake_end")
        record = {
            "id": entry["id"],
            "audio": str(path),
            "duration": round(duration, 4),
            "speaker": str(entry.get("speaker", "user")),
        }
        if (start is None) != (end is None):
            raise BadInputError(f"{where}: give both wake_start and wake_end, or neither (audio without the wake word)")
        if start is not None:
            if not all(isinstance(v, (int, float)) for v in (start, end)) or not 0 <= start < end:
                raise BadInputError(
                    f"{where}: wake_start {start!r} and wake_end {end!r} must be seconds with 0 <= start < end"
                )
            if end > duration + 0.01:
                raise BadInputError(f"{where}: wake_end {end} s is beyond the end of {path} ({duration:.2f} s)")
            record.update({"kind": "positive", "wake_start": float(start), "wake_end": float(end)})
        else:
            record["kind"] = "stream"
        records.append(record)
    if not records:
        raise BadInputError(f"{manifest}: no recordings listed")
    return records


def read(workdir: pathlib.Path, name: str) -> list[dict]:
    path = workdir / "corpus" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
