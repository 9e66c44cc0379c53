"""Teacher soft labels on disk: top-k senone ids and logits per frame, sharded, with checksums.

Contract (DESIGN.md, "Soft labels"): per utterance, the teacher's top-k senone `ids`
(int16 when there are at most 32,767 senones, else int32) and their `logits` (float16),
shape [frames, k], sorted by logit, highest first. Targets for any k' <= k and temperature
T are derived when read:

    p(s | t) = exp(l_s / T) / sum_{j in top-k'(t)} exp(l_j / T)   for s in top-k'(t),

the teacher's top-k' at temperature T renormalised over the kept ids, so one labelling pass at
the largest k serves a whole k x T sweep.

Layout of a labels directory:
    shard-00003.bin   ids block [frames_total, k] then logits block [frames_total, k], raw
    shard-00003.json  {utterance id: [first frame, frames, crc32]}, sha256 and size of the .bin
    index.json        k, num_senones, id dtype, the shards, written last
Utterances go to shard `shard_of(id, num_shards)`, so N hosts can each label the shards
i with i % N == host. A shard's files are written atomically once it is complete, so a killed
labelling run redoes only unfinished shards. Readers verify sizes and sha256 per shard and a
crc32 per utterance, and name the shard or utterance that fails.

This module stores and derives; it does not run the teacher.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import zlib

import numpy as np

from tsasr import workdir as wd

FORMAT_VERSION = 1


class SoftLabelError(ValueError):
    """Corrupt, missing or mismatched soft labels, with the shard or utterance named."""


def id_dtype(num_senones: int) -> np.dtype:
    return np.dtype(np.int16) if num_senones <= 32767 else np.dtype(np.int32)


def shard_of(utt_id: str, num_shards: int) -> int:
    return int(hashlib.sha1(utt_id.encode()).hexdigest()[:8], 16) % num_shards


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def validate_k_temperature(k: int, temperature: float, stored_k: int) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= stored_k:
        raise SoftLabelError(f"top_k={k!r} must be an integer in [1, {stored_k}] (labels were stored at k={stored_k})")
    if not temperature > 0:
        raise SoftLabelError(f"temperature={temperature!r} must be > 0")


def targets_from_logits(logits: np.ndarray, k: int, temperature: float) -> np.ndarray:
    """softmax(logits[..., :k] / T) in float32; logits sorted highest first. [..., k]."""
    scaled = np.asarray(logits[..., :k], np.float32) / np.float32(temperature)
    scaled -= scaled.max(axis=-1, keepdims=True)
    e = np.exp(scaled)
    return e / e.sum(axis=-1, keepdims=True)


class ShardWriter:
    """Collects utterances for one shard; `close()` writes its two files atomically."""

    def __init__(self, directory: pathlib.Path, index: int, k: int, num_senones: int):
        self.directory = pathlib.Path(directory)
        self.index, self.k, self.num_senones = index, k, num_senones
        self._ids: list[np.ndarray] = []
        self._logits: list[np.ndarray] = []
        self._utterances: dict[str, list[int]] = {}
        self._frames = 0

    def add(self, utt_id: str, ids: np.ndarray, logits: np.ndarray) -> None:
        """ids [frames, k] senone ids, logits [frames, k] sorted highest first."""
        if utt_id in self._utterances:
            raise SoftLabelError(f"utterance {utt_id!r} labelled twice in {shard_name(self.index)}")
        ids, logits = np.asarray(ids), np.asarray(logits)
        if ids.shape != logits.shape or ids.ndim != 2 or ids.shape[1] != self.k:
            raise SoftLabelError(
                f"utterance {utt_id!r}: ids {ids.shape} and logits {logits.shape} must both be [frames, {self.k}]"
            )
        if not np.all(np.isfinite(logits)):
            raise SoftLabelError(f"utterance {utt_id!r}: teacher logits contain NaN or Inf")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_senones):
            raise SoftLabelError(f"utterance {utt_id!r}: senone ids outside [0, {self.num_senones})")
        ids = ids.astype(id_dtype(self.num_senones), order="C")
        logits = logits.astype(np.float16, order="C")
        crc = zlib.crc32(logits, zlib.crc32(ids))  # fresh C-contiguous arrays: hashed in place
        self._utterances[utt_id] = [self._frames, int(ids.shape[0]), crc]
        self._frames += ids.shape[0]
        self._ids.append(ids)
        self._logits.append(logits)

    def close(self) -> dict:
        """Writes the ids blocks, then the logits blocks, hashing them as they go out (no blob copy)."""
        name = shard_name(self.index)
        blocks = self._ids + self._logits
        digest = hashlib.sha256()
        with wd.atomic_path(self.directory / f"{name}.bin") as tmp, open(tmp, "wb") as f:
            for block in blocks:
                digest.update(block)
                f.write(block)
        meta = {
            "frames": self._frames,
            "bytes": sum(block.nbytes for block in blocks),
            "sha256": digest.hexdigest(),
            "utterances": self._utterances,
        }
        wd.write_json(self.directory / f"{name}.json", meta)  # written last: the shard is complete
        return meta


def shard_done(directory: pathlib.Path, index: int) -> bool:
    name = shard_name(index)
    return (directory / f"{name}.json").exists() and (directory / f"{name}.bin").exists()


def write_index(directory: pathlib.Path, k: int, num_senones: int, num_shards: int, extra: dict | None = None) -> dict:
    """Writes index.json over all complete shards; every shard must be done."""
    directory = pathlib.Path(directory)
    missing = [shard_name(i) for i in range(num_shards) if not shard_done(directory, i)]
    if missing:
        raise SoftLabelError(f"{directory}: shards not written yet: {', '.join(missing[:5])}")
    utterances, shards = {}, {}
    for i in range(num_shards):
        meta = json.loads((directory / f"{shard_name(i)}.json").read_text())
        shards[shard_name(i)] = {k2: meta[k2] for k2 in ("frames", "bytes", "sha256")}
        for utt_id, (start, frames, crc) in meta["utterances"].items():
            utterances[utt_id] = [i, start, frames, crc]
    index = {
        "format": FORMAT_VERSION,
        "k": k,
        "num_senones": num_senones,
        "id_dtype": id_dtype(num_senones).name,
        "logit_dtype": "float16",
        "num_shards": num_shards,
        "shards": shards,
        "utterances": utterances,
        **(extra or {}),
    }
    wd.write_json(directory / "index.json", index)
    return index


@dataclasses.dataclass
class _Shard:
    ids: np.ndarray
    logits: np.ndarray


class SoftLabelReader:
    """Reads stored soft labels and derives targets at any k' <= k and temperature."""

    def __init__(self, directory: str | pathlib.Path, verify: bool = True):
        self.directory = pathlib.Path(directory)
        path = self.directory / "index.json"
        if not path.exists():
            raise SoftLabelError(f"{self.directory}: no index.json (labelling did not finish)")
        self.index = json.loads(path.read_text())
        if self.index.get("format") != FORMAT_VERSION:
            raise SoftLabelError(f"{path}: format {self.index.get('format')} is not {FORMAT_VERSION}")
        self.k = int(self.index["k"])
        self.num_senones = int(self.index["num_senones"])
        self._id_dtype = np.dtype(self.index["id_dtype"])
        self._verify = verify
        self._shards: dict[int, _Shard] = {}

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self.index["utterances"]

    def __len__(self) -> int:
        return len(self.index["utterances"])

    def frames(self, utt_id: str) -> int:
        return self._entry(utt_id)[2]

    def _entry(self, utt_id: str):
        try:
            return self.index["utterances"][utt_id]
        except KeyError:
            raise SoftLabelError(f"utterance {utt_id!r} has no soft labels in {self.directory}") from None

    def _shard(self, i: int) -> _Shard:
        if i not in self._shards:
            name = shard_name(i)
            path = self.directory / f"{name}.bin"
            meta = self.index["shards"][name]
            if not path.exists():
                raise SoftLabelError(f"{path}: shard file missing")
            size = path.stat().st_size
            if size != meta["bytes"]:
                raise SoftLabelError(
                    f"{path}: shard is {size} bytes, index says {meta['bytes']} (truncated or replaced)"
                )
            if self._verify:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != meta["sha256"]:
                    raise SoftLabelError(f"{path}: sha256 mismatch, the shard is corrupt")
            frames = meta["frames"]
            ids_bytes = frames * self.k * self._id_dtype.itemsize
            raw = np.memmap(path, dtype=np.uint8, mode="r")
            ids = np.frombuffer(raw[:ids_bytes], dtype=self._id_dtype).reshape(frames, self.k)
            logits = np.frombuffer(raw[ids_bytes:], dtype=np.float16).reshape(frames, self.k)
            self._shards[i] = _Shard(ids, logits)
        return self._shards[i]

    def raw(self, utt_id: str, expected_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids [frames, k] int32, logits [frames, k] float32) as stored, highest logit first."""
        shard_index, start, frames, crc = self._entry(utt_id)
        if expected_frames is not None and expected_frames != frames:
            raise SoftLabelError(
                f"utterance {utt_id!r}: soft labels have {frames} frames but its features have "
                f"{expected_frames}; the noisy copy must match its clean utterance frame for frame"
            )
        shard = self._shard(shard_index)
        ids, logits = shard.ids[start : start + frames], shard.logits[start : start + frames]
        if zlib.crc32(logits.tobytes(), zlib.crc32(ids.tobytes())) != crc:
            raise SoftLabelError(f"utterance {utt_id!r} in {shard_name(shard_index)}: crc32 mismatch, corrupt labels")
        return ids.astype(np.int32), logits.astype(np.float32)

    def targets(
        self, utt_id: str, k: int | None = None, temperature: float = 1.0, expected_frames: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids [frames, k'], probs [frames, k']): the teacher's top-k' at temperature T."""
        k = self.k if k is None else k
        validate_k_temperature(k, temperature, self.k)
        ids, logits = self.raw(utt_id, expected_frames)
        return ids[:, :k], targets_from_logits(logits, k, temperature)
