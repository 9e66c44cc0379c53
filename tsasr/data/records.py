"""A corpus split as sharded ArrayRecord files: per utterance its int16 PCM audio and its
frame-level targets, so training streams them instead of holding features in memory.

Layout of a records directory:

    index.json                       written last: its presence means the split is complete
    shard-00000-of-00008.array_record
    shard-00000-of-00008.frames.npy  int32 feature frames of each record, in record order
    ...

A record is one utterance, `flax.serialization.msgpack_serialize` of a flat dict: `id` (str),
`audio` (int16 [samples]) and the frame-level targets ([frames, ...] at the 10 ms feature rate:
`senones` int32, `soft_ids` int32 / `soft_logits` float16 top-k, ...; for a student's noisy
copy, its clean twin's targets). msgpack because it is typed (dtype and shape travel with the
bytes, no pickle), already a dependency (flax), one buffer per record, and restored in ~20 us
per 3 s utterance as views of that buffer. Audio as int16 PCM: half the bytes of float32 and
exact for the 16-bit wav files tsasr writes (read_audio gives int / 32768).

Shards: an utterance goes to shard sha1(id) mod num_shards, a stable hash, so the assignment
depends on its id only (not on the corpus order, the Python hash seed or the host). Within a
shard, records keep the order they were given in. Frames per record are kept beside each
shard so a loader can plan bucketed batches without reading any audio.

Every file is written under a temporary name and renamed into place (tsasr.workdir.atomic_path);
index.json goes last, so a killed writer leaves no index and a reader refuses the directory.
This module reads and writes records; it must not batch or shuffle (tsasr.data.loader does).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
from array_record.python import array_record_module
from flax import serialization

from tsasr import workdir as wd
from tsasr.audio import io as audio_io
from tsasr.audio import lfbe as lfbe_lib

INDEX = "index.json"
log = logging.getLogger(__name__)
FORMAT = "tsasr-records-1"
AUDIO = "audio"
# group_size:1 makes every record randomly accessible on its own (what Grain needs); PCM hardly
# compresses, and decompressing it would cost the loader's CPU.
_WRITER_OPTIONS = "group_size:1,uncompressed"


def shard_of(utterance_id: str, num_shards: int) -> int:
    """The shard of an utterance: sha1 of its id modulo num_shards (stable across runs and hosts)."""
    digest = hashlib.sha1(utterance_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") % num_shards


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}.array_record"


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> int16 PCM (round(x * 32768), clipped); int16 passes unchanged.

    Exact for audio read from a 16-bit wav (read_audio gives int / 32768)."""
    audio = np.asarray(audio)
    if audio.dtype == np.int16:
        return audio
    return np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def fit_frames(utterance_id: str, key: str, target: np.ndarray, frames: int, max_length_mismatch: int) -> np.ndarray:
    """A frame-level target cut or edge-padded to `frames` (as tsasr.data.batching fits targets to
    features); ValueError naming the utterance when it differs by more than max_length_mismatch."""
    target = np.asarray(target)
    if abs(target.shape[0] - frames) > max_length_mismatch:
        raise ValueError(
            f"utterance {utterance_id!r}: `{key}` has {target.shape[0]} frames but the audio makes {frames} "
            f"(allowed mismatch {max_length_mismatch})."
        )
    if target.shape[0] > frames:
        return target[:frames]
    if target.shape[0] < frames:
        return np.concatenate([target, np.repeat(target[-1:], frames - target.shape[0], axis=0)], axis=0)
    return target


def encode(example: Mapping[str, object]) -> bytes:
    return serialization.msgpack_serialize(dict(example))


def decode(record: bytes) -> dict:
    """A record's dict: `id`, `audio` int16 [samples], its targets (read-only views of `record`)."""
    return serialization.msgpack_restore(record)


def write_split(
    directory: str | os.PathLike,
    examples: Iterable[Mapping[str, object]],
    num_shards: int,
    *,
    max_length_mismatch: int = 0,
    lfbe_config: lfbe_lib.LfbeConfig = lfbe_lib.LfbeConfig(),
    source: Mapping[str, object] | None = None,
) -> dict:
    """Writes `examples` ({"id", "audio", target: [frames, ...]}) as `num_shards` ArrayRecord shards.

    Consumed one example at a time (host memory O(one utterance)); audio is stored as int16
    (`to_pcm16`), every other key is a frame-level target fitted to the audio's LFBE frame count
    (`fit_frames`). Every example must carry the same keys with the same dtypes. Returns the index
    (also written to DIRECTORY/index.json, last), holding `source` when given (see write_split_once).
    """
    if num_shards < 1:
        raise ValueError(f"write_split: num_shards must be >= 1, got {num_shards}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = [shard_name(s, num_shards) for s in range(num_shards)]
    frames: list[list[int]] = [[] for _ in range(num_shards)]
    samples = [0] * num_shards
    schema: dict[str, tuple[str, tuple[int, ...]]] | None = None
    seen: set[str] = set()
    with contextlib.ExitStack() as stack:
        writers = []
        for name in names:
            tmp = stack.enter_context(wd.atomic_path(directory / name))
            writer = array_record_module.ArrayRecordWriter(str(tmp), _WRITER_OPTIONS)
            # Closed before atomic_path renames (exit order is the reverse of entry).
            stack.callback(writer.close)
            writers.append(writer)
        for example in examples:
            utt = example.get("id")
            if not isinstance(utt, str) or not utt:
                raise ValueError(f"write_split: example without a string `id`: keys {sorted(example)}")
            if utt in seen:
                raise ValueError(f"write_split: utterance id {utt!r} appears more than once")
            seen.add(utt)
            if AUDIO not in example:
                raise ValueError(f"utterance {utt!r}: no `{AUDIO}`")
            audio = to_pcm16(example[AUDIO])
            if audio.ndim != 1:
                raise ValueError(f"utterance {utt!r}: audio must be mono [samples], got shape {audio.shape}")
            count = lfbe_lib.num_frames(int(audio.shape[0]), lfbe_config)
            if count < 1:
                raise ValueError(f"utterance {utt!r}: {audio.shape[0]} samples is shorter than one frame")
            record = {"id": utt, AUDIO: audio}
            for key in sorted(set(example) - {"id", AUDIO}):
                record[key] = np.ascontiguousarray(fit_frames(utt, key, example[key], count, max_length_mismatch))
            layout = {k: (str(v.dtype), v.shape[1:]) for k, v in record.items() if k != "id"}
            if schema is None:
                schema = layout
            elif layout != schema:
                raise ValueError(f"utterance {utt!r}: keys/dtypes {layout} differ from the first record's {schema}")
            shard = shard_of(utt, num_shards)
            writers[shard].write(encode(record))
            frames[shard].append(count)
            samples[shard] += int(audio.shape[0])
        if schema is None:
            raise ValueError("write_split: no examples")
        for writer in writers:
            writer.close()
        for name, shard_frames in zip(names, frames):
            wd.write_npy(directory / _frames_name(name), np.asarray(shard_frames, np.int32))
    index = {
        "format": FORMAT,
        "num_shards": num_shards,
        "shards": [
            {"file": name, "records": len(f), "frames": int(sum(f)), "samples": n}
            for name, f, n in zip(names, frames, samples)
        ],
        "records": sum(len(f) for f in frames),
        "frames": int(sum(sum(f) for f in frames)),
        "hours": sum(samples) / lfbe_config.sample_rate / 3600,
        "keys": {k: {"dtype": dtype, "shape": list(shape)} for k, (dtype, shape) in sorted(schema.items())},
        "lfbe": {
            "sample_rate": lfbe_config.sample_rate,
            "window": lfbe_config.window_size,
            "shift": lfbe_config.window_shift,
        },
    }
    if source is not None:
        index["source"] = json.loads(json.dumps(source))
    wd.write_json(directory / INDEX, index)
    return index


def write_split_once(
    directory: pathlib.Path,
    examples: Callable[[], Iterable[Mapping[str, object]]],
    count: int,
    num_shards: int,
    *,
    stale: tuple[str, ...] = (),
    source: Mapping[str, object] | None = None,
) -> dict:
    """The index of the split in `directory`: `write_split(directory, examples(), num_shards)`
    unless a complete split of `count` records in as many shards is there (a resumed run).
    `source` (JSON values: fingerprints of the inputs, options) says what the records are made
    from; it is kept in the index, and a split of another source is written again, never reused.
    Before writing, the index and the files named in `stale` (derived from the old shards)
    are removed: with no index over shards being rewritten, a writer killed now leaves no split."""
    index = read_index(directory) if wd.exists(directory / INDEX) else None
    source = None if source is None else json.loads(json.dumps(source))  # as the index holds it
    if index and (index["records"], index["num_shards"], index.get("source")) == (count, num_shards, source):
        log.info("%s: %d utterances already written (resumed)", directory, index["records"])
        return index
    if index:
        log.info("%s: records of another source or size, written again", directory)
    for name in (INDEX, *stale):
        (directory / name).unlink(missing_ok=True)
    index = write_split(directory, examples(), num_shards, source=source)
    log.info(
        "%s: %d utterances, %.2f h in %d shards", directory, index["records"], index["hours"], len(index["shards"])
    )
    return index


def _frames_name(shard_file: str) -> str:
    return shard_file.removesuffix(".array_record") + ".frames.npy"


def read_index(directory: str | os.PathLike) -> dict:
    """DIRECTORY/index.json; FileNotFoundError (naming the directory) when the split is not complete."""
    path = pathlib.Path(directory) / INDEX
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no {INDEX} (records not written, or their writer was killed)")
    index = wd.read_json(path)
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    return index


def shard_paths(directory: str | os.PathLike, index: dict) -> list[str]:
    return [str(pathlib.Path(directory) / s["file"]) for s in index["shards"]]


def shard_frames(directory: str | os.PathLike, index: dict) -> list[np.ndarray]:
    """Feature frames of every record, one int32 array per shard in record order (no audio read)."""
    return [np.load(pathlib.Path(directory) / _frames_name(s["file"])) for s in index["shards"]]


def read_shard(path: str | os.PathLike) -> Iterator[dict]:
    """Every record of one shard, in order (for tests and inspection; training reads through Grain)."""
    reader = array_record_module.ArrayRecordReader(str(path))
    try:
        for start in range(0, reader.num_records(), 256):
            for record in reader.read(list(range(start, min(start + 256, reader.num_records())))):
                yield decode(record)
    finally:
        reader.close()


def manifest_examples(
    records: Iterable[dict], targets: Callable[[str], Mapping[str, np.ndarray]], *, by: str = "id"
) -> Iterator[dict]:
    """Examples for `write_split` from manifest records, read one at a time: each record's audio
    and `targets(record[by])`, e.g. by="clean_id" for a student's noisy copy, whose targets are
    its clean twin's alignment or soft labels."""
    for record in records:
        yield {"id": record["id"], AUDIO: audio_io.read_audio(record["audio"]), **targets(record[by])}
