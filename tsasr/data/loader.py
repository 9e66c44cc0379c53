"""Streaming bucketed batches of int16 audio and frame-level targets from ArrayRecord shards
(tsasr.data.records), through a Grain pipeline: host memory O(batch x prefetch), whatever the
corpus size.

Rows. A global batch of `batch_size` utterances is made of `groups` row blocks of
batch_size / groups rows; block g is drawn from the records of shard group g (shards
[g S/G, (g+1) S/G) of the S shards). Process p of P reads only the shards of its groups
[p G/P, (p+1) G/P), which are exactly its rows of the global batch, so
`jax.make_array_from_process_local_data` puts them where one process would have put them. With
`groups` fixed, the global batches are the same for any process count dividing it (1 x 4
devices and 2 x 2 see the same data); the default, groups = process count, reads the least.

Plan. Utterances are bucketed by LFBE frames as tsasr.data.batching does (the smallest
boundary >= their length; longer ones to a multiple of the last), so every batch of a bucket
has the same padded shape and the step compiles once per bucket. Every group must fill every
global batch, so bucket b has n_b = min over groups of (its utterances in b) // rows batches per
epoch: a group's surplus in a bucket waits for a later epoch (the shuffle picks which), the
price of each process reading only its own shards (small when the shards are large; logged).
Epoch e shuffles each group's utterances with the seed [seed, e, g] and the order of the
epoch's batches with [seed, e], so step s's batch is a function of (seed, s), the frame counts
and the shard count only: a run resumed at step s gets exactly the batches s, s+1, ... of an
uninterrupted one, and so does an iterator restored from `get_state` (Grain's state of this
pipeline is the index of the next step).

Workers. Reading and padding run in Grain threads, or in `num_workers` processes
(`mp_prefetch`: worker i makes steps i, i + W, ..., interleaved back in order), which give the
same batches whatever their number. Only frame counts (4 bytes per utterance) are read up
front, never audio.

A batch: `audio` int16 [rows, window + L shift - 1] (L the bucket length in frames: the
longest audio of L frames, and LFBE of it has exactly L frames), `audio_lengths` int32 [rows] (samples),
`feature_paddings` float32 [rows, L] (1.0 = pad), every target padded with 0 to [rows, L, ...],
and `ids` (this host's utterance ids). Features are computed on the device, inside the step
(tsasr.audio.device_features). Training only: incomplete batches are never made.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Iterator

import grain
import numpy as np
from absl import flags

from tsasr.data import records as records_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    batch_size: int  # Utterances per global batch (all processes together).
    bucket_boundaries: tuple[int, ...] = (200, 400, 800, 1600)  # padded lengths in frames, as in batching
    seed: int = 0
    # Row groups of a global batch (0: the process count). Fix it to make the batches independent
    # of the process count; it must divide the shard count and batch_size, and be divisible by
    # the process count.
    groups: int = 0
    num_workers: int = 0  # Grain worker processes (0: threads in this process); batches are the same
    read_threads: int = 2  # threads per process (or per worker) reading and padding batches
    prefetch: int = 2  # batches buffered ahead, per worker


def bucket_lengths(frames: np.ndarray, boundaries: tuple[int, ...]) -> np.ndarray:
    """tsasr.data.batching.bucket_length of every element of `frames`, vectorised (a corpus has millions)."""
    frames, bounds = np.asarray(frames, np.int64), np.asarray(boundaries, np.int64)
    position = np.searchsorted(bounds, frames, side="left")
    beyond = -(-frames // bounds[-1]) * bounds[-1]
    return np.where(position < len(bounds), bounds[np.minimum(position, len(bounds) - 1)], beyond)


class Plan:
    """Which records make step s's rows on this process (see the module docstring)."""

    def __init__(
        self,
        shard_frames: list[np.ndarray],
        config: LoaderConfig,
        process_index: int = 0,
        process_count: int = 1,
    ):
        shards = len(shard_frames)
        groups = config.groups or process_count
        if shards % groups or groups % process_count or config.batch_size % groups:
            raise ValueError(
                f"{groups} row groups must divide the {shards} shards and batch_size {config.batch_size}, "
                f"and be a multiple of the {process_count} processes"
            )
        self.config = config
        self.rows = config.batch_size // groups
        per_group = shards // groups
        # Every group's bucket of each record, for the batch counts; only this process's groups
        # are kept for drawing rows.
        buckets = []
        for g in range(groups):
            frames = np.concatenate(shard_frames[g * per_group : (g + 1) * per_group])
            buckets.append(bucket_lengths(frames, config.bucket_boundaries))
        lengths = sorted(set(np.concatenate(buckets).tolist()))
        counts = np.array([[np.count_nonzero(b == length) for length in lengths] for b in buckets])
        per_bucket = counts.min(axis=0) // self.rows
        self.batches = [(length, j) for length, n in zip(lengths, per_bucket) for j in range(int(n))]
        self.batches_per_epoch = len(self.batches)
        if not self.batches_per_epoch:
            raise ValueError(
                f"no bucket has {self.rows} utterances in every one of the {groups} row groups "
                f"(records per bucket and group: {counts.tolist()}); lower batch_size or write fewer shards"
            )
        used = int(per_bucket.sum()) * self.rows * groups
        log.info(
            "%d batches per epoch over %d row groups: %d of %d utterances per epoch (%.1f %% wait for a later epoch)",
            self.batches_per_epoch,
            groups,
            used,
            counts.sum(),
            100 * (1 - used / counts.sum()),
        )
        self.per_bucket = dict(zip(lengths, per_bucket.tolist()))
        own = range(process_index * groups // process_count, (process_index + 1) * groups // process_count)
        sizes = [len(frames) for frames in shard_frames]
        self.groups = [(g, sum(sizes[: g * per_group]) - sum(sizes[: own[0] * per_group]), buckets[g]) for g in own]
        self._epoch_cache: tuple[int, list] | None = None

    def epoch(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """This process's batches of `epoch`: (bucket length, record indices into its shards) in step order."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        seed = self.config.seed
        blocks = {}  # (group, length) -> that group's rows of the bucket's batches, in order
        for g, offset, buckets in self.groups:
            order = np.random.default_rng([seed, epoch, g]).permutation(len(buckets))
            for length, n in self.per_bucket.items():
                blocks[g, length] = offset + order[buckets[order] == length][: n * self.rows]
        order = np.random.default_rng([seed, epoch]).permutation(self.batches_per_epoch)
        plan = []
        for i in order:
            length, j = self.batches[i]
            rows = [blocks[g, length][j * self.rows : (j + 1) * self.rows] for g, _, _ in self.groups]
            plan.append((length, np.concatenate(rows)))
        self._epoch_cache = (epoch, plan)
        return plan

    def step(self, step: int) -> tuple[int, np.ndarray]:
        epoch, position = divmod(step, self.batches_per_epoch)
        return self.epoch(epoch)[position]


class _Steps:
    """Grain's random-access source: element i is step first + i's (bucket length, record indices)."""

    def __init__(self, plan: Plan, first: int):
        self.plan, self.first = plan, first

    def __len__(self) -> int:
        return sys.maxsize - self.first  # endless: training runs for as many steps as it is configured to

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        return self.plan.step(self.first + int(index))


def audio_width(frames: int, window: int, shift: int) -> int:
    """Samples of a batch padded to `frames` LFBE frames: the most any utterance of that many frames
    has (its last frame's window plus up to shift - 1 samples no frame reaches), so LFBE of the
    padded audio has exactly `frames` frames."""
    return window + frames * shift - 1


class _ReadBatch:
    """Reads a step's records and pads them into a batch (runs in Grain threads or workers)."""

    def __init__(self, paths: list[str], index: dict):
        self.source = grain.sources.ArrayRecordDataSource(paths)
        self.window, self.shift = index["lfbe"]["window"], index["lfbe"]["shift"]
        self.keys = {k: v for k, v in index["keys"].items() if k != records_lib.AUDIO}

    def __call__(self, item: tuple[int, np.ndarray]) -> dict:
        length, indices = item
        examples = [records_lib.decode(r) for r in self.source.__getitems__([int(i) for i in indices])]
        rows = len(examples)
        audio = np.zeros((rows, audio_width(length, self.window, self.shift)), np.int16)
        audio_lengths = np.zeros(rows, np.int32)
        paddings = np.ones((rows, length), np.float32)
        targets = {
            k: np.zeros((rows, length, *spec["shape"]), np.dtype(spec["dtype"])) for k, spec in self.keys.items()
        }
        for row, example in enumerate(examples):
            samples = example[records_lib.AUDIO]
            audio[row, : samples.shape[0]] = samples
            audio_lengths[row] = samples.shape[0]
            frames = 1 + (samples.shape[0] - self.window) // self.shift
            paddings[row, :frames] = 0.0
            for key, target in targets.items():
                target[row, :frames] = example[key]
        batch = {"audio": audio, "audio_lengths": audio_lengths, "feature_paddings": paddings, **targets}
        batch["ids"] = np.asarray([example["id"] for example in examples])
        return batch


class Loader:
    """Endless training batches of one records directory for this process.

    `loader(start_step)` is a `batches_fn` for tsasr.train.loop.train (steps start_step, ...);
    `loader.iterator()` is the Grain iterator itself, whose get_state / set_state checkpoint
    and restore the position.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        config: LoaderConfig,
        process_index: int = 0,
        process_count: int = 1,
    ):
        self.config = config
        index = records_lib.read_index(directory)
        self.index = index
        self.plan = Plan(records_lib.shard_frames(directory, index), config, process_index, process_count)
        paths = records_lib.shard_paths(directory, index)
        per_process = len(paths) // process_count  # the plan checked that the process count divides it
        self.paths = paths[process_index * per_process : (process_index + 1) * per_process]
        self.batches_per_epoch = self.plan.batches_per_epoch

    def dataset(self, start_step: int = 0) -> grain.IterDataset:
        read = _ReadBatch(self.paths, self.index)
        dataset = grain.MapDataset.source(_Steps(self.plan, start_step)).map(read)
        options = grain.ReadOptions(num_threads=self.config.read_threads, prefetch_buffer_size=self.config.prefetch)
        dataset = dataset.to_iter_dataset(options)
        if self.config.num_workers:
            # Grain's worker processes read its absl flags, which a program that does not parse
            # absl flags (tsasr does not) must declare parsed: their defaults are used.
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=self.config.num_workers, per_worker_buffer_size=self.config.prefetch
                )
            )
        return dataset

    def iterator(self, start_step: int = 0):
        """The Grain iterator over steps start_step, ... (close it when done: workers are processes)."""
        return iter(self.dataset(start_step))

    def __call__(self, start_step: int = 0) -> Iterator[dict]:
        iterator = self.iterator(start_step)
        try:
            yield from iterator
        finally:
            iterator.close()
