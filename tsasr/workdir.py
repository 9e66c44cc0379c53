"""The workdir's path layer: atomic writes and stage markers, on a local path or a URI.

Every file a stage produces is written to a temporary name in the same directory and renamed
into place, so a killed run never leaves a half-written file under a final name. A stage is
done when its marker exists and holds the hash of the config and inputs that made it.

Paths: `as_path` gives a local workdir as a pathlib.Path (what stages, Kaldi's C++ tools,
soundfile and numpy read) and a URI (`gs://bucket/run`) as an etils.epath.Path, the path type
orbax uses, which reaches the bucket through fsspec (gcsfs) or TensorFlow's gfile. A URI never
goes through pathlib, which would make `gs://b/r` the local relative path `gs:/b/r`.

What reaches a URI workdir today: every writer here (text, JSON, audio, npz, `atomic_path`,
staged through a local scratch file), stage markers and the runner's bookkeeping (tsasr.pipeline:
skips, cleaning, moving a superseded model aside, which on a bucket copies every object), and
orbax, which tsasr.train.checkpoint hands the URI unchanged (untested offline: orbax writes gs://
arrays with tensorstore's GCS driver and asks google-cloud-storage about the bucket). What does
not, and so makes `python
-m tsasr.run` refuse one (`LOCAL_ONLY`): stages read their inputs through local paths (np.load,
soundfile, the Kaldi and OpenFst readers, `Path.glob`) and make `pathlib.Path(workdir)`, as
tsasr/recipe.py and tsasr/evaluate/results.py (results.json) do; metrics.jsonl is appended to
(an object store cannot append: tsasr/train/metrics.py); TensorBoard and run.log are local files.
A collapsed `gs:/...` path that reaches a writer here is refused, never written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import re
import shutil
import struct
import tempfile
from typing import Any, Iterator

import numpy as np
from etils import epath

# One line, for `python -m tsasr.run` and `tsasr.launch` to refuse a URI workdir with.
LOCAL_ONLY = (
    "stages read the workdir through local paths (Kaldi tools, soundfile, numpy) and append to "
    "metrics.jsonl, so it must be a filesystem path; mount the bucket on every host "
    "(gcsfuse --implicit-dirs BUCKET /mnt/gcs/BUCKET) or use an NFS / Filestore share and pass "
    "--workdir /mnt/gcs/BUCKET/RUN"
)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_COLLAPSED = re.compile(r"^(gs|gcs|s3|az|hf):/(?!/)")  # what pathlib.Path("gs://b/r") makes of a URI


def is_uri(path: str | os.PathLike) -> bool:
    """Whether `path` names storage by URI (gs://, s3://, ...), not a local filesystem path."""
    return bool(_URI.match(os.fspath(path)))


def as_path(path: str | os.PathLike) -> pathlib.Path | epath.Path:
    """A local path as pathlib.Path, a URI as epath.Path (never a local `gs:/...` directory).

    Raises ValueError on a URI scheme epath cannot open (it knows gs, s3, az, hf) and on a
    local path that is a URI pathlib has already collapsed (`gs:/bucket/run`).
    """
    text = os.fspath(path)
    if not is_uri(text):
        if _COLLAPSED.match(text):
            raise ValueError(f"{text}: a storage URI with a slash lost (pathlib does that), not made a local directory")
        return pathlib.Path(text)
    try:
        return epath.Path(text)
    except KeyError:  # a scheme epath has no path class for
        raise ValueError(f"{text}: not a storage URI that etils.epath opens (gs://, s3://, az://, hf://)") from None


def local_workdir(path: str | os.PathLike) -> pathlib.Path:
    """`path` as a workdir `python -m tsasr.run` can use; ValueError (one line, naming what
    works) for a URI, which only parts of a run can write today (see the module docstring)."""
    if is_uri(path):
        raise ValueError(f"{os.fspath(path)}: {LOCAL_ONLY}")
    return as_path(path)


def absolute(path: str | os.PathLike) -> str:
    """An absolute local path (orbax needs one), or the URI unchanged."""
    return os.fspath(path) if is_uri(path) else os.path.abspath(path)


def rmtree(path: str | os.PathLike) -> None:
    path = as_path(path)
    if isinstance(path, pathlib.Path):
        shutil.rmtree(path)
    else:
        path.rmtree()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a local temporary path; moves what was written there onto `path` if the block succeeds.

    The temporary name carries a random token (no two writers, on any host, share one) and
    keeps the suffix, so writers that infer the format from it still work. For a local `path`
    it lies beside `path` and is renamed onto it (atomic: os.replace within one directory).
    For a URI the block writes a local scratch file (so C++ writers and libraries that need a
    file name work unchanged), which is then copied to a temporary object beside `path` and
    renamed onto it. On gcsfs that rename is a server-side copy then a delete, not one atomic
    step: the final name still only ever holds a whole object (a GCS object becomes visible
    when its upload or copy completes), but a crash between the two leaves the temporary
    object behind.
    """
    path = as_path(path)
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = f".{path.name}.{os.urandom(6).hex()}.tmp{path.suffix}"
    if isinstance(path, pathlib.Path):
        tmp = path.with_name(tmp_name)
        try:
            yield tmp
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return
    with tempfile.TemporaryDirectory(prefix="tsasr-stage-") as scratch:
        local = pathlib.Path(scratch) / tmp_name
        yield local
        remote = path.with_name(tmp_name)
        try:
            with open(local, "rb") as source, remote.open("wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
            remote.replace(path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                remote.unlink()
            raise


def read_text(path: str | os.PathLike) -> str:
    return as_path(path).read_text(encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(read_text(path))


def exists(path: str | os.PathLike) -> bool:
    return as_path(path).exists()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in records))


def write_audio(path: str | os.PathLike, audio: np.ndarray, rate: int = 16000) -> None:
    """Writes mono float audio in [-1, 1] as 16-bit PCM wav, atomically.

    The 44-byte RIFF header and the samples go out in one write (the same bytes as the
    standard library's `wave` writer, 4x faster than it for short files). Samples are
    scaled by 32768 (soundfile reads PCM back as int / 32768), rounded, clipped, in the
    input's own precision when it is float32 (scaling by a power of two is exact, so nothing
    is lost) and in float64 otherwise.
    """
    audio = np.asarray(audio)
    pcm = np.multiply(audio.reshape(-1), 32768.0, dtype=np.float32 if audio.dtype == np.float32 else np.float64)
    np.rint(pcm, out=pcm)
    np.clip(pcm, -32768, 32767, out=pcm)
    size = 2 * pcm.size
    blob = bytearray(44 + size)  # header and samples in one buffer, the samples cast straight into it
    struct.pack_into(
        "<4sI4s4sIHHIIHH4sI",
        blob,
        0,
        b"RIFF",
        36 + size,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        2 * rate,
        2,
        16,
        b"data",
        size,
    )
    np.copyto(np.frombuffer(blob, "<i2", offset=44), pcm, casting="unsafe")
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, pathlib.PurePath):  # epath.Path too
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fingerprint(obj: Any) -> str:
    """A stable hash of a JSON-serialisable object (a config section, upstream hashes)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def marker_path(workdir: str | os.PathLike, stage: str) -> pathlib.Path | epath.Path:
    return as_path(workdir) / ".stages" / f"{stage}.json"


def read_marker(workdir: str | os.PathLike, stage: str) -> dict | None:
    path = marker_path(workdir, stage)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a marker is written atomically; an unreadable one means "redo"


def write_marker(workdir: str | os.PathLike, stage: str, key: str, summary: dict) -> None:
    write_json(marker_path(workdir, stage), {"stage": stage, "key": key, "summary": summary})


def clear_marker(workdir: str | os.PathLike, stage: str) -> None:
    path = marker_path(workdir, stage)
    if path.exists():
        path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Arrays as an uncompressed .npz (np.savez), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
