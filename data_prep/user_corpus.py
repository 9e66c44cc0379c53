"""Bring your own corpus: validate a user's JSONL manifests of wav/flac files.

Each line needs `id` and `audio` (absolute, or relative to the manifest), and `text` for
labelled splits; `speaker` defaults to the id's prefix before the first '-' or '_'. Every
item is checked: the file exists and is readable, is mono, is not empty nor shorter than
`min_duration`, has only finite samples, its text uses only the expected alphabet, its id is
unique. Other sample rates are fine: they are resampled on read (logged once). A bad item
is named in the log and, with `on_bad_input='skip'`, skipped and counted; with 'stop', the
stage stops with the same message. Checks run in resumable chunks, so a kill loses nothing.
"""

from __future__ import annotations

import collections
import functools
import logging
import pathlib
import re

import numpy as np

from tsasr import parallel
from tsasr import pipeline
from tsasr.audio import io as audio_io
from tsasr.data import manifest

log = logging.getLogger(__name__)


class BadInputError(ValueError):
    """Raised with on_bad_input='stop': names the item and what is wrong with it."""


FRAME = 400  # samples: 25 ms at 16 kHz, the analysis frame the features use


def loudest_frame_db(audio: np.ndarray) -> float:
    """The RMS level (dB re full scale) of the loudest 25 ms frame of `audio` (float in [-1, 1])."""
    frames = audio[: len(audio) // FRAME * FRAME].reshape(-1, FRAME) if len(audio) >= FRAME else audio[None, :]
    power = np.max(np.mean(np.square(frames.astype(np.float64)), axis=1))
    return float(10.0 * np.log10(max(power, 1e-20)))


def check_item(
    record: dict, *, labelled: bool, min_duration: float, alphabet: str, min_level_db: float = -60.0
) -> dict:
    """Returns {'record': cleaned record} or {'error': reason} for one manifest line."""
    name = f"utterance {record['id']!r} ({record['_where']})"
    try:
        info = audio_io.audio_info(record["audio"])
        if info.channels != 1:
            return {
                "error": f"{name}: {record['audio']} has {info.channels} channels; tsasr needs mono",
                "reason": "multichannel",
            }
        audio = audio_io.read_audio(record["audio"])
    except audio_io.AudioError as err:
        reason = (
            "missing"
            if "not found" in str(err)
            else "empty"
            if "empty" in str(err)
            else ("non_finite" if "NaN" in str(err) else "unreadable")
        )
        return {"error": f"{name}: {err}", "reason": reason}
    duration = len(audio) / audio_io.SAMPLE_RATE
    if duration < min_duration:
        return {
            "error": f"{name}: {duration:.3f} s is shorter than corpus.min_duration={min_duration} s",
            "reason": "too_short",
        }
    if np.max(np.abs(audio)) == 0.0:
        return {"error": f"{name}: audio is all zeros", "reason": "empty"}
    level = loudest_frame_db(audio)
    if level < min_level_db:  # dither or hum around digital silence is not speech
        return {
            "error": f"{name}: near-silent, its loudest 25 ms is at {level:.1f} dBFS "
            f"(below corpus.min_level_db={min_level_db:g})",
            "reason": "near_silent",
        }
    text = record.get("text")
    if labelled:
        if not isinstance(text, str) or not text.strip():
            return {"error": f"{name}: labelled split needs a non-empty 'text'", "reason": "no_text"}
    if isinstance(text, str):
        text = " ".join(text.lower().split())
        bad = sorted(set(re.sub(alphabet, "", text)))
        if bad:
            return {
                "error": f"{name}: text has characters outside the alphabet: {''.join(bad)!r}",
                "reason": "bad_characters",
            }
    speaker = record.get("speaker") or re.split(r"[-_]", record["id"], maxsplit=1)[0]
    out = {k: v for k, v in record.items() if not k.startswith("_")}
    out.update(duration=round(duration, 4), speaker=speaker, sample_rate=info.samplerate)
    if text is not None:
        out["text"] = text
    return {"record": out}


def validate(
    path: pathlib.Path,
    *,
    labelled: bool,
    min_duration: float,
    alphabet: str,
    on_bad_input: str,
    parts_dir: pathlib.Path,
    workers: int,
    split: str,
    min_level_db: float = -60.0,
) -> tuple[list[dict], collections.Counter]:
    """Checks every line of a user manifest; returns the good records and counts of skips by reason.

    In a multi-host run every process checks its share and gets every result; process 0 alone
    logs the skips."""
    if on_bad_input not in ("skip", "stop"):
        raise ValueError(f"on_bad_input must be 'skip' or 'stop', not {on_bad_input!r}")
    try:
        raw = manifest.read_manifest(path, required=("id", "audio"), where=True)
    except manifest.ManifestError as err:
        raise BadInputError(str(err)) from err
    says = pipeline.process_index() == 0
    seen, unique = set(), []
    skipped = collections.Counter()
    for record in raw:
        if record["id"] in seen:
            message = f"{path}: duplicate utterance id {record['id']!r} ({record['_where']})"
            if on_bad_input == "stop":
                raise BadInputError(message)
            if says:
                log.warning("skipping: %s", message)
            skipped["duplicate_id"] += 1
            continue
        seen.add(record["id"])
        unique.append(record)
    fn = functools.partial(
        check_item, labelled=labelled, min_duration=min_duration, alphabet=alphabet, min_level_db=min_level_db
    )
    results = parallel.map_resumable(fn, unique, parts_dir, workers=workers, chunk_size=64, desc=f"checking {split}")
    good = []
    for result in results:
        if "error" in result:
            if on_bad_input == "stop":
                raise BadInputError(result["error"] + " (set corpus.on_bad_input='skip' to skip such items)")
            if says:
                log.warning("skipping: %s", result["error"])
            skipped[result["reason"]] += 1
        else:
            good.append(result["record"])
    rates = collections.Counter(r["sample_rate"] for r in good)
    for rate, n in rates.items():
        if rate != audio_io.SAMPLE_RATE and says:
            log.info("%s: %d files at %d Hz will be resampled to 16 kHz on read", split, n, rate)
    return good, skipped
