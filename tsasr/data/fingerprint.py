"""Fingerprints of a user's data, so that a stage's key changes when the data does.

A stage keyed by its config alone would keep the old outputs after a manifest was edited
in place, or an audio file or a noise directory changed. These fingerprints hash a
manifest's bytes and, for every audio file it names, the file's path, size and
modification time (stat only: a corpus of a million files is fingerprinted in seconds,
never read); a directory's fingerprint does the same for every file below it. A single file
(a lexicon, a language model, its training text) enters by its bytes. A file that is
missing or unreadable enters as such, so the stage runs again and reports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib


def _stat(path: str) -> list:
    try:
        stat = os.stat(path)
    except OSError as err:
        return [path, type(err).__name__]
    return [path, stat.st_size, stat.st_mtime_ns]


def manifest(path: str | os.PathLike) -> str:
    """sha256 over the manifest's bytes and the stat of every `audio` it names (relative paths
    are resolved against the manifest's directory, as tsasr.data.manifest reads them)."""
    path = pathlib.Path(path).expanduser()
    digest = hashlib.sha256()
    try:
        blob = path.read_bytes()
    except OSError as err:
        return f"unreadable:{path}:{type(err).__name__}"
    digest.update(blob)
    base = path.parent.resolve()
    for line in blob.decode("utf-8", errors="replace").splitlines():
        try:
            audio = json.loads(line).get("audio")
        except (json.JSONDecodeError, AttributeError):
            continue  # the manifest's bytes are hashed; its reader names the bad line
        if isinstance(audio, str):
            digest.update(json.dumps(_stat(audio if os.path.isabs(audio) else str(base / audio))).encode())
    return digest.hexdigest()[:16]


def directory(path: str | os.PathLike) -> str:
    """sha256 over the relative path and stat of every file below `path`, in sorted order."""
    root = pathlib.Path(path).expanduser()
    if not root.is_dir():
        return f"missing:{root}"
    digest = hashlib.sha256()
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            digest.update(json.dumps([os.path.relpath(full, root), *_stat(full)[1:]]).encode())
    return digest.hexdigest()[:16]


def file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (read in 1 MB blocks: a gigabyte ARPA LM takes a few seconds)."""
    path = pathlib.Path(path).expanduser()
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        return f"unreadable:{path}:{type(err).__name__}"
    return digest.hexdigest()[:16]
