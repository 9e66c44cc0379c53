"""Length-bucketed batching of padded utterances, with host sharding and prefetch.

Works on an in-memory list of examples: dicts of numpy arrays with an `id` (str) and
`features` [frames, dim], plus the keys the recipe declares in `BatchingConfig.keys`, each
either frame-level (`FRAME`: [frames, ...] at the feature frame rate, e.g. senone
alignments, soft labels; padded to the bucket length) or clip-level (`CLIP`: one array per
example, e.g. a tag vector; stacked). A key that is not declared is an error, never dropped.
It must not know how examples were read: corpus readers build the list, this module only
plans and pads.

Determinism: the plan of epoch e (which utterances go together, in which order) is a
function of (seed, epoch) and the utterance lengths only, so every host computes the
same global plan without talking to the others and takes its own rows of each global
batch; and a run resumed at step s gets exactly the batches s, s+1, ... of an
uninterrupted run.
"""

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

FRAME = "frame"  # [frames, ...]: padded (with 0) to the bucket length; `feature_paddings` marks the pad
CLIP = "clip"  # one array per example: stacked (filler rows are 0)
INPUT = "features"  # the frame-level key whose length buckets, pads and paddings follow


def _only_features():
    return {INPUT: FRAME}


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    batch_size: int  # Utterances per global batch (all hosts together).
    # Padded lengths in frames. An utterance goes to the smallest boundary >= its length;
    # longer ones are padded to a multiple of the last boundary.
    bucket_boundaries: tuple[int, ...] = (200, 400, 800, 1600)
    seed: int = 0
    # Training drops each bucket's incomplete last batch (so every epoch has the same
    # number of batches); evaluation keeps it and fills it with all-padding rows.
    drop_remainder: bool = True
    # Alignment vs feature frame counts may differ by this much (e.g. a different
    # snip_edges convention); targets are then cut or edge-padded to the features.
    max_length_mismatch: int = 0
    # Every key an example may carry besides `id`: FRAME or CLIP (`features` is always FRAME).
    keys: Mapping[str, str] = dataclasses.field(default_factory=_only_features)


def validate_keys(keys: Mapping[str, str]) -> None:
    if keys.get(INPUT) != FRAME:
        raise ValueError(f"batching keys must declare {INPUT!r} as {FRAME!r}; got {dict(keys)}")
    bad = {k: v for k, v in keys.items() if v not in (FRAME, CLIP)}
    if bad:
        raise ValueError(f"batching keys must be {FRAME!r} or {CLIP!r}; got {bad}")


def validate_example(example: dict, keys: Mapping[str, str] | None = None, max_length_mismatch: int = 0) -> dict:
    """Checks one example against the declared `keys` and returns it with frame-level keys
    fitted to the feature frames.

    Raises ValueError naming the utterance on a missing id, a key not declared, missing or
    non-finite features, or a frame-level key whose frame count differs from the features by
    more than max_length_mismatch.
    """
    keys = _only_features() if keys is None else keys
    utt = example.get("id")
    if not isinstance(utt, str) or not utt:
        raise ValueError(f"example without a string `id`: keys {sorted(example)}")
    undeclared = sorted(set(example) - set(keys) - {"id"})
    if undeclared:
        raise ValueError(
            f"utterance {utt!r}: keys {undeclared} are not declared for batching (declared: {sorted(keys)})"
        )
    if INPUT not in example:
        raise ValueError(f"utterance {utt!r}: no `{INPUT}`.")
    features = np.asarray(example[INPUT])
    if features.ndim != 2:
        raise ValueError(f"utterance {utt!r}: features must be [frames, dim], got shape {features.shape}.")
    if not np.all(np.isfinite(features)):
        bad = np.argwhere(~np.isfinite(features))[0]
        raise ValueError(f"utterance {utt!r}: features contain NaN or Inf (first at frame {bad[0]}, dim {bad[1]}).")
    frames = features.shape[0]
    fitted = dict(example)
    for key, kind in keys.items():
        if key == INPUT or kind != FRAME or key not in example:
            continue
        target = np.asarray(example[key])
        if abs(target.shape[0] - frames) > max_length_mismatch:
            raise ValueError(
                f"utterance {utt!r}: `{key}` has {target.shape[0]} frames but the features "
                f"have {frames} (allowed mismatch {max_length_mismatch})."
            )
        if target.shape[0] > frames:
            target = target[:frames]
        elif target.shape[0] < frames:
            edge = np.repeat(target[-1:], frames - target.shape[0], axis=0)
            target = np.concatenate([target, edge], axis=0)
        fitted[key] = target
    return fitted


def bucket_length(frames: int, boundaries: Sequence[int]) -> int:
    for boundary in boundaries:
        if frames <= boundary:
            return boundary
    last = boundaries[-1]
    return -(-frames // last) * last


def collate(
    examples: Sequence[dict], length: int, batch_size: int | None = None, keys: Mapping[str, str] | None = None
):
    """Pads frame-level keys to `length` frames, stacks clip-level ones, into a batch dict.

    Returns `feature_paddings` [batch, length] (1.0 = pad) beside the declared keys the
    examples carry, and `ids` (numpy str array, '' for filler rows added up to batch_size).
    """
    keys = _only_features() if keys is None else keys
    batch_size = batch_size or len(examples)
    first = examples[0]
    batch = {}
    for key, kind in keys.items():
        if key not in first:
            continue
        item = np.asarray(first[key])
        shape = (batch_size, length) + item.shape[1:] if kind == FRAME else (batch_size,) + item.shape
        out = np.zeros(shape, item.dtype)
        for row, example in enumerate(examples):
            value = np.asarray(example[key])
            if kind == FRAME:
                out[row, : value.shape[0]] = value
            else:
                out[row] = value
        batch[key] = out
    paddings = np.ones((batch_size, length), np.float32)
    for row, example in enumerate(examples):
        paddings[row, : np.asarray(example[INPUT]).shape[0]] = 0.0
    batch["feature_paddings"] = paddings
    ids = [example["id"] for example in examples] + [""] * (batch_size - len(examples))
    batch["ids"] = np.asarray(ids)
    return batch


class Batcher:
    """Deterministic, bucketed, host-sharded batches over an in-memory example list."""

    def __init__(
        self, examples: Sequence[dict], config: BatchingConfig, process_index: int = 0, process_count: int = 1
    ):
        if config.batch_size % process_count:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the {process_count} processes.")
        if not examples:
            raise ValueError("Batcher: no examples.")
        self.config = config
        self.process_index, self.process_count = process_index, process_count
        self.local_batch_size = config.batch_size // process_count
        validate_keys(config.keys)
        self.examples = [validate_example(e, config.keys, config.max_length_mismatch) for e in examples]
        # A batch needs every target kind for every row: an utterance without its
        # alignment (or soft labels) is an error, not a silently unsupervised row.
        targets = {key for e in self.examples for key in config.keys if key in e}
        for example in self.examples:
            missing = sorted(targets - set(example))
            if missing:
                raise ValueError(
                    f"utterance {example['id']!r} lacks {missing} that other "
                    "utterances have (a missing alignment or soft labels?)."
                )
        ids = [e["id"] for e in self.examples]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"utterance id {duplicate!r} appears more than once.")
        self.lengths = np.array([e["features"].shape[0] for e in self.examples])
        self.buckets = np.array([bucket_length(n, config.bucket_boundaries) for n in self.lengths])
        self.batches_per_epoch = len(self.plan(0))
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{len(examples)} examples make no full batch of "
                f"{config.batch_size} in any bucket; lower batch_size or "
                "set drop_remainder=False."
            )

    def plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """Global batches of an epoch: (bucket length, example indices) in order."""
        rng = np.random.default_rng([self.config.seed, epoch])
        order = rng.permutation(len(self.examples))
        batches = []
        for length in np.unique(self.buckets):
            members = order[self.buckets[order] == length]
            size = self.config.batch_size
            stop = len(members) - len(members) % size if self.config.drop_remainder else len(members)
            batches += [(int(length), members[i : i + size]) for i in range(0, stop, size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def rows_of_steps(self, num_steps: int) -> tuple[set[str], set[str]]:
        """(ids in this process's rows, ids in any process's rows) of global steps 0 ..
        num_steps - 1: the plan of every epoch they reach, a function of the frame counts only,
        so a process may compute just its rows' inputs before batching (each epoch deals the
        examples out anew: a process's share grows with the epochs)."""
        start, size = self.process_index * self.local_batch_size, self.local_batch_size
        mine, anyone = set(), set()
        for epoch in range(-(-num_steps // self.batches_per_epoch)):
            for _, indices in self.plan(epoch)[: num_steps - epoch * self.batches_per_epoch]:
                mine.update(self.examples[i]["id"] for i in indices[start : start + size])
                anyone.update(self.examples[i]["id"] for i in indices)
        return mine, anyone

    def local_batch(self, length: int, indices: np.ndarray) -> dict:
        """This host's rows of a global batch; `ids` names the whole global batch."""
        size = self.config.batch_size
        ids = [self.examples[i]["id"] for i in indices] + [""] * (size - len(indices))
        start = self.process_index * self.local_batch_size
        rows = [self.examples[i] for i in indices[start : start + self.local_batch_size]]
        if not rows:  # This host's rows are all filler: stack a padded copy of one example.
            filler = dict(self.examples[indices[0]])
            filler[INPUT] = filler[INPUT][:0]
            rows = [filler]
            batch = collate(rows, length, self.local_batch_size, self.config.keys)
            batch["feature_paddings"][:] = 1.0
        else:
            batch = collate(rows, length, self.local_batch_size, self.config.keys)
        batch["ids"] = np.asarray(ids)
        return batch

    def __call__(self, start_step: int = 0) -> Iterator[dict]:
        """Endless host-local batches for global steps start_step, start_step + 1, ..."""
        step = start_step
        while True:
            epoch, position = divmod(step, self.batches_per_epoch)
            plan = self.plan(epoch)
            for length, indices in plan[position:]:
                yield self.local_batch(length, indices)
            step = (epoch + 1) * self.batches_per_epoch

    def epoch(self, epoch: int = 0) -> Iterator[dict]:
        """One pass (for evaluation: use drop_remainder=False to see every utterance)."""
        for length, indices in self.plan(epoch):
            yield self.local_batch(length, indices)


def prefetch(
    iterator: Iterator[dict], to_device: Callable[[dict], dict], size: int = 2
) -> Iterator[tuple[dict, np.ndarray]]:
    """Runs `iterator` and `to_device` in a background thread, `size` batches ahead.

    Yields (device_batch, ids): `ids` stays on the host (strings cannot go to devices)
    for error messages. Exceptions in the producer are re-raised in the consumer. Close
    the generator (or exhaust it) to stop the thread.
    """
    items: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for batch in iterator:
                batch = dict(batch)
                ids = batch.pop("ids", np.asarray([]))
                item = (to_device(batch), ids)
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as error:  # Handed to the consumer, which raises it.
            items.put(error)

    thread = threading.Thread(target=produce, daemon=True, name="prefetch")
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # Stop and join the producer: a thread still inside JAX when the interpreter exits
        # aborts the process.
        stop.set()
        while thread.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
