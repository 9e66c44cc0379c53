"""Manifests: one JSON object per line describing an utterance (DESIGN.md, "Manifest").

Required keys: `id`, `audio`, `duration`, `speaker`; `text` for labelled data. A noisy entry
adds `clean_id` and the full provenance of its mix. Every `audio` path in a record (the
utterance's, and the noises' inside a mix) is stored relative to the manifest's directory
when it lies in the same workdir, so a workdir can be moved; readers get absolute paths.
"""

from __future__ import annotations

import json
import os
import pathlib

from tsasr import workdir as wd

REQUIRED = ("id", "audio", "duration", "speaker")


class ManifestError(ValueError):
    """A malformed manifest line, with the file and line number in the message."""


def read_manifest(path: str | os.PathLike, required: tuple[str, ...] = REQUIRED, *, where: bool = False) -> list[dict]:
    """Reads a JSONL manifest; `audio` paths come back absolute.

    where: also give each record `_where`, "<file name>:<line number>", for messages about it.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    base = path.parent.resolve()
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{path}:{number}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise ManifestError(f"{path}:{number}: expected a JSON object")
            missing = [k for k in required if k not in record]
            if missing:
                raise ManifestError(f"{path}:{number}: utterance {record.get('id')!r} lacks {', '.join(missing)}")
            if where:
                record["_where"] = f"{path.name}:{number}"
            records.append(_map_audio(record, lambda p: p if os.path.isabs(p) else str((base / p).resolve())))
    return records


def write_manifest(path: str | os.PathLike, records: list[dict]) -> None:
    """Writes records atomically, storing audio paths relative to the manifest when below it."""
    path = pathlib.Path(path)
    base = path.parent.resolve()

    root = base.parent  # the workdir, for manifests at WORKDIR/<stage>/<name>.jsonl

    def relative(p: str) -> str:
        audio = pathlib.Path(p).resolve()
        return os.path.relpath(audio, base) if audio.is_relative_to(root) else str(audio)

    wd.write_jsonl(path, [_map_audio(r, relative) for r in records])


def _map_audio(obj, fn):
    """A copy of `obj` with fn applied to every string under an `audio` key, at any depth."""
    if isinstance(obj, dict):
        return {k: fn(v) if k == "audio" and isinstance(v, str) else _map_audio(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map_audio(v, fn) for v in obj]
    return obj


def by_id(records: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in records}
